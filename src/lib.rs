//! corvid: an XMPP server. See README.md for the layout and `../shared/ARCHITECTURE.md`.

pub mod address;
pub mod admin;
pub mod cluster;
pub mod config;
pub mod control;
pub mod ids;
pub mod invites;
pub mod limits;
pub mod listen;
pub mod metrics;
pub mod modules;
pub mod registration;
pub mod reload;
pub mod router;
pub mod s2s;
pub mod sasl;
pub mod server;
pub mod stanza;
pub mod storage;
pub mod stream;
pub mod tls;
pub mod xml;
