# Sourced by the bench scripts. cpu_ns PID...: the CPU time the processes have used so far, in nanoseconds, summed
# over all their threads: the scheduler's exact runtime (/proc/PID/task/*/schedstat), where utime + stime in
# /proc/PID/stat move in 10 ms ticks. Bash builtins only, so nothing forks on the measured cores meanwhile.
cpu_ns() {
  local total=0 pid task ns _
  for pid in "$@"; do
    for task in /proc/"$pid"/task/*/schedstat; do
      read -r ns _ <"$task" && total=$((total + ns))
    done
  done
  echo "$total"
}
