//! A cache kept in the [`Config`]: the JSON that every injected container takes from config unchanged. The core's
//! `mutate::injected` renders it; config only holds it, so config depends on nothing above it.

use std::{fmt, sync::OnceLock};

use serde_json::value::RawValue;

use super::{Config, Hardening, Resources};

/// The JSON of `securityContext` and `resources`, which every injected container takes from config unchanged:
/// rendered on first use and kept in the [`Config`] (`Config::rendered`), instead of being serialised again for
/// every container of every review (a sixth of the core's time on the bench's Pod). A config changed after its
/// first use (tests build configs that way) no longer matches what was rendered, and gets `Fragment::Live`.
///
/// A config shared behind an `Arc` (the webhook's, [`Config::into_shared`]) can no longer change, so it is
/// *sealed*: its fragments are used without comparing `hardening` and `resources` with what they were rendered
/// from, a comparison of two maps of strings for every container of every review otherwise. A clone is not
/// sealed (it may be changed), and each reload builds a new config, whose fragments are rendered afresh.
#[derive(Default)]
pub struct Rendered {
    fragments: OnceLock<Fragments>,
    sealed: bool,
}

impl Clone for Rendered {
    fn clone(&self) -> Self {
        Rendered {
            fragments: self.fragments.clone(),
            sealed: false,
        }
    }
}

#[derive(Clone)]
pub(crate) struct Fragments {
    hardening: Hardening,
    resources_config: Resources,
    /// The rendered `securityContext`.
    pub(crate) security_context: Box<RawValue>,
    /// The rendered `resources`.
    pub(crate) resources: Box<RawValue>,
}

impl Rendered {
    /// The fragments of `config`, rendered by `render` (security context, resources) on first use; `None` when
    /// `config` changed since.
    pub(crate) fn get(
        &self,
        config: &Config,
        render: impl FnOnce(&Config) -> (Box<RawValue>, Box<RawValue>),
    ) -> Option<&Fragments> {
        let fragments = self.fragments.get_or_init(|| {
            let (security_context, resources) = render(config);
            Fragments {
                hardening: config.hardening.clone(),
                resources_config: config.resources.clone(),
                security_context,
                resources,
            }
        });
        let unchanged =
            self.sealed || (fragments.hardening == config.hardening && fragments.resources_config == config.resources);
        unchanged.then_some(fragments)
    }

    /// Marks the config holding this cache as unchangeable from now on (see [`Config::into_shared`]).
    pub(super) fn seal(&mut self) {
        self.sealed = true;
    }

    /// Whether [`Rendered::seal`] was called.
    #[cfg(test)]
    pub(crate) fn is_sealed(&self) -> bool {
        self.sealed
    }
}

/// A cache, not part of what a config says: every two are equal.
impl PartialEq for Rendered {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl fmt::Debug for Rendered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Rendered")
    }
}
