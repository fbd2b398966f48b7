//! The vendor registry's one trait: what the gateway, the demo, the tests and CI need to know of a vendor
//! type. Each vendor crate exports one `VENDOR` implementing it; `scim_bridge::vendors::VENDORS` is the one
//! list, and everything that iterates vendors (config, the demo, `simulate`, the tests) reads it.

use std::sync::Arc;

use crate::adapter::Adapter;
use crate::outbound::OutboundConfig;

/// One vendor type.
pub trait Vendor: Send + Sync {
    /// The app's `type:` in the config.
    fn type_name(&self) -> &'static str;

    /// The outbound limits when the app sets none (`limits:` merges over them).
    fn default_limits(&self) -> OutboundConfig;

    /// Parses the app's vendor options (its config keys besides the gateway's own) and builds the adapter.
    /// An error names the offending key relative to `apps.<name>`.
    fn build(&self, app: &str, options: serde_json::Value, limits: OutboundConfig) -> Result<Arc<dyn Adapter>, String>;

    /// `build` for an app that maps groups to roles (`group_roles`): its users get their role from groups
    /// they join after they exist, which a vendor that requires a role (Promapp) must allow for. Default:
    /// `build`.
    fn build_for_group_roles(
        &self,
        app: &str,
        options: serde_json::Value,
        limits: OutboundConfig,
    ) -> Result<Arc<dyn Adapter>, String> {
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
