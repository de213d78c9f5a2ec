//! Transport-agnostic stream state machines.

mod auth;
mod bind2;
pub mod c2s;
mod fast;
mod features;
mod sasl2;
pub mod throttle;
pub mod transport;
