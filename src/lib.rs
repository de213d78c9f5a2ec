//! corvid: an XMPP server. See README.md for the layout and `../shared/ARCHITECTURE.md`.

pub mod config;
pub mod ids;
pub mod sasl;
pub mod storage;
pub mod xml;
pub mod router;
pub mod stanza;
pub mod listen;
pub mod modules;
pub mod sasl;
pub mod server;
pub mod stream;
pub mod tls;
