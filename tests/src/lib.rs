//! Cross-crate integration, crash and chaos tests for Tributary, with the
//! helpers they share.

pub mod cluster;
pub mod crash;
