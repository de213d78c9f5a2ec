//! One server-to-server connection as frames in and bytes out, whichever side opened it and
//! whether or not TLS runs on it yet. Stanzas cross it in `jabber:server` and are handled in
//! `jabber:client`, the one form the router knows: the parser builds them so, the writer writes
//! them so (RFC 6120 §4.8.3).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use minidom::Element;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::dialback;
use crate::listen::byte_stream;
use crate::stream::transport::TransportError;
use crate::tls::s2s::S2sTls;
use crate::xml::{self, escape_attr, ns, Frame, StreamParser, XmlLimits};

pub enum Socket {
    Plain(TcpStream),
    /// A connection another server opened, after the TLS handshake.
    Accepted(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// A connection this server opened, after the TLS handshake.
    Opened(Box<S2sTls>),
    /// Only while STARTTLS swaps one for the other.
    Upgrading,
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Accepted(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Socket::Opened(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Socket::Upgrading => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Socket::Accepted(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Socket::Opened(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Socket::Upgrading => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_flush(cx),
            Socket::Accepted(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Socket::Opened(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Socket::Upgrading => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Accepted(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Socket::Opened(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Socket::Upgrading => Poll::Ready(Ok(())),
        }
    }
}

pub struct Wire {
    socket: Socket,
    parser: StreamParser,
    frames: VecDeque<Frame>,
    read: u64,
}

impl Wire {
    pub fn new(socket: Socket, limits: XmlLimits) -> Wire {
        Wire {
            socket,
            parser: StreamParser::new(limits).stanzas_in(ns::SERVER, ns::CLIENT),
            frames: VecDeque::new(),
            read: 0,
        }
    }

    /// The next frame. Cancel-safe: a read dropped half-way loses nothing.
    pub async fn next_frame(&mut self) -> Result<Frame, TransportError> {
        loop {
            if let Some(frame) = self.frames.pop_front() {
                return Ok(frame);
            }
            std::future::poll_fn(|cx| {
                byte_stream::poll_frames(
                    cx,
                    &mut self.socket,
                    &mut self.parser,
                    &mut self.frames,
                    &mut self.read,
                )
            })
            .await?;
        }
    }

    /// Bytes read so far: anything, whitespace included, shows the peer is alive.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// Our stream header. `id` only on the receiving side (RFC 6120 §4.7.3).
    pub async fn open(&mut self, from: &str, to: Option<&str>, id: Option<&str>) -> io::Result<()> {
        let mut header = format!(
            "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' xmlns:db='{}' \
             from='{}'",
            ns::SERVER,
            ns::STREAM,
            dialback::NS,
            escape_attr(from)
        );
        if let Some(to) = to {
            header.push_str(&format!(" to='{}'", escape_attr(to)));
        }
        if let Some(id) = id {
            header.push_str(&format!(" id='{}'", escape_attr(id)));
        }
        header.push_str(" version='1.0' xml:lang='en'>");
        self.send_bytes(header.as_bytes()).await
    }

    /// A stanza (in `jabber:client` here), written in the stream's `jabber:server`.
    pub async fn send_stanza(&mut self, stanza: &Element) -> io::Result<()> {
        self.send_bytes(&xml::writer::to_bytes_in_default(stanza, ns::CLIENT))
            .await
    }

    /// Stanzas written together, in one write (nothing for none).
    pub async fn send_stanzas(&mut self, stanzas: &[Element]) -> io::Result<()> {
        match stanzas {
            [] => Ok(()),
            [one] => self.send_stanza(one).await,
            many => {
                let mut bytes = Vec::with_capacity(many.len() * 256);
                for stanza in many {
                    bytes.extend(xml::writer::to_bytes_in_default(stanza, ns::CLIENT));
                }
                self.send_bytes(&bytes).await
            }
        }
    }

    /// A nonza: stream features and errors with the `stream:` prefix, anything else with its
    /// own namespace (dialback elements in theirs, which the header bound to `db:`, too).
    pub async fn send_element(&mut self, el: &Element) -> io::Result<()> {
        if el.ns() == dialback::NS {
            return self
                .send_bytes(&xml::writer::prefixed_to_bytes(el, "db"))
                .await;
        }
        self.send_bytes(&xml::stream_element_to_bytes(el, false))
            .await
    }

    /// Whitespace keepalive (RFC 6120 §4.6.1).
    pub async fn keepalive(&mut self) -> io::Result<()> {
        self.send_bytes(b" ").await
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.socket.write_all(bytes).await?;
        self.socket.flush().await
    }

    /// Ends the stream, with an error first when there is one, and closes the connection.
    pub async fn close(&mut self, error: Option<Element>) {
        if let Some(error) = error {
            let _ = self.send_element(&error).await;
        }
        let _ = self.socket.write_all(b"</stream:stream>").await;
        let _ = self.socket.flush().await;
        let _ = self.socket.shutdown().await;
    }

    /// Takes the plain TCP connection for a TLS handshake; None if TLS already runs.
    pub fn take_plain(&mut self) -> Option<TcpStream> {
        match std::mem::replace(&mut self.socket, Socket::Upgrading) {
            Socket::Plain(tcp) => Some(tcp),
            other => {
                self.socket = other;
                None
            }
        }
    }

    /// The connection after a TLS handshake: a new stream starts on it, and nothing read
    /// before it counts (the STARTTLS command injection of CVE-2011-0411).
    pub fn upgraded(&mut self, socket: Socket) {
        self.socket = socket;
        self.restart();
    }

    /// A new stream starts (after TLS, after SASL).
    pub fn restart(&mut self) {
        self.parser.reset();
        self.frames.clear();
    }

    pub fn is_secure(&self) -> bool {
        matches!(self.socket, Socket::Accepted(_) | Socket::Opened(_))
    }

    /// The certificate chain the peer presented, end entity first.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        match &self.socket {
            Socket::Accepted(tls) => tls.get_ref().1.peer_certificates(),
            Socket::Opened(tls) => Some(tls.peer_certificates()).filter(|c| !c.is_empty()),
            Socket::Plain(_) | Socket::Upgrading => None,
        }
    }

    /// Whether the certificate of the server this side connected to verified for its domain.
    pub fn opened_verified(&self) -> Option<&Result<(), crate::tls::s2s::PeerCertError>> {
        match &self.socket {
            Socket::Opened(tls) => Some(tls.verified()),
            _ => None,
        }
    }
}
