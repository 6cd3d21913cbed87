# Sourced by the profile scripts (scripts/profile-webhook.sh, scripts/profile-ambassador.sh): what a callgrind run
# counted, and the count of one request from two runs that differ only in how many requests they answered.
# Bash and awk only.

# callgrind_totals FILE: every event's total of one run, named: "Ir=… I1mr=…".
callgrind_totals() {
  awk '/^events:/ {for (i = 2; i <= NF; i++) name[i] = $i} /^summary:/ {for (i = 2; i <= NF; i++) printf "%s=%s ", name[i], $i}' "$1"
}

# per_request EVENT SMALL BIG COUNT: one event's count per request, from two runs' totals COUNT requests apart.
per_request() {
  local event=$1 small=$2 big=$3 count=$4 a b
  a=$(tr ' ' '\n' <<<"$small" | awk -F= -v e="$event" '$1 == e {print $2}')
  b=$(tr ' ' '\n' <<<"$big" | awk -F= -v e="$event" '$1 == e {print $2}')
  echo $(((b - a) / count))
}

# cache_line SMALL BIG COUNT: the cache and branch simulation's misses per request, as one phrase.
cache_line() {
  printf ', L1 misses %d instruction / %d data read / %d data write, %d conditional + %d indirect branches mispredicted' \
    "$(per_request I1mr "$1" "$2" "$3")" "$(per_request D1mr "$1" "$2" "$3")" "$(per_request D1mw "$1" "$2" "$3")" \
    "$(per_request Bcm "$1" "$2" "$3")" "$(per_request Bim "$1" "$2" "$3")"
}
