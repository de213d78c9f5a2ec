//! TCP c2s: port 5222 (STARTTLS, RFC 6120) and port 5223 (direct TLS, XEP-0368). Bytes in,
//! frames out; everything else happens in `stream::c2s`.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tracing::{debug, info_span, warn, Instrument};

use crate::sasl::ChannelBindings;
use crate::server::ServerContext;
use crate::stream::c2s;
use crate::stream::transport::{Incoming, Transport, TransportError};
use crate::tls::TlsContext;
use crate::xml::{ns, Frame, StreamParser};

const READ_CHUNK: usize = 4096;

/// Accepts connections until the listener fails; each connection is its own task.
pub async fn serve(listener: TcpListener, ctx: Arc<ServerContext>, direct_tls: bool) {
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait a moment rather than spin.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let ctx = ctx.clone();
        let span = info_span!("c2s", %peer, transport = if direct_tls { "tls" } else { "tcp" }, jid = tracing::field::Empty);
        tokio::spawn(
            async move {
                let Some(tls) = ctx.tls.clone() else {
                    warn!("no TLS context; refusing connection");
                    return;
                };
                let socket = if direct_tls {
                    match tls.direct.accept(socket).await {
                        Ok(stream) => Socket::Tls(Box::new(stream)),
                        Err(e) => {
                            debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                    }
                } else {
                    Socket::Plain(socket)
                };
                let transport =
                    TcpTransport::new(socket, peer, tls, ctx.config.c2s.max_stanza_size);
                c2s::run(transport, ctx).await;
            }
            .instrument(span),
        );
    }
}

enum Socket {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while STARTTLS swaps one for the other.
    Upgrading,
}

impl Socket {
    fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Socket::Plain(s) => Some(s),
            Socket::Tls(s) => Some(s.get_ref().0),
            Socket::Upgrading => None,
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
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
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Socket::Upgrading => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_flush(cx),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Socket::Upgrading => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Socket::Upgrading => Poll::Ready(Ok(())),
        }
    }
}

pub struct TcpTransport {
    socket: Socket,
    parser: StreamParser,
    frames: VecDeque<Frame>,
    tls: Arc<TlsContext>,
    peer: SocketAddr,
    write_buf: Vec<u8>,
}

impl TcpTransport {
    fn new(socket: Socket, peer: SocketAddr, tls: Arc<TlsContext>, max_stanza: usize) -> Self {
        TcpTransport {
            socket,
            parser: StreamParser::new(max_stanza),
            frames: VecDeque::new(),
            tls,
            peer,
            write_buf: Vec::new(),
        }
    }

    /// Waits for data and parses it until at least one frame is complete.
    async fn fill(&mut self) -> Result<(), TransportError> {
        loop {
            match self.read_ready()? {
                ReadOutcome::Progress if !self.frames.is_empty() => return Ok(()),
                ReadOutcome::Progress => {}
                ReadOutcome::WouldBlock => {
                    let Some(tcp) = self.socket.tcp() else {
                        return Err(TransportError::Disconnected);
                    };
                    tcp.readable().await?;
                }
            }
        }
    }

    /// One non-blocking read, parsed at once. The buffer lives only inside this call, so a
    /// connection waiting for data holds none (and TLS may already hold decrypted bytes, which
    /// is why this is tried before waiting for the socket).
    fn read_ready(&mut self) -> Result<ReadOutcome, TransportError> {
        let mut chunk = [0u8; READ_CHUNK];
        let read = match self.socket.read(&mut chunk).now_or_never() {
            None => return Ok(ReadOutcome::WouldBlock),
            Some(Ok(0)) => return Err(TransportError::Disconnected),
            Some(Ok(n)) => n,
            Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                return Ok(ReadOutcome::WouldBlock)
            }
            Some(Err(e)) => return Err(e.into()),
        };
        let mut out = Vec::new();
        self.parser.feed(&chunk[..read], &mut out)?;
        self.frames.extend(out);
        Ok(ReadOutcome::Progress)
    }
}

enum ReadOutcome {
    Progress,
    WouldBlock,
}

impl Transport for TcpTransport {
    async fn next_frame(&mut self) -> Result<Incoming, TransportError> {
        loop {
            if let Some(frame) = self.frames.pop_front() {
                if self.frames.is_empty() {
                    // Usually empty between reads: keep no capacity while idle.
                    self.frames = VecDeque::new();
                }
                return Ok(match frame {
                    Frame::StreamOpen(header) => Incoming::Open(header),
                    Frame::Element(el) => Incoming::Element(el),
                    Frame::StreamClose => Incoming::Close,
                });
            }
            self.fill().await?;
        }
    }

    async fn open_stream(&mut self, id: &str, from: &str) -> io::Result<()> {
        let header = format!(
            "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' id='{}' from='{}' version='1.0' xml:lang='en'>",
            ns::CLIENT,
            ns::STREAM,
            crate::xml::escape_attr(id),
            crate::xml::escape_attr(from),
        );
        self.send(&[header.as_bytes()]).await
    }

    async fn send(&mut self, elements: &[&[u8]]) -> io::Result<()> {
        if let [single] = elements {
            self.socket.write_all(single).await?;
        } else {
            self.write_buf.clear();
            for el in elements {
                self.write_buf.extend_from_slice(el);
            }
            self.socket.write_all(&self.write_buf).await?;
            if self.write_buf.capacity() > 64 * 1024 {
                self.write_buf = Vec::new();
            }
        }
        self.socket.flush().await
    }

    async fn close_stream(&mut self) -> io::Result<()> {
        self.socket.write_all(b"</stream:stream>").await?;
        self.socket.flush().await?;
        self.socket.shutdown().await
    }

    fn stream_prefix_declaration(&self) -> &'static str {
        ""
    }

    fn can_starttls(&self) -> bool {
        matches!(self.socket, Socket::Plain(_))
    }

    async fn starttls(&mut self) -> io::Result<()> {
        let Socket::Plain(tcp) = std::mem::replace(&mut self.socket, Socket::Upgrading) else {
            return Err(io::ErrorKind::Unsupported.into());
        };
        let stream = self.tls.starttls.accept(tcp).await?;
        self.socket = Socket::Tls(Box::new(stream));
        self.restart();
        Ok(())
    }

    fn is_secure(&self) -> bool {
        matches!(self.socket, Socket::Tls(_))
    }

    fn channel_bindings(&self) -> ChannelBindings {
        let Socket::Tls(stream) = &self.socket else {
            return ChannelBindings::none();
        };
        let conn = stream.get_ref().1;
        ChannelBindings::from_tls(conn, Some(&self.tls.leaf_der))
    }

    fn restart(&mut self) {
        self.parser.reset();
        self.frames.clear();
    }

    fn peer(&self) -> SocketAddr {
        self.peer
    }
}
