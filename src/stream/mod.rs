//! Transport-agnostic stream state machines.

mod auth;
pub mod c2s;
mod features;
pub mod throttle;
pub mod transport;
