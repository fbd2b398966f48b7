//! scim-bridge: a self-hosted SCIM 2.0 gateway between Microsoft Entra ID provisioning and SaaS vendor
//! APIs. See ARCHITECTURE.md for the map and the invariants.

pub mod audit_report;
pub mod auth;
pub mod check;
pub mod cli;
pub mod config;
pub mod gateway;
pub mod group_roles;
pub mod http;
pub mod ip_allow;
pub mod listener;
pub mod metrics;
pub mod outcome;
pub mod probe;
pub mod reconcile;
pub(crate) mod roles;
pub mod server;
pub mod status;
pub mod store;
pub mod vendor_errors;
pub mod vendor_index;
pub mod vendors;

/// The SCIM protocol crate, re-exported so `scim_bridge::scim::...` names what the gateway speaks.
pub use scim;
