//! What a stream needs from a connection, whatever carries it: TCP (with or without TLS) or
//! WebSocket. Listeners implement this; `stream::c2s` is written once on top.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use minidom::Element;
use rustls::pki_types::CertificateDer;

use crate::sasl::ChannelBindings;
use crate::xml::{FramingError, StreamHeader};

#[derive(Debug)]
pub enum Incoming {
    Open(StreamHeader),
    Element(Element),
    Close,
}

/// What one call to `Transport::next_frame` gave.
#[derive(Debug)]
pub enum Read {
    Frame(Incoming),
    /// Bytes that completed no frame yet (whitespace, keepalives, part of a stanza). A
    /// transport returns this after a bounded amount of such input, so that the session can
    /// charge what was read and pace its reading even while no frame comes of it.
    Partial,
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(transparent)]
    Framing(#[from] FramingError),
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    /// The peer went away without closing the stream.
    #[error("connection closed")]
    Disconnected,
}

pub trait Transport: Send + 'static {
    /// The next frame, or `Read::Partial` after a bounded amount of input that completed
    /// none. Cancel-safe: dropping the future loses no data, so the session loop can `select!`
    /// on it together with its outbound queue.
    fn next_frame(&mut self) -> impl Future<Output = Result<Read, TransportError>> + Send;

    /// Sends our stream header (`<stream:stream>` or RFC 7395 `<open/>`).
    fn open_stream(&mut self, id: &str, from: &str) -> impl Future<Output = io::Result<()>> + Send;

    /// Sends top-level elements, already serialized, and flushes.
    fn send(&mut self, elements: &[&[u8]]) -> impl Future<Output = io::Result<()>> + Send;

    /// Sends the stream footer (`</stream:stream>` or `<close/>`) and shuts the connection down.
    fn close_stream(&mut self) -> impl Future<Output = io::Result<()>> + Send;

    /// How a stream-namespace element (`<stream:features>`, `<stream:error>`) declares its
    /// prefix: nothing on TCP, where the stream header declared it; an `xmlns:stream` attribute
    /// on WebSocket, where every message stands alone.
    fn stream_prefix_declaration(&self) -> &'static str;

    /// Whether `<starttls/>` can be offered. The defaults of this and the TLS methods below
    /// are those of a transport whose TLS, if any, ends in the HTTP listener beneath it
    /// (WebSocket, BOSH); the TCP transport overrides them.
    fn can_starttls(&self) -> bool {
        false
    }

    /// Upgrades the connection to TLS after `<proceed/>` was sent (RFC 6120 §5.4.3.3), with
    /// the certificate of `domain`, the stream header's `to` (the main domain's when that is
    /// empty or not hosted).
    fn starttls(&mut self, _domain: &str) -> impl Future<Output = io::Result<()>> + Send {
        async { Err(io::ErrorKind::Unsupported.into()) }
    }

    fn is_secure(&self) -> bool;

    /// Which listener this came through, for the session metrics.
    fn metrics_kind(&self) -> crate::metrics::Transport {
        crate::metrics::Transport::Tcp
    }

    /// None where TLS ends below the transport: the stream cannot bind to a channel it
    /// does not see.
    fn channel_bindings(&self) -> ChannelBindings {
        ChannelBindings::none()
    }

    /// The certificate chain the peer presented in the TLS handshake, end entity first, as
    /// rustls received it: what SASL EXTERNAL authenticates with. None without TLS, or when
    /// the peer sent none.
    fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        None
    }

    /// Forgets parser state: a new stream starts (after TLS or SASL success).
    fn restart(&mut self);

    fn peer(&self) -> SocketAddr;

    /// Bytes received from the client so far, as the transport read them: after TLS, before
    /// parsing, whitespace and keepalives included (on WebSocket, every frame with its header).
    /// What the session's traffic shaper charges, wherever they were read.
    fn bytes_read(&self) -> u64;
}
