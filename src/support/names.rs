//! The Kubernetes name rules (DNS-1123 labels and subdomains), and names of injected containers and volumes:
//! deterministic, never colliding.
//!
//! A wanted name that is taken gets `-2`, `-3`, … (the first free one), so the same Pod always gets the same
//! names. The apiserver requires container names unique across containers, initContainers and
//! ephemeralContainers, and volume names unique within the Pod.

use std::collections::BTreeSet;

/// Whether `s` is a DNS-1123 label (container, port and volume names).
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Whether `s` is a DNS-1123 subdomain (Secret names).
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && !s.is_empty() && s.split('.').all(is_dns_label)
}

/// Names already in use in one namespace of names (containers, or volumes).
#[derive(Debug, Default)]
pub struct Taken(BTreeSet<String>);

impl Taken {
    /// Starts from the names the Pod already uses.
    pub fn new<'a>(existing: impl IntoIterator<Item = &'a str>) -> Self {
        Taken(existing.into_iter().map(str::to_string).collect())
    }

    /// Claims `base`, or `base-2`, `base-3`… if taken; `base` must be a DNS label of at most 59 characters.
    pub fn claim(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut n = 2;
        while self.0.contains(&name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        self.0.insert(name.clone());
        name
    }
}

/// Turns free text into a DNS-1123 label fragment of at most `max` characters (`fallback` if nothing is left).
pub fn label(text: &str, max: usize, fallback: &str) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
        if out.len() >= max {
            break;
        }
    }
    let trimmed = out.trim_end_matches('-');
    if trimmed.is_empty() {
        fallback.to_string()
    } else {
        trimmed.to_string()
    }
}

/// The stem of a file path: its name without the last extension (`/var/log/nginx/access.log` → `access`).
pub fn file_stem(path: &str) -> &str {
    let name = path.rsplit('/').next().unwrap_or(path);
    match name.rfind('.') {
        Some(0) | None => name,
        Some(i) => &name[..i],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taken_names_get_the_first_free_suffix() {
        let mut taken = Taken::new(["sidecar-access", "sidecar-access-2"]);
        assert_eq!(taken.claim("sidecar-access"), "sidecar-access-3");
        assert_eq!(taken.claim("sidecar-error"), "sidecar-error");
        assert_eq!(taken.claim("sidecar-error"), "sidecar-error-2");
    }

    #[test]
    fn labels_are_lowercase_dns_fragments() {
        assert_eq!(label("App_Server.2024", 40, "log"), "app-server-2024");
        assert_eq!(label("...", 40, "log"), "log");
        assert_eq!(label(&"x".repeat(100), 10, "log").len(), 10);
        assert_eq!(label("var/log/nginx", 40, "logs"), "var-log-nginx");
    }

    #[test]
    fn stems_drop_only_the_last_extension() {
        assert_eq!(file_stem("/var/log/nginx/access.log"), "access");
        assert_eq!(file_stem("/logs/app.2024.log"), "app.2024");
        assert_eq!(file_stem("/logs/.hidden"), ".hidden");
        assert_eq!(file_stem("/logs/plain"), "plain");
    }
}
