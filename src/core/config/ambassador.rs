//! The `ambassador:` section of the config: ports, the app's env var, and what every injected ambassador is told
//! on its command line. Each value that becomes a flag is checked here with the parser the ambassador itself uses
//! (`support::duration`), so a config that loads never makes an ambassador exit at start.

use serde::{Deserialize, Serialize};

use super::is_env_name;
use crate::support::duration::parse_timeout;

/// The shortest `expirationSeconds` the apiserver accepts for a projected ServiceAccount token (10 minutes).
pub const MIN_TOKEN_EXPIRATION_SECONDS: i64 = 600;
/// The longest workload token entourage asks for: a leaked token should not outlive a day.
pub const MAX_TOKEN_EXPIRATION_SECONDS: i64 = 86_400;

/// Defaults of the ambassador pattern.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AmbassadorConfig {
    /// The first local port (the next upstreams take the following ports).
    pub port: u16,
    /// The first admin port (`/healthz`, `/livez`, `/metrics`); one per ambassador container.
    pub admin_port: u16,
    /// The variable the app container gets for a single upstream (`AMBASSADOR_URL`); with several upstreams
    /// each gets `AMBASSADOR_<NAME>_URL`.
    pub url_env: String,
    /// The key of the auth Secret that holds the token.
    pub auth_secret_key: String,
    /// The per-request timeout, as `30s` or `500ms` (`--timeout`); retries never wait past it.
    pub timeout: String,
    /// Retries of body-less idempotent requests after a connect error, a 503, or a 429 with `Retry-After`
    /// (`--retries`).
    pub retries: u32,
    /// Consecutive failures that open the circuit breaker; 0 turns it off (`--breaker-failures`).
    pub breaker_failures: u32,
    /// How long an open circuit answers 503 before one trial request (`--breaker-cooldown`).
    pub breaker_cooldown: String,
    /// Requests in flight per upstream past which the ambassador answers 503 rather than queue
    /// (`--max-concurrent`).
    pub max_concurrent: u32,
    /// The key of a CA ConfigMap or Secret (`ambassador-ca`) that holds the PEM CA bundle.
    pub ca_key: String,
    /// `expirationSeconds` of the projected ServiceAccount token (`ambassador-token-audience`); the kubelet
    /// renews it at 80 % of its life.
    pub token_expiration_seconds: i64,
}

impl Default for AmbassadorConfig {
    fn default() -> Self {
        AmbassadorConfig {
            port: 9000,
            admin_port: 9901,
            url_env: "AMBASSADOR_URL".into(),
            auth_secret_key: "token".into(),
            timeout: "30s".into(),
            retries: 2,
            breaker_failures: 5,
            breaker_cooldown: "10s".into(),
            max_concurrent: 256,
            ca_key: "ca.crt".into(),
            token_expiration_seconds: 3600,
        }
    }
}

impl AmbassadorConfig {
    /// Every invalid value, each naming its key.
    pub(super) fn problems(&self, p: &mut Vec<String>) {
        if self.port == 0 {
            p.push("ambassador.port: 0 is not a port".into());
        }
        if self.admin_port == 0 {
            p.push("ambassador.adminPort: 0 is not a port".into());
        }
        if self.port == self.admin_port {
            p.push(format!(
                "ambassador.adminPort: {} is the same as ambassador.port",
                self.admin_port
            ));
        }
        if !is_env_name(&self.url_env) {
            p.push(format!(
                "ambassador.urlEnv: {:?} is not an environment variable name",
                self.url_env
            ));
        }
        for (key, value) in [("authSecretKey", &self.auth_secret_key), ("caKey", &self.ca_key)] {
            if !is_secret_key(value) {
                p.push(format!(
                    "ambassador.{key}: {value:?} is not a Secret or ConfigMap key (letters, digits, - _ .)"
                ));
            }
        }
        // The same parser as `entourage ambassador --timeout` / `--breaker-cooldown`, which these values are handed to.
        for (key, value) in [("timeout", &self.timeout), ("breakerCooldown", &self.breaker_cooldown)] {
            if let Err(e) = parse_timeout(value) {
                p.push(format!("ambassador.{key}: {e}"));
            }
        }
        if self.max_concurrent == 0 {
            p.push("ambassador.maxConcurrent: 0 would refuse every request; use at least 1".into());
        }
        if !(MIN_TOKEN_EXPIRATION_SECONDS..=MAX_TOKEN_EXPIRATION_SECONDS).contains(&self.token_expiration_seconds) {
            p.push(format!(
                "ambassador.tokenExpirationSeconds: {} is outside {MIN_TOKEN_EXPIRATION_SECONDS}-{MAX_TOKEN_EXPIRATION_SECONDS} \
                 (the apiserver's minimum is 10 minutes; entourage asks for at most a day)",
                self.token_expiration_seconds
            ));
        }
    }
}

/// Whether `key` can name a key of a Secret or ConfigMap (and so a file in its volume).
fn is_secret_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_ambassador_value_is_named() {
        let bad = AmbassadorConfig {
            breaker_cooldown: "0s".into(),
            max_concurrent: 0,
            ca_key: "a/b".into(),
            token_expiration_seconds: 60,
            ..AmbassadorConfig::default()
        };
        let mut p = Vec::new();
        bad.problems(&mut p);
        let text = p.join("\n");
        for key in ["breakerCooldown", "maxConcurrent", "caKey", "tokenExpirationSeconds"] {
            assert!(text.contains(&format!("ambassador.{key}")), "{key} missing from {text}");
        }
        let mut none = Vec::new();
        AmbassadorConfig::default().problems(&mut none);
        assert!(none.is_empty(), "{none:?}");
    }
}
