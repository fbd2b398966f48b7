//! The contract between the scim-bridge gateway and its vendor adapters: canonical users and groups, the
//! object-safe `Adapter` trait, the error type whose kinds drive retry policy, and the built-in `sandbox`.
//! This crate depends on nothing of the gateway; vendor crates depend only on it.

pub mod adapter;
pub mod budget;
pub mod calls;
pub mod error;
pub mod model;
pub mod options;
pub mod outbound;
pub mod sandbox;
pub mod scim_client;
pub mod secret;
pub mod vendor;

/// The SCIM protocol crate, for vendor crates (which depend only on this one).
pub use scim;

pub use adapter::{check_vendor_id, Adapter, Capabilities, Note, NoteLevel, ProbeReport, RoleError, VendorUser};
pub use error::{Error, ErrorKind, KindName, Origin, Result};
pub use model::{Enterprise, Group, Manager, Member, ModelError, MultiValue, Name, User};
pub use outbound::{BreakerState, CallOutcome, Outbound, OutboundConfig, OutboundStats, VendorRequest, VendorResponse};
pub use vendor::{BuildError, Vendor};
