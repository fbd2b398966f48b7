//! scim-bridge: a self-hosted SCIM 2.0 gateway between Microsoft Entra ID provisioning and SaaS vendor
//! APIs. See ARCHITECTURE.md for the map and the invariants.

pub mod audit_report;
pub mod bench;
pub mod check;
pub mod config;
pub mod demo;
pub mod entra_sim;
pub mod gateway;
pub mod group_roles;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod reconcile;
pub mod scim;
pub mod server;
pub mod status;
pub mod store;
pub mod vendors;
