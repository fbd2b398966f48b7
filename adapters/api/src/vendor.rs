//! The vendor registry's one trait: what the gateway, the demo, the tests and CI need to know of a vendor
//! type. Each vendor crate exports one `VENDOR` implementing it; `scim_bridge::vendors::VENDORS` is the one
//! list, and everything that iterates vendors (config, the demo, `simulate`, the tests) reads it.

use std::sync::Arc;

use crate::adapter::Adapter;
use crate::options::OptionsError;
use crate::outbound::OutboundConfig;

/// Why a vendor could not build an app's adapter from its options. Both name the offending key.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The options do not fit the vendor's `Config` (an unknown, missing or badly typed key).
    #[error("{context}: {source}")]
    Options {
        /// Which app and vendor, as the message starts (`app a (promapp)`).
        context: String,
        #[source]
        source: OptionsError,
    },
    /// The vendor type takes no options, and `key` was given.
    #[error("unknown key `{key}` (the {vendor} type takes no options)")]
    NoOptions { key: String, vendor: &'static str },
    /// The options parse, but a value cannot be used (no credential, a base_url that is not https, a
    /// role the vendor does not have, a combination of keys that contradict each other): the vendor
    /// crate's own error, which names the key.
    #[error("{context}: {source}")]
    Setting {
        /// Which app and vendor, as the message starts (`app a (promapp)`).
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl BuildError {
    /// Options that do not parse, for app `app` of `vendor`.
    pub fn options(app: &str, vendor: &str, source: OptionsError) -> Self {
        BuildError::Options { context: format!("app {app} ({vendor})"), source }
    }

    /// Options that parse into values the vendor cannot use, for app `app` of `vendor`.
    pub fn setting(app: &str, vendor: &str, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        BuildError::Setting { context: format!("app {app} ({vendor})"), source: Box::new(source) }
    }
}

/// One vendor type.
pub trait Vendor: Send + Sync {
    /// The app's `type:` in the config.
    fn type_name(&self) -> &'static str;

    /// The outbound limits when the app sets none (`limits:` merges over them).
    fn default_limits(&self) -> OutboundConfig;

    /// Parses the app's vendor options (its config keys besides the gateway's own) and builds the adapter.
    /// An error names the offending key relative to `apps.<name>`.
    fn build(
        &self,
        app: &str,
        options: serde_json::Value,
        limits: OutboundConfig,
    ) -> Result<Arc<dyn Adapter>, BuildError>;

    /// `build` for an app that maps groups to roles (`group_roles`): its users get their role from groups
    /// they join after they exist, which a vendor that requires a role (Promapp) must allow for. Default:
    /// `build`.
    fn build_for_group_roles(
        &self,
        app: &str,
        options: serde_json::Value,
        limits: OutboundConfig,
    ) -> Result<Arc<dyn Adapter>, BuildError> {
        self.build(app, options, limits)
    }

    /// Whether the app's `limits:` (and their aliases `max_rps`, `retry_budget`) apply: false for a vendor
    /// without outbound calls, whose options then refuse them as unknown keys.
    fn has_limits(&self) -> bool {
        true
    }

    /// The vendor's simulator, when the crate is built with its `sim` feature (tests, the demo, the
    /// benchmarks; never the release binary).
    #[cfg(feature = "sim")]
    fn simulator(&self) -> Option<&'static simkit::SimSpec> {
        None
    }
}
