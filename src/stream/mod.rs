//! Transport-agnostic stream state machines.

mod auth;
pub mod c2s;
mod csi;
mod features;
pub mod resumption;
mod sm;
pub mod throttle;
pub mod transport;
