//! The `sandbox` adapter: no vendor behind it. Every change lives only in the gateway's shadow store, so an
//! admin can watch what Entra would send before pointing the app at a real vendor.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use crate::adapter::{Adapter, Capabilities, ProbeReport, VendorUser};
use crate::error::{Error, Result};
use crate::model::{Group, User};

#[derive(Debug, Default)]
pub struct Sandbox {
    next_id: AtomicU64,
}

/// The sandbox in the vendor registry: an in-process vendor, so it takes no options and has no
/// simulator (it is its own).
pub struct SandboxVendor;

/// The registry entry.
pub static VENDOR: SandboxVendor = SandboxVendor;

impl crate::vendor::Vendor for SandboxVendor {
    fn type_name(&self) -> &'static str {
        "sandbox"
    }
    fn default_limits(&self) -> crate::OutboundConfig {
        crate::OutboundConfig::default()
    }
    fn has_limits(&self) -> bool {
        false
    }
    fn build(
        &self,
        _app: &str,
        options: serde_json::Value,
        _limits: crate::OutboundConfig,
    ) -> std::result::Result<std::sync::Arc<dyn Adapter>, crate::vendor::BuildError> {
        if let Some(key) = options.as_object().and_then(|o| o.keys().next()) {
            return Err(crate::vendor::BuildError::NoOptions { key: key.clone(), vendor: "sandbox" });
        }
        Ok(std::sync::Arc::new(Sandbox::new()))
    }
}

impl Sandbox {
    pub fn new() -> Self {
        Self::default()
    }

    fn fresh_id(&self, prefix: &str) -> String {
        // Unique per process; the gateway's own ids are what Entra sees, these only fill the mapping.
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        format!("{prefix}-{nanos:x}-{n}")
    }
}

#[async_trait]
impl Adapter for Sandbox {
    fn vendor(&self) -> &'static str {
        "sandbox"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            groups: true,
            hard_delete: true,
            find_by_user_name: false,
            find_by_email: false,
            update_users: true,
            // No vendor behind it: nothing to list or to reconcile.
            list_users: false,
            create_reports_conflict: false,
            in_process: true,
        }
    }

    async fn create_user(&self, _user: &User) -> Result<String> {
        Ok(self.fresh_id("sbx-user"))
    }

    async fn get_user(&self, vendor_id: &str) -> Result<VendorUser> {
        Err(Error::not_found(format!("the sandbox keeps no vendor copy of {vendor_id}")))
    }

    async fn find_user(&self, _user_name: &str) -> Result<Option<VendorUser>> {
        Ok(None)
    }

    async fn update_user(&self, _vendor_id: &str, _before: &User, _after: &User) -> Result<()> {
        Ok(())
    }

    async fn delete_user(&self, _vendor_id: &str, _last_known: &User) -> Result<()> {
        Ok(())
    }

    async fn create_group(&self, _group: &Group) -> Result<String> {
        Ok(self.fresh_id("sbx-group"))
    }

    async fn update_group(&self, _vendor_id: &str, _before: &Group, _after: &Group) -> Result<()> {
        Ok(())
    }

    async fn delete_group(&self, _vendor_id: &str) -> Result<()> {
        Ok(())
    }

    async fn probe(&self) -> Result<ProbeReport> {
        Ok(ProbeReport {
            reachable: true,
            credential_accepted: true,
            rate_limit_headers: Vec::new(),
            notes: vec![crate::Note::info("sandbox: changes are kept only in the gateway's store")],
            credential_fingerprint: None,
        })
    }
}
