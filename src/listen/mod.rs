//! Listeners: thin adapters from connections to the transport-agnostic streams.

pub mod admission;
pub mod bosh;
pub mod byte_stream;
pub mod cors;
pub mod deadline;
pub mod http;
pub mod invite_page;
pub mod metrics;
pub mod read_meter;
pub mod tcp;
pub mod upload;
pub mod websocket;

use std::sync::Arc;

use crate::stream::context::StreamContext;

/// What every listener shares: the streams' context, handed to each admitted connection, and
/// the admission that decides which connections are served.
pub struct ListenContext {
    pub streams: Arc<StreamContext>,
    /// Which new connections every listener serves (`limits.*connections*`).
    pub admission: admission::Admission,
}
