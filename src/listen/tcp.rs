//! TCP c2s: port 5222 (STARTTLS, RFC 6120) and port 5223 (direct TLS, XEP-0368). Bytes in,
//! frames out; everything else happens in `stream::c2s`.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info_span, warn, Instrument};

use crate::sasl::ChannelBindings;
use crate::stream::c2s;
use crate::stream::context::StreamContext;
use crate::stream::transport::{Incoming, Read, Transport, TransportError};
use crate::tls::lean_stream::LeanTlsStream;
use crate::tls::TlsContext;
use crate::xml::{ns, Frame, StreamParser, XmlLimits};

use super::admission::{self, Answer, Permit};
use super::byte_stream;
use super::ListenContext;

/// Accepts connections until the listener fails; each connection is its own task.
pub async fn serve(listener: TcpListener, ctx: Arc<ListenContext>, direct_tls: bool) {
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
        let answer = if direct_tls {
            Answer::Nothing
        } else {
            Answer::Xmpp {
                domain: &ctx.streams.config.domain,
            }
        };
        let permit = match ctx.admission.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(refusal) => {
                debug!(%peer, %refusal, "connection refused");
                admission::turn_away(socket, &refusal, answer);
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let span = info_span!("c2s", %peer, transport = if direct_tls { "tls" } else { "tcp" }, jid = tracing::field::Empty);
        let task = connection(socket, peer, ctx.streams.clone(), permit, direct_tls);
        tokio::spawn(task.instrument(span));
    }
}

/// One accepted connection, from the TLS handshake (on the direct TLS port) to its end: the
/// task every client holds for as long as it is connected, so its size is counted (see the
/// tests below).
async fn connection(
    socket: TcpStream,
    peer: SocketAddr,
    ctx: Arc<StreamContext>,
    permit: Permit,
    direct_tls: bool,
) {
    let Some(tls) = ctx.tls.clone() else {
        warn!("no TLS context; refusing connection");
        return;
    };
    let (socket, served) = if direct_tls {
        // Part of the negotiation: a peer that never finishes the handshake must not hold
        // the task and the socket past the negotiation deadline. Boxed: only the
        // handshake needs it.
        let timeout = Duration::from_secs(ctx.config.c2s.negotiation_timeout_secs);
        let handshake = Box::pin(LeanTlsStream::accept(socket, tls.direct.clone()));
        match tokio::time::timeout_at(permit.deadline(timeout), handshake).await {
            Ok(Ok(mut stream)) => {
                // The resolver always chooses one; the main domain's is the fallback it uses.
                let served = stream
                    .take_served()
                    .unwrap_or_else(|| tls.certificate(None));
                (Socket::Tls(Box::new(stream)), Some(served))
            }
            Ok(Err(e)) => {
                debug!(error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                debug!("TLS handshake timed out");
                return;
            }
        }
    } else {
        (Socket::Plain(socket), None)
    };
    let limits = ctx.config.c2s.xml_limits();
    let transport = TcpTransport::new(socket, served, peer, tls, limits);
    c2s::run(transport, ctx, permit).await;
}

enum Socket {
    Plain(TcpStream),
    /// Direct TLS, or after STARTTLS: a stream that holds no buffer while idle (see
    /// `tls::lean_stream`).
    Tls(Box<LeanTlsStream>),
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
    /// The certificate this connection's TLS handshake was served, for tls-server-end-point.
    served: Option<Arc<CertifiedKey>>,
    peer: SocketAddr,
    /// Several elements joined for one write; our stream header while `header_unsent`.
    write_buf: Vec<u8>,
    /// Our stream header waits in `write_buf` for what follows it (the features, or a stream
    /// error), so that both go out in one write and, over TLS, one record: a login restarts
    /// the stream three times, and each write costs a system call on both ends.
    header_unsent: bool,
    /// Bytes read from the client so far, after TLS (see `Transport::bytes_read`).
    read: u64,
    /// Came through the direct TLS listener (TLS before the first byte of XML).
    direct_tls: bool,
}

impl TcpTransport {
    fn new(
        socket: Socket,
        served: Option<Arc<CertifiedKey>>,
        peer: SocketAddr,
        tls: Arc<TlsContext>,
        limits: XmlLimits,
    ) -> Self {
        TcpTransport {
            // Only direct TLS has a certificate served before the stream starts.
            direct_tls: served.is_some(),
            socket,
            parser: StreamParser::new(limits),
            frames: VecDeque::new(),
            tls,
            served,
            peer,
            write_buf: Vec::new(),
            header_unsent: false,
            read: 0,
        }
    }

    /// Sends a stream header that is still waiting, before the connection waits for the peer
    /// or changes hands: it must never wait for an answer to a header it did not get.
    async fn send_unsent_header(&mut self) -> io::Result<()> {
        if self.header_unsent {
            self.send(&[]).await?;
        }
        Ok(())
    }

    /// Waits for data and parses it until at least one frame is complete (true), or until a
    /// poll has read bytes that completed none and the task has yielded once since (false):
    /// so at most one poll's reads go by without the caller seeing them.
    async fn fill(&mut self) -> Result<bool, TransportError> {
        let start = self.read;
        let mut yielded_after_reading = false;
        std::future::poll_fn(|cx| {
            if yielded_after_reading {
                return Poll::Ready(Ok(false));
            }
            let poll = byte_stream::poll_frames(
                cx,
                &mut self.socket,
                &mut self.parser,
                &mut self.frames,
                &mut self.read,
            );
            match poll {
                Poll::Ready(result) => Poll::Ready(result.map(|()| true)),
                Poll::Pending => {
                    yielded_after_reading = self.read > start;
                    Poll::Pending
                }
            }
        })
        .await
    }
}

impl Transport for TcpTransport {
    async fn next_frame(&mut self) -> Result<Read, TransportError> {
        self.send_unsent_header().await?;
        loop {
            if let Some(frame) = self.frames.pop_front() {
                if self.frames.is_empty() {
                    // Usually empty between reads: keep no capacity while idle.
                    self.frames = VecDeque::new();
                }
                return Ok(Read::Frame(match frame {
                    Frame::StreamOpen(header) => Incoming::Open(header),
                    Frame::Element(el) => Incoming::Element(el),
                    Frame::StreamClose => Incoming::Close,
                }));
            }
            if !self.fill().await? {
                return Ok(Read::Partial);
            }
        }
    }

    async fn open_stream(&mut self, id: &str, from: &str) -> io::Result<()> {
        let header = crate::xml::stream_error::header(ns::CLIENT, id, from);
        self.write_buf = header.into_bytes();
        self.header_unsent = true;
        Ok(())
    }

    async fn send(&mut self, elements: &[&[u8]]) -> io::Result<()> {
        match elements {
            [single] if !self.header_unsent => self.socket.write_all(single).await?,
            _ => {
                if !self.header_unsent {
                    self.write_buf.clear();
                }
                for el in elements {
                    self.write_buf.extend_from_slice(el);
                }
                self.socket.write_all(&self.write_buf).await?;
                // The header's buffer is not kept: it was written during the negotiation,
                // and the session that follows may idle for hours.
                if self.header_unsent || self.write_buf.capacity() > 64 * 1024 {
                    self.write_buf = Vec::new();
                }
                self.header_unsent = false;
            }
        }
        self.socket.flush().await
    }

    async fn close_stream(&mut self) -> io::Result<()> {
        self.send_unsent_header().await?;
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

    async fn starttls(&mut self, domain: &str) -> io::Result<()> {
        self.send_unsent_header().await?;
        let Socket::Plain(tcp) = std::mem::replace(&mut self.socket, Socket::Upgrading) else {
            return Err(io::ErrorKind::Unsupported.into());
        };
        let (config, served) = self.tls.starttls(domain);
        let stream = Box::pin(LeanTlsStream::accept(tcp, config)).await?;
        self.served = Some(served);
        self.socket = Socket::Tls(Box::new(stream));
        // Plaintext that came with <starttls/> (parsed frames, a partial one) is dropped here,
        // never read as if it had come over TLS: the STARTTLS command injection of
        // CVE-2011-0411 and its kin. tests/connection_limits.rs guards it.
        self.restart();
        Ok(())
    }

    fn is_secure(&self) -> bool {
        matches!(self.socket, Socket::Tls(_))
    }

    fn metrics_kind(&self) -> crate::metrics::Transport {
        match self.direct_tls {
            true => crate::metrics::Transport::Tls,
            false => crate::metrics::Transport::Tcp,
        }
    }

    fn channel_bindings(&self) -> ChannelBindings {
        let leaf = self.served.as_deref().map(crate::tls::leaf_der);
        match &self.socket {
            Socket::Tls(stream) => ChannelBindings::from_parts(stream.tls_exporter(), leaf),
            Socket::Plain(_) | Socket::Upgrading => ChannelBindings::none(),
        }
    }

    fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        match &self.socket {
            Socket::Tls(stream) => stream.peer_certificates(),
            Socket::Plain(_) | Socket::Upgrading => None,
        }
    }

    fn restart(&mut self) {
        self.parser.reset();
        self.frames.clear();
    }

    fn peer(&self) -> SocketAddr {
        self.peer
    }

    fn bytes_read(&self) -> u64 {
        self.read
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpSocket;

    use super::*;

    const OPEN: &str = "<stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

    /// The size of what `f` would return, without calling it: the size of a future type that
    /// cannot be named, with no server needed to build one.
    fn size_of_return<A, R>(_: impl FnOnce(A) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// Every connected client holds this task for as long as it stays (issue 16): its future's
    /// size is part of what each idle session costs. It was 6.9 kB in a release build, most of
    /// it for states a session is rarely in (ending it, the goodbye) and a second copy of the
    /// transport kept as the argument of an async function; the wait of a bound session needs
    /// much less: about 2 kB in both a release and a test build now.
    #[test]
    fn a_connections_task_holds_little_while_it_waits() {
        type Args = (TcpStream, SocketAddr, Arc<StreamContext>, Permit, bool);
        let task = size_of_return(|(socket, peer, ctx, permit, direct): Args| {
            connection(socket, peer, ctx, permit, direct)
        });
        let transport = std::mem::size_of::<TcpTransport>();
        eprintln!("connection task: {task} bytes, of which the transport is {transport}");
        assert!(task <= TASK_BUDGET, "{task} bytes, budget {TASK_BUDGET}");
    }

    const TASK_BUDGET: usize = 2560;

    /// Issue 17: megabytes that complete no frame, all waiting in the socket buffer. The read
    /// loop once spun forever here: tokio's budget made every read return `Pending` while the
    /// socket still reported readable, and nothing else on the worker ran again.
    #[test]
    fn a_flood_that_completes_no_frame_lets_other_tasks_run() {
        let (events, seen) = mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(flood_while_another_task_waits(events));
        });
        let first = seen
            .recv_timeout(Duration::from_secs(30))
            .expect("the reader yields or finishes");
        assert_eq!(first, "other task ran");
        let second = seen.recv_timeout(Duration::from_secs(30)).expect("frame");
        assert_eq!(second, "frame after the flood");
    }

    async fn flood_while_another_task_waits(events: mpsc::Sender<&'static str>) {
        // Room in the kernel for the whole flood, so every read returns a full chunk.
        let listener = TcpSocket::new_v4().expect("socket");
        let _ = listener.set_recv_buffer_size(8 << 20);
        listener.bind(([127, 0, 0, 1], 0).into()).expect("bind");
        let listener = listener.listen(1).expect("listen");
        let client = TcpSocket::new_v4().expect("socket");
        let _ = client.set_send_buffer_size(8 << 20);
        let mut client = client
            .connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, peer) = listener.accept().await.expect("accept");

        let mut flood = OPEN.as_bytes().to_vec();
        flood.extend(std::iter::repeat_n(b' ', 3 << 20));
        flood.extend_from_slice(b"<presence/>");
        client.write_all(&flood).await.expect("flood");
        tokio::time::sleep(Duration::from_millis(200)).await;

        let tls = crate::tls::tests::context(&[("localhost", None)]);
        let mut transport = TcpTransport::new(
            Socket::Plain(server),
            None,
            peer,
            Arc::new(tls),
            XmlLimits::with_max_size(256 * 1024),
        );
        assert!(matches!(
            transport.next_frame().await,
            Ok(Read::Frame(Incoming::Open(_)))
        ));

        let reader_events = events.clone();
        let reader = tokio::spawn(async move {
            // The spaces come back as partial reads, each after a yield.
            while let Ok(read) = transport.next_frame().await {
                if let Read::Frame(Incoming::Element(_)) = read {
                    let _ = reader_events.send("frame after the flood");
                    break;
                }
            }
            drop(client);
        });
        tokio::spawn(async move {
            let _ = events.send("other task ran");
        });
        let _ = reader.await;
    }

    /// A plain transport over loopback, and the client's end of it.
    async fn plain_pair() -> (TcpTransport, TcpStream) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"));
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (server, peer) = accepted.expect("accept");
        let tls = crate::tls::tests::context(&[("localhost", None)]);
        let transport = TcpTransport::new(
            Socket::Plain(server),
            None,
            peer,
            Arc::new(tls),
            XmlLimits::with_max_size(256 * 1024),
        );
        (transport, client.expect("connect"))
    }

    /// What the client can read now, after giving anything sent time to arrive.
    async fn readable_now(client: &mut TcpStream) -> String {
        use tokio::io::AsyncReadExt;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut buf = vec![0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
            .await
            .expect("something was sent")
            .expect("read");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Issue 16: the header waits for the features, and both go in one write (one segment on
    /// loopback, so one read takes both), however long the features take to build.
    #[tokio::test]
    async fn the_stream_header_and_the_features_go_out_in_one_write() {
        let (mut transport, mut client) = plain_pair().await;
        transport
            .open_stream("id1", "localhost")
            .await
            .expect("open");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut early = [0u8; 64];
        let alone = client.try_read(&mut early);
        assert!(
            matches!(&alone, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "the header went out alone: {alone:?}"
        );
        transport
            .send(&[b"<stream:features/>"])
            .await
            .expect("send");
        let first = readable_now(&mut client).await;
        assert!(first.starts_with("<?xml"), "{first}");
        assert!(first.ends_with("<stream:features/>"), "{first}");
        // Nothing is kept for the session that follows.
        assert_eq!(transport.write_buf.capacity(), 0);
    }

    /// A header with nothing after it yet is still sent before the transport waits for the
    /// peer, which may be waiting for it; and before the stream closes.
    #[tokio::test]
    async fn a_waiting_header_goes_out_before_a_read_waits_and_before_the_close() {
        let (mut transport, mut client) = plain_pair().await;
        transport
            .open_stream("id2", "localhost")
            .await
            .expect("open");
        let read = tokio::time::timeout(Duration::from_millis(200), transport.next_frame()).await;
        assert!(read.is_err(), "the client sent nothing");
        let got = readable_now(&mut client).await;
        assert!(got.contains("id='id2'"), "{got}");

        transport
            .open_stream("id3", "localhost")
            .await
            .expect("open");
        transport.close_stream().await.expect("close");
        let got = readable_now(&mut client).await;
        assert!(got.contains("id='id3'"), "{got}");
        assert!(got.ends_with("</stream:stream>"), "{got}");
    }

    /// The stream's `to` chooses the certificate STARTTLS serves, and tls-server-end-point
    /// hashes that one, not the main domain's.
    #[tokio::test]
    async fn starttls_serves_and_binds_the_certificate_of_the_streams_domain() {
        use sha2::Digest;

        let tls = Arc::new(crate::tls::tests::context(&[
            ("localhost", None),
            ("b.example", None),
        ]));
        let b_der = tls.leaf_der(Some("b.example")).to_vec();
        assert_ne!(b_der, tls.leaf_der(None));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"));
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (server, peer) = accepted.expect("accept");
        let mut transport = TcpTransport::new(
            Socket::Plain(server),
            None,
            peer,
            tls,
            XmlLimits::with_max_size(256 * 1024),
        );
        // The client trusts b.example's certificate only.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(b_der.clone().into()).expect("root");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("b.example").expect("name");
        let connect =
            tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, client.expect("tcp"));
        let (upgraded, connected) = tokio::join!(transport.starttls("b.example"), connect);
        upgraded.expect("server side of the handshake");
        let _client = connected.expect("the client accepts b.example's certificate");
        assert_eq!(
            transport
                .channel_bindings()
                .get(crate::sasl::ChannelBindingType::TlsServerEndPoint),
            Some(sha2::Sha256::digest(&b_der).as_slice())
        );
    }
}
