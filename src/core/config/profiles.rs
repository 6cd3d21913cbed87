//! The `profiles:` and `namespaceProfiles:` sections: named sets of annotation-level settings, written once by the
//! platform team, that a Pod picks with `entourage.dev/profile` or gets from its namespace.
//!
//! A profile's keys are annotation names without `entourage.dev/` (`adapter-format: nginx`), and its values are
//! annotation values: one grammar for both, so the annotation parser checks them. That parser sits above config,
//! so the values are checked at load by `mutate::load_config` (`mutate::profile::problems`); this file checks
//! only the names.

use std::collections::BTreeMap;

use crate::support::names::is_dns_label;

/// One profile: annotation name without `entourage.dev/` → value.
pub type Profile = BTreeMap<String, String>;

/// Name rules of the two sections, one line per broken rule.
pub(super) fn problems(profiles: &BTreeMap<String, Profile>, namespaces: &BTreeMap<String, String>) -> Vec<String> {
    let mut p = Vec::new();
    for name in profiles.keys().filter(|n| !is_dns_label(n)) {
        p.push(format!(
            "profiles: {name:?} is not a profile name (a DNS label: lower-case letters, digits and -, at most 63)"
        ));
    }
    for (namespace, profile) in namespaces {
        if !is_dns_label(namespace) {
            p.push(format!("namespaceProfiles: {namespace:?} is not a namespace name"));
        }
        if !profiles.contains_key(profile) {
            p.push(format!(
                "namespaceProfiles.{namespace}: {profile:?} is not a profile of profiles ({})",
                known(profiles)
            ));
        }
    }
    p
}

/// The names of `profiles`, for messages: `known profiles: a, b`, or that there are none.
pub fn known(profiles: &BTreeMap<String, Profile>) -> String {
    if profiles.is_empty() {
        "no profiles are configured".into()
    } else {
        let names: Vec<&str> = profiles.keys().map(String::as_str).collect();
        format!("known profiles: {}", names.join(", "))
    }
}
