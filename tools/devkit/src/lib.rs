//! The test bench around the gateway: the demo (every vendor app in front of its in-process simulator)
//! and the benchmarks. Used by `scim-bridge-dev` and by the black-box tests; never by the release binary.

pub mod bench;
pub mod demo;
