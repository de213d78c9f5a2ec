//! RFC 7395 framing: one complete element per WebSocket text message, `<open/>` and `<close/>`
//! in place of the stream header and footer.

use std::io;
use std::net::SocketAddr;

use axum::extract::ws::{Message, WebSocket};
use futures::SinkExt;

use crate::sasl::ChannelBindings;
use crate::stream::transport::{Incoming, Read, Transport, TransportError};
use crate::xml::{self, ns, FramingError, StreamHeader, XmlLimits};

pub struct WsTransport {
    socket: WebSocket,
    peer: SocketAddr,
    limits: XmlLimits,
    secure: bool,
    /// Payload bytes of every message received so far (see `Transport::bytes_read`).
    read: u64,
}

impl WsTransport {
    pub fn new(socket: WebSocket, peer: SocketAddr, limits: XmlLimits, secure: bool) -> Self {
        WsTransport {
            socket,
            peer,
            limits,
            secure,
            read: 0,
        }
    }
}

fn payload_len(message: &Message) -> u64 {
    let len = match message {
        Message::Text(text) => text.len(),
        Message::Binary(bytes) | Message::Ping(bytes) | Message::Pong(bytes) => bytes.len(),
        Message::Close(frame) => frame.as_ref().map_or(0, |f| f.reason.len()),
    };
    len as u64
}

fn io_error(e: axum::Error) -> io::Error {
    io::Error::other(e)
}

impl Transport for WsTransport {
    async fn next_frame(&mut self) -> Result<Read, TransportError> {
        let message = match self.socket.recv().await {
            None => return Err(TransportError::Disconnected),
            Some(Err(_)) => return Err(TransportError::Disconnected),
            Some(Ok(message)) => message,
        };
        // Keepalives and pings cost the server as much as stanzas to take in: all count.
        self.read += payload_len(&message);
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

    fn can_starttls(&self) -> bool {
        false
    }

    async fn starttls(&mut self) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    fn is_secure(&self) -> bool {
        self.secure
    }

    fn channel_bindings(&self) -> ChannelBindings {
        ChannelBindings::none()
    }

    fn restart(&mut self) {}

    fn peer(&self) -> SocketAddr {
        self.peer
    }

    fn bytes_read(&self) -> u64 {
        self.read
    }
}
