//! Transport-agnostic stream state machines.

mod auth;
mod bind2;
pub mod c2s;
mod csi;
pub mod detached_cap;
mod fast;
mod features;
pub mod resumption;
mod sasl2;
pub mod shaper;
mod sm;
pub mod throttle;
pub mod transport;
