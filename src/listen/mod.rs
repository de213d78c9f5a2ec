//! Listeners: thin adapters from connections to the transport-agnostic streams.

pub mod admission;
pub mod byte_stream;
pub mod http;
pub mod read_meter;
pub mod tcp;
pub mod websocket;
