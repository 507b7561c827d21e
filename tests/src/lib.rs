//! Cross-crate integration, crash and chaos tests for Tributary, with the
//! helpers they share.

pub mod chaos;
pub mod cluster;
pub mod crash;
pub mod moto;
pub mod postgres;
pub mod sim;
