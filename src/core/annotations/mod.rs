// Over 500 lines on purpose: every annotation key, its values, default and parser in one file is the public API in one place.
//! The public API: every `entourage.dev/` annotation, its values and its default, in one place.
//!
//! A Pod's annotations are parsed once into a typed [`PodRequest`]. Every bad value is reported (not only the
//! first), each naming the annotation, the value and the rule; the Pod is then denied, because a Pod that asked
//! for an entourage must not start without it. Unknown `entourage.dev/` keys only warn, naming the closest key.

use std::fmt;

use serde_json::{Map, Value};

use crate::core::config::Config;

mod ambassador;
mod resources;
pub use resources::{Override, ResourceOverrides};

/// The prefix of every entourage annotation.
pub const PREFIX: &str = "entourage.dev/";
/// `"false"` opts a Pod out of injection.
pub const INJECT: &str = "entourage.dev/inject";
/// Comma-separated absolute paths of log files, each streamed by its own sidecar.
pub const SIDECAR_LOGS: &str = "entourage.dev/sidecar-logs";
/// Comma-separated absolute paths of log files, each turned into JSON by its own adapter.
pub const ADAPTER_LOGS: &str = "entourage.dev/adapter-logs";
/// The line format the adapter parses.
pub const ADAPTER_FORMAT: &str = "entourage.dev/adapter-format";
/// Static `key=value` fields the adapter adds to every line.
pub const ADAPTER_FIELDS: &str = "entourage.dev/adapter-fields";
/// How the adapter groups the lines of one event (a stack trace) into one record.
pub const ADAPTER_MULTILINE: &str = "entourage.dev/adapter-multiline";
/// The key under which the adapter writes each record's time.
pub const ADAPTER_TIME_KEY: &str = "entourage.dev/adapter-time-key";
/// `from=to` renames of the keys the adapter writes.
pub const ADAPTER_RENAME: &str = "entourage.dev/adapter-rename";
/// `normalize` maps level spellings to `debug`, `info`, `warn`, `error`, `fatal`.
pub const ADAPTER_LEVEL: &str = "entourage.dev/adapter-level";
/// One upstream URL for the ambassador.
pub const AMBASSADOR_UPSTREAM: &str = "entourage.dev/ambassador-upstream";
/// Several `name=url` upstreams, one ambassador each.
pub const AMBASSADOR_UPSTREAMS: &str = "entourage.dev/ambassador-upstreams";
/// The annotations that ask for containers: a Pod with one of them and without `inject: "false"` is one entourage
/// injects, denies, or (admitted while it was down) missed.
pub const ASKING: [&str; 4] = [SIDECAR_LOGS, ADAPTER_LOGS, AMBASSADOR_UPSTREAM, AMBASSADOR_UPSTREAMS];
/// The first local port of the ambassadors.
pub const AMBASSADOR_PORT: &str = "entourage.dev/ambassador-port";
/// The Secret whose token the ambassador sends upstream.
pub const AMBASSADOR_AUTH_SECRET: &str = "entourage.dev/ambassador-auth-secret";
/// The `kubernetes.io/tls` Secret whose certificate the ambassador presents to an `https://` upstream (mTLS).
pub const AMBASSADOR_CLIENT_CERT_SECRET: &str = "entourage.dev/ambassador-client-cert-secret";
/// The ConfigMap (or `secret:NAME`) holding the CA that verifies an `https://` upstream.
pub const AMBASSADOR_CA: &str = "entourage.dev/ambassador-ca";
/// The audience of a projected ServiceAccount token the ambassador sends as its bearer token.
pub const AMBASSADOR_TOKEN_AUDIENCE: &str = "entourage.dev/ambassador-token-audience";
/// OAuth2 client credentials: `token-url=https://…,secret=NAME[,scope=…]` (`;` between upstreams).
pub const AMBASSADOR_OAUTH2: &str = "entourage.dev/ambassador-oauth2";
/// The protocol the ambassador speaks upstream: `auto` (the app's), `http1` or `http2`.
pub const AMBASSADOR_PROTOCOL: &str = "entourage.dev/ambassador-protocol";
/// The app container (default: `kubectl.kubernetes.io/default-container`, else the first container no known
/// injector added: `mutate::target`).
pub const TARGET_CONTAINER: &str = "entourage.dev/target-container";
/// The name of a profile from config (`profiles`): annotation-level settings this Pod's annotations override.
pub const PROFILE: &str = "entourage.dev/profile";
/// Written by entourage: what was injected. Its presence makes a second review a no-op.
pub const STATUS: &str = "entourage.dev/status";
/// The label (on a Pod, or its namespace) that picks which revision's webhook injects it (the chart's
/// `revision`); without it, the default revision.
pub const REVISION: &str = "entourage.dev/rev";
/// `"off"` opts a Job or CronJob out of the defaults.
pub const DEFAULTS: &str = "entourage.dev/defaults";
/// Comma-separated Job/CronJob fields whose current value the author wants kept.
pub const KEEP: &str = "entourage.dev/keep";
/// Written by entourage: the Job/CronJob fields it defaulted.
pub const DEFAULTED: &str = "entourage.dev/defaulted";
/// This Pod's requests and limits of its log sidecars (`cpu=50m,memory=64Mi`), within `resources.maxima.sidecar`.
pub const SIDECAR_RESOURCES: &str = "entourage.dev/sidecar-resources";
/// This Pod's requests and limits of its adapters, within `resources.maxima.adapter`.
pub const ADAPTER_RESOURCES: &str = "entourage.dev/adapter-resources";
/// This Pod's requests and limits of its ambassadors, within `resources.maxima.ambassador`.
pub const AMBASSADOR_RESOURCES: &str = "entourage.dev/ambassador-resources";

/// The documentation of one annotation.
#[derive(Debug, Clone, Copy)]
pub struct KeyDoc {
    /// The annotation key.
    pub key: &'static str,
    /// The kinds it applies to.
    pub on: &'static str,
    /// Its values.
    pub values: &'static str,
    /// What happens without it.
    pub default: &'static str,
}

/// Every annotation entourage reads or writes. The annotation tables of README.md and docs/annotations.md are
/// rendered from it (`ENTOURAGE_UPDATE_DOCS=1 cargo test --test repo_docs`), and a test compares them row by row.
pub const KEYS: &[KeyDoc] = &[
    KeyDoc {
        key: SIDECAR_LOGS,
        on: "Pod",
        values: "comma-separated absolute file paths; with `adapter-logs`, at most `sidecars.maxLogFiles` (8) per Pod",
        default: "no log sidecars",
    },
    KeyDoc {
        key: ADAPTER_LOGS,
        on: "Pod",
        values: "comma-separated absolute file paths (counted with `sidecar-logs`)",
        default: "no adapters",
    },
    KeyDoc {
        key: ADAPTER_FORMAT,
        on: "Pod",
        values: "`nginx`, `apache-combined`, `apache-common`, `syslog`, `logfmt`, `json`, `plain`, `regex:<pattern>`",
        default: "`plain`",
    },
    KeyDoc {
        key: ADAPTER_FIELDS,
        on: "Pod",
        values: "`key=value,key=value` added to every JSON line; not a key the adapter or the format writes",
        default: "none",
    },
    KeyDoc {
        key: ADAPTER_MULTILINE,
        on: "Pod",
        values: "`java`, `python`, `go`, `regex:<first-line pattern>`: one record per stack trace",
        default: "one record per line",
    },
    KeyDoc {
        key: ADAPTER_TIME_KEY,
        on: "Pod",
        values: "the key of the record's time (`@timestamp`, `timestamp`); the time is always RFC 3339",
        default: "`time`",
    },
    KeyDoc {
        key: ADAPTER_RENAME,
        on: "Pod",
        values: "`from=to,from=to` (`message=msg,level=severity`)",
        default: "keys as the format writes them",
    },
    KeyDoc {
        key: ADAPTER_LEVEL,
        on: "Pod",
        values: "`normalize` (to `debug`, `info`, `warn`, `error`, `fatal`), `keep`",
        default: "`keep`",
    },
    KeyDoc {
        key: AMBASSADOR_UPSTREAM,
        on: "Pod",
        values: "one `http://` or `https://` URL",
        default: "no ambassador",
    },
    KeyDoc {
        key: AMBASSADOR_UPSTREAMS,
        on: "Pod",
        values: "`name=url,name=url` (one ambassador and one `AMBASSADOR_<NAME>_URL` each)",
        default: "no ambassador",
    },
    KeyDoc {
        key: AMBASSADOR_PORT,
        on: "Pod",
        values: "1–65535: the first local port",
        default: "`ambassador.port` (9000)",
    },
    KeyDoc {
        key: AMBASSADOR_AUTH_SECRET,
        on: "Pod",
        values: "a Secret name, or `name=secret,…` per upstream",
        default: "no auth header",
    },
    KeyDoc {
        key: AMBASSADOR_CLIENT_CERT_SECRET,
        on: "Pod",
        values: "a `kubernetes.io/tls` Secret name, or `name=secret,…` per upstream (`https://` only)",
        default: "no client certificate",
    },
    KeyDoc {
        key: AMBASSADOR_CA,
        on: "Pod",
        values: "a ConfigMap name (or `configmap:NAME`) or `secret:NAME`, holding key `ambassador.caKey` (`ca.crt`); or `name=…,…` per upstream (`https://` only)",
        default: "the system's CAs",
    },
    KeyDoc {
        key: AMBASSADOR_TOKEN_AUDIENCE,
        on: "Pod",
        values: "a token audience (no whitespace, ≤ 253 characters), or `name=audience,…` per upstream",
        default: "no workload token",
    },
    KeyDoc {
        key: AMBASSADOR_OAUTH2,
        on: "Pod",
        values: "`token-url=https://…,secret=NAME[,scope=a b][,upstream=NAME]`; `;` between upstreams",
        default: "no OAuth2 token",
    },
    KeyDoc {
        key: AMBASSADOR_PROTOCOL,
        on: "Pod",
        values: "`auto` (HTTP/2 and gRPC go upstream as HTTP/2, HTTP/1.1 as HTTP/1.1), `http1`, `http2`, or `name=…,…` per upstream",
        default: "`auto`",
    },
    KeyDoc {
        key: TARGET_CONTAINER,
        on: "Pod",
        values: "a container name",
        default: "`kubectl.kubernetes.io/default-container`, else the first container that no known injector added (docs/apps.md)",
    },
    KeyDoc {
        key: INJECT,
        on: "Pod",
        values: "`true`, `false`",
        default: "`true`",
    },
    KeyDoc {
        key: SIDECAR_RESOURCES,
        on: "Pod",
        values: "`cpu=50m,memory=64Mi,ephemeral-storage=64Mi`: each sets the request and the limit of the log sidecars, up to `resources.maxima.sidecar`",
        default: "`resources.requests` and `resources.limits`",
    },
    KeyDoc {
        key: ADAPTER_RESOURCES,
        on: "Pod",
        values: "as `sidecar-resources`, for the adapters, up to `resources.maxima.adapter`",
        default: "`resources.requests` and `resources.limits`",
    },
    KeyDoc {
        key: AMBASSADOR_RESOURCES,
        on: "Pod",
        values: "as `sidecar-resources`, for the ambassadors, up to `resources.maxima.ambassador`",
        default: "`resources.requests` and `resources.limits`",
    },
    KeyDoc {
        key: PROFILE,
        on: "Pod",
        values: "the name of a profile of config `profiles` (unknown names deny, listing the known ones)",
        default: "the namespace's entry in config `namespaceProfiles`, else none",
    },
    KeyDoc {
        key: STATUS,
        on: "Pod",
        values: "written by entourage",
        default: "—",
    },
    KeyDoc {
        key: DEFAULTS,
        on: "Job, CronJob",
        values: "`on`, `off` (anything else warns and applies nothing)",
        default: "`on`",
    },
    KeyDoc {
        key: KEEP,
        on: "Job, CronJob",
        values: "comma-separated field names (`backoffLimit,concurrencyPolicy`)",
        default: "none",
    },
    KeyDoc {
        key: DEFAULTED,
        on: "Job, CronJob",
        values: "written by entourage: comma-separated field paths",
        default: "—",
    },
];

/// One bad annotation value: names the annotation, the value and the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnotationError {
    /// The annotation key.
    pub key: &'static str,
    /// The offending value (or part of it).
    pub value: String,
    /// The rule it breaks, phrased to follow the value.
    pub rule: String,
}

impl fmt::Display for AnnotationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {:?} {}", self.key, self.value, self.rule)
    }
}

fn err(key: &'static str, value: &str, rule: impl Into<String>) -> AnnotationError {
    AnnotationError {
        key,
        value: value.to_string(),
        rule: rule.into(),
    }
}

/// What a Pod's annotations ask for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodRequest {
    /// `inject: "false"`.
    pub opted_out: bool,
    /// The status annotation, if the Pod was already injected.
    pub status: Option<String>,
    /// The named app container.
    pub target_container: Option<String>,
    /// Files to stream with sidecars.
    pub sidecar_logs: Vec<String>,
    /// Files to adapt into JSON.
    pub adapter: Option<AdapterRequest>,
    /// Upstreams, one ambassador each.
    pub ambassadors: Vec<Upstream>,
    /// Per-Pod requests and limits, per pattern.
    pub resources: ResourceOverrides,
}

impl PodRequest {
    /// Whether any pattern was asked for.
    pub fn wants_injection(&self) -> bool {
        !self.sidecar_logs.is_empty() || self.adapter.is_some() || !self.ambassadors.is_empty()
    }
}

pub use self::ambassador::{
    check_token_url, check_url, parse_upstream_url, CaSource, OAuth2Request, Upstream, UpstreamUrl, UrlError,
};

/// The result of parsing a Pod's annotations.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// What the Pod asks for.
    pub request: PodRequest,
    /// Warnings for the user (unknown keys).
    pub warnings: Vec<String>,
}

/// Parses a Pod's annotations (`metadata.annotations`, possibly absent).
pub fn parse_pod(annotations: Option<&Map<String, Value>>, config: &Config) -> Result<Parsed, Vec<AnnotationError>> {
    let empty = Map::new();
    let annotations = annotations.unwrap_or(&empty);
    let get = Lookup(annotations);
    let get = |k: &str| get.text(k);
    let mut errors = Vec::new();
    let mut request = PodRequest {
        status: get(STATUS).map(str::to_string),
        ..PodRequest::default()
    };
    let warnings = unknown_key_warnings(annotations);

    match get(INJECT) {
        None | Some("true") => {}
        Some("false") => request.opted_out = true,
        Some(other) => errors.push(err(INJECT, other, "must be \"true\" or \"false\"")),
    }
    if let Some(name) = get(TARGET_CONTAINER) {
        request.target_container = Some(name.to_string());
    }
    if let Some(v) = get(SIDECAR_LOGS) {
        request.sidecar_logs = parse_paths(SIDECAR_LOGS, v, &mut errors);
    }
    request.adapter = adapter::parse(Lookup(annotations), &mut errors);
    let total = request.sidecar_logs.len() + request.adapter.as_ref().map_or(0, |a| a.logs.len());
    if total > config.sidecars.max_log_files {
        let key = if request.sidecar_logs.len() > config.sidecars.max_log_files {
            SIDECAR_LOGS
        } else {
            ADAPTER_LOGS
        };
        let value = get(key).unwrap_or_default();
        errors.push(err(
            key,
            value,
            format!(
                "lists {total} log files in all; at most {} are allowed per Pod",
                config.sidecars.max_log_files
            ),
        ));
    }
    request.ambassadors = ambassador::parse(Lookup(annotations), config, &mut errors);
    request.resources = resources::parse(Lookup(annotations), config, &mut errors);

    if errors.is_empty() {
        Ok(Parsed { request, warnings })
    } else {
        Err(errors)
    }
}

/// Reads string annotations.
#[derive(Clone, Copy)]
pub(crate) struct Lookup<'a>(&'a Map<String, Value>);

impl<'a> Lookup<'a> {
    fn text(self, key: &str) -> Option<&'a str> {
        self.0.get(key).and_then(Value::as_str)
    }
}

/// Warnings for `entourage.dev/` keys this build does not know, each naming the closest known key.
pub fn unknown_key_warnings(annotations: &Map<String, Value>) -> Vec<String> {
    annotations
        .keys()
        .filter(|k| k.starts_with(PREFIX) && !KEYS.iter().any(|d| d.key == k.as_str()))
        .map(|k| {
            let closest = KEYS
                .iter()
                .map(|d| (strsim::levenshtein(k, d.key), d.key))
                .min()
                .map(|(_, key)| key)
                .unwrap_or(SIDECAR_LOGS);
            format!("entourage: unknown annotation {k} is ignored; did you mean {closest}?")
        })
        .collect()
}

/// Directories an emptyDir must never be mounted over in the app container: it would hide the image's own files.
const SYSTEM_DIRS: &[&str] = &[
    "/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/sbin", "/sys", "/usr", "/var", "/tmp",
];

/// Where injected log readers keep their positions (an emptyDir of their own): no log file may live there.
pub const READER_STATE_DIR: &str = "/var/lib/entourage";

/// Parses a comma-separated list of log file paths.
fn parse_paths(key: &'static str, value: &str, errors: &mut Vec<AnnotationError>) -> Vec<String> {
    let mut paths: Vec<String> = Vec::new();
    for raw in value.split(',') {
        let path = raw.trim();
        match check_path(path) {
            Err(rule) => errors.push(err(key, path, rule)),
            Ok(()) if paths.iter().any(|p| p == path) => errors.push(err(key, path, "is listed twice")),
            Ok(()) => paths.push(path.to_string()),
        }
    }
    paths
}

/// The rules a log file path must follow.
pub fn check_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("is an empty path");
    }
    if !path.starts_with('/') {
        return Err("is not an absolute path");
    }
    if path.len() > 1024 {
        return Err("is longer than 1024 characters");
    }
    // Printable ASCII other than quote and backslash passes at once; anything else is judged by character.
    let plain = |b: &u8| b.is_ascii_graphic() && *b != b'"' && *b != b'\\';
    if !path.as_bytes().iter().all(plain)
        && path
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '"' || c == '\\')
    {
        return Err("contains whitespace, quotes, backslashes or control characters");
    }
    if path.ends_with('/') {
        return Err("is a directory, not a file");
    }
    if path.contains("//") {
        return Err("is not normalised (contains //)");
    }
    if path.split('/').any(|part| part == ".." || part == ".") {
        return Err("is not normalised (contains . or ..)");
    }
    let dir = parent_dir(path);
    if SYSTEM_DIRS.contains(&dir) {
        return Err("is in a system directory; an emptyDir mounted there would hide the image's files");
    }
    if dir
        .strip_prefix(READER_STATE_DIR)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    {
        return Err("is in /var/lib/entourage, where injected log readers keep their positions");
    }
    Ok(())
}

/// The directory of an absolute, normalised file path.
pub fn parent_dir(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

pub use crate::support::names::{is_dns_label, is_dns_subdomain};

mod adapter;
pub use super::logformat::LevelMode;
pub use adapter::AdapterRequest;

#[cfg(test)]
mod tests;
