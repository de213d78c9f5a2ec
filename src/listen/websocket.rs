//! RFC 7395 framing: one complete element per WebSocket text message, `<open/>` and `<close/>`
//! in place of the stream header and footer.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;

use axum::extract::ws::{Message, WebSocket};
use futures::{SinkExt, StreamExt};

use super::read_meter::ReadMeter;

use crate::stream::transport::{Incoming, Read, Transport, TransportError};
use crate::xml::{self, ns, FramingError, StreamHeader, XmlLimits};

pub struct WsTransport {
    socket: WebSocket,
    /// Every byte of the connection, frames that complete no message included (see
    /// `Transport::bytes_read`).
    meter: Arc<ReadMeter>,
    peer: SocketAddr,
    limits: XmlLimits,
    secure: bool,
}

/// What one `next_frame` reads at most (plus one read of the library's buffer) before it
/// returns, so that the shaper is asked again even while no message completes.
const READ_QUOTA: u64 = 16 * 1024;

impl WsTransport {
    pub fn new(
        socket: WebSocket,
        meter: Arc<ReadMeter>,
        peer: SocketAddr,
        limits: XmlLimits,
        secure: bool,
    ) -> Self {
        WsTransport {
            socket,
            meter,
            peer,
            limits,
            secure,
        }
    }

    /// The next message, or `None` once the quota is spent without completing one.
    async fn next_message(&mut self) -> Option<Option<Result<Message, axum::Error>>> {
        self.meter.allow(READ_QUOTA);
        poll_fn(|cx| match self.socket.poll_next_unpin(cx) {
            Poll::Ready(message) => Poll::Ready(Some(message)),
            Poll::Pending if self.meter.exhausted() => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        })
        .await
    }
}

fn io_error(e: axum::Error) -> io::Error {
    io::Error::other(e)
}

impl Transport for WsTransport {
    async fn next_frame(&mut self) -> Result<Read, TransportError> {
        let message = match self.next_message().await {
            None => return Ok(Read::Partial),
            Some(None) | Some(Some(Err(_))) => return Err(TransportError::Disconnected),
            Some(Some(Ok(message))) => message,
        };
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(_) => {
                return Err(FramingError::NotWellFormed(
                    "binary WebSocket messages are not XMPP (RFC 7395 §3.2)".into(),
                )
                .into())
            }
            Message::Ping(_) | Message::Pong(_) => {
                // Frames that complete nothing can arrive faster than the socket is read
                // (several per buffered read): spend budget on them so a flood yields.
                tokio::task::consume_budget().await;
                return Ok(Read::Partial);
            }
            Message::Close(_) => return Err(TransportError::Disconnected),
        };
        if text.trim().is_empty() {
            // Whitespace keepalive.
            tokio::task::consume_budget().await;
            return Ok(Read::Partial);
        }
        let el = xml::parse_standalone(text.as_bytes(), self.limits)?;
        if el.is("open", ns::FRAMING) {
            return Ok(Read::Frame(Incoming::Open(StreamHeader {
                to: el.attr("to").map(str::to_owned),
                from: el.attr("from").map(str::to_owned),
                version: el.attr("version").map(str::to_owned),
                lang: el.attr_ns(ns::XML, "lang").map(str::to_owned),
                id: None,
                default_ns: Some(ns::CLIENT.to_owned()),
            })));
        }
        if el.is("close", ns::FRAMING) {
            return Ok(Read::Frame(Incoming::Close));
        }
        Ok(Read::Frame(Incoming::Element(el)))
    }

    async fn open_stream(&mut self, id: &str, from: &str) -> io::Result<()> {
        let open = format!(
            "<open xmlns='{}' id='{}' from='{}' version='1.0' xml:lang='en'/>",
            ns::FRAMING,
            xml::escape_attr(id),
            xml::escape_attr(from)
        );
        self.send(&[open.as_bytes()]).await
    }

    async fn send(&mut self, elements: &[&[u8]]) -> io::Result<()> {
        for el in elements {
            let text = String::from_utf8_lossy(el).into_owned();
            self.socket
                .feed(Message::Text(text.into()))
                .await
                .map_err(io_error)?;
        }
        self.socket.flush().await.map_err(io_error)
    }

    async fn close_stream(&mut self) -> io::Result<()> {
        let close = format!("<close xmlns='{}'/>", ns::FRAMING);
        self.send(&[close.as_bytes()]).await?;
        self.socket
            .send(Message::Close(None))
            .await
            .map_err(io_error)
    }

    fn stream_prefix_declaration(&self) -> &'static str {
        " xmlns:stream='http://etherx.jabber.org/streams'"
    }

    fn is_secure(&self) -> bool {
        self.secure
    }

    fn metrics_kind(&self) -> crate::metrics::Transport {
        crate::metrics::Transport::Websocket
    }

    fn restart(&mut self) {}

    fn peer(&self) -> SocketAddr {
        self.peer
    }

    fn bytes_read(&self) -> u64 {
        self.meter.read()
    }
}
