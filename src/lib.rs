//! corvid: an XMPP server. See README.md for the layout and `../shared/ARCHITECTURE.md`.

pub mod config;
pub mod ids;
pub mod sasl;
pub mod storage;
