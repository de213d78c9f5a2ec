//! Transport-agnostic stream state machines.

mod auth;
mod bind2;
pub mod c2s;
pub mod cluster_resume;
pub mod context;
mod csi;
pub mod detached_cap;
pub mod end;
mod fast;
pub mod features;
mod register;
pub use register::features as registration_features;
pub mod random_id;
pub mod resumption;
mod sasl2;
pub mod sasl_stream;
pub mod shaper;
mod sm;
pub mod throttle;
pub mod transport;
