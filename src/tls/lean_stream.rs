//! The server side of a TLS connection whose buffers exist only while data flows (issue 16).
//!
//! rustls' buffered connection (what tokio-rustls wraps) keeps a 4 kB receive buffer allocated
//! from the first record on, for the life of the connection: on an idle c2s session that was
//! more than a third of its memory. rustls' unbuffered API leaves the buffers to the caller, so
//! here the received bytes, the decrypted bytes not yet read and the encrypted bytes not yet
//! written each live in a `Vec` that is released as soon as it is drained.
//!
//! The unbuffered API has no `export_keying_material` and does not say which certificate it
//! served: both are learned while the handshake runs (see `handshake_capture`). The
//! `tls-exporter` channel binding is derived then and kept (32 bytes).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustls::server::UnbufferedServerConnection;
use rustls::sign::CertifiedKey;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
};
use rustls::{ProtocolVersion, ServerConfig, SupportedCipherSuite};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::handshake_capture::{self, Learned};
use crate::sasl::{TLS_EXPORTER_LABEL, TLS_EXPORTER_LEN};

/// Bytes asked of the socket per read.
const READ_SIZE: usize = 4096;

/// The most received bytes held while a message is incomplete: a whole record (2^14 bytes of
/// ciphertext plus expansion and header) after the handshake; during it, a handshake message
/// up to the 64 kB rustls' own buffered connection allows, spread over records.
const MAX_RECORD: usize = 5 + (1 << 14) + 256;
const MAX_HANDSHAKE: usize = 0x1_0000 + MAX_RECORD;

/// Encrypted bytes waiting for the socket beyond which a write waits for them to go out.
const OUTGOING_HIGH_WATER: usize = 64 * 1024;

/// Where a call into rustls left the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// It needs more bytes from the peer.
    Read,
    /// Application data can be sent (and more bytes can be read).
    Traffic,
    /// Both sides sent close_notify.
    Closed,
}

pub struct LeanTlsStream {
    io: TcpStream,
    conn: UnbufferedServerConnection,
    /// Received TLS bytes rustls has not consumed yet (a partial record, mostly).
    incoming: Vec<u8>,
    /// Decrypted bytes the reader has not taken yet, from `plain_at` on.
    plain: Vec<u8>,
    plain_at: usize,
    /// Encrypted bytes for the socket, from `sent` on.
    outgoing: Vec<u8>,
    sent: usize,
    peer_closed: bool,
    /// `poll_shutdown` began: the next chance to send, close_notify goes.
    closing: bool,
    close_notify_queued: bool,
    tls_exporter: Option<[u8; TLS_EXPORTER_LEN]>,
    /// The certificate the resolver chose, when it is a `handshake_capture::RecordServed`.
    served: Option<Arc<CertifiedKey>>,
}

impl LeanTlsStream {
    /// The server's handshake on `io`, with `config`. Its key log must be
    /// `handshake_capture::ExporterSecretLog` for the `tls-exporter` binding to be known, and
    /// its resolver a `handshake_capture::RecordServed` for `take_served` to say anything.
    pub async fn accept(io: TcpStream, config: Arc<ServerConfig>) -> io::Result<LeanTlsStream> {
        let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let mut stream = LeanTlsStream {
            io,
            conn,
            incoming: Vec::new(),
            plain: Vec::new(),
            plain_at: 0,
            outgoing: Vec::new(),
            sent: 0,
            peer_closed: false,
            closing: false,
            close_notify_queued: false,
            tls_exporter: None,
            served: None,
        };
        std::future::poll_fn(|cx| stream.poll_handshake(cx)).await?;
        Ok(stream)
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let next = match self.process(None) {
                Ok((next, _)) => next,
                Err(e) => {
                    // The alert goes if the socket takes it now; the handshake failed anyway.
                    self.queue_alert();
                    let _ = self.poll_write_out(cx);
                    return Poll::Ready(Err(e));
                }
            };
            ready!(self.poll_write_out(cx))?;
            if next == Next::Closed || self.peer_closed {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            if !self.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            if ready!(self.poll_read_in(cx))? == 0 {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// The peer's certificate chain, end entity first, if it sent one.
    pub fn peer_certificates(&self) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }

    /// The certificate this connection was served (see `accept`); taken, not kept twice.
    pub fn take_served(&mut self) -> Option<Arc<CertifiedKey>> {
        self.served.take()
    }

    /// RFC 9266 `tls-exporter`: TLS 1.3 only (see `sasl::channel_binding`).
    pub fn tls_exporter(&self) -> Option<&[u8]> {
        self.tls_exporter.as_ref().map(|e| &e[..])
    }

    /// Runs rustls over the received bytes until it needs more of them or offers to send
    /// application data; encrypts `to_send` then. Returns where it stopped and how much of
    /// `to_send` was taken (all of it, or nothing).
    fn process(&mut self, mut to_send: Option<&[u8]>) -> io::Result<(Next, usize)> {
        let mut taken = 0;
        loop {
            let (conn, incoming) = (&mut self.conn, &mut self.incoming);
            let (status, learned) = handshake_capture::capture(move || {
                let (conn, incoming) = (conn, incoming);
                conn.process_tls_records(incoming)
            });
            let UnbufferedStatus { mut discard, state } = status;
            let next = match state.map_err(tls_error)? {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record.map_err(tls_error)?;
                        discard += record.discard;
                        if self.plain_at == self.plain.len() {
                            self.plain.clear();
                            self.plain_at = 0;
                        }
                        self.plain.extend_from_slice(record.payload);
                    }
                    None
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    append_sized(&mut self.outgoing, |buf| encoded(encode.encode(buf)))?;
                    None
                }
                // What was encoded is in `outgoing`, which goes out in order before anything
                // encrypted later: as good as sent, as far as rustls is concerned.
                ConnectionState::TransmitTlsData(transmit) => {
                    transmit.done();
                    None
                }
                ConnectionState::BlockedHandshake => Some(Next::Read),
                ConnectionState::WriteTraffic(mut traffic) => {
                    if let Some(data) = to_send.take() {
                        // Bounded, so a large write is encrypted and sent in parts.
                        let data = &data[..data.len().min(OUTGOING_HIGH_WATER)];
                        append_sized(&mut self.outgoing, |buf| {
                            encrypted(traffic.encrypt(data, buf))
                        })?;
                        taken = data.len();
                    }
                    if self.closing && !self.close_notify_queued {
                        append_sized(&mut self.outgoing, |buf| {
                            encrypted(traffic.queue_close_notify(buf))
                        })?;
                        self.close_notify_queued = true;
                    }
                    Some(Next::Traffic)
                }
                ConnectionState::PeerClosed => {
                    self.peer_closed = true;
                    None
                }
                ConnectionState::Closed => {
                    self.peer_closed = true;
                    Some(Next::Closed)
                }
                // No early data is accepted (`max_early_data_size` stays 0), and the API may grow.
                other => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("unexpected TLS state {other:?}"),
                    ))
                }
            };
            self.incoming.drain(..discard);
            let Learned {
                exporter_secret,
                served,
            } = learned;
            if let Some(secret) = exporter_secret {
                self.tls_exporter = exporter_from(&self.conn, &secret);
            }
            if served.is_some() {
                self.served = served;
            }
            if let Some(next) = next {
                return Ok((next, taken));
            }
        }
    }

    /// After rustls failed the connection: the alert it queued, to tell the peer why.
    fn queue_alert(&mut self) {
        let status = self.conn.process_tls_records(&mut []);
        if let Ok(ConnectionState::EncodeTlsData(mut encode)) = status.state {
            let _ = append_sized(&mut self.outgoing, |buf| encoded(encode.encode(buf)));
        }
    }

    /// Reads once from the socket into `incoming`; the number of bytes (0 at end of stream).
    fn poll_read_in(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let limit = if self.conn.is_handshaking() {
            MAX_HANDSHAKE
        } else {
            MAX_RECORD + READ_SIZE
        };
        if self.incoming.len() >= limit {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "TLS message too large",
            )));
        }
        let at = self.incoming.len();
        self.incoming.resize(at + READ_SIZE.min(limit - at), 0);
        let mut buf = ReadBuf::new(&mut self.incoming[at..]);
        let poll = Pin::new(&mut self.io).poll_read(cx, &mut buf);
        let filled = buf.filled().len();
        self.incoming.truncate(at + filled);
        self.release_idle_buffers();
        ready!(poll)?;
        Poll::Ready(Ok(filled))
    }

    /// Writes what `outgoing` holds; ready once it is all out.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.outgoing[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.outgoing = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// An idle connection holds no buffer: what drained gives its room back.
    fn release_idle_buffers(&mut self) {
        if self.incoming.is_empty() && self.incoming.capacity() > 0 {
            self.incoming = Vec::new();
        }
        if self.plain_at == self.plain.len() && self.plain.capacity() > 0 {
            self.plain = Vec::new();
            self.plain_at = 0;
        }
    }
}

impl AsyncRead for LeanTlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.plain_at < this.plain.len() {
                let n = buf.remaining().min(this.plain.len() - this.plain_at);
                buf.put_slice(&this.plain[this.plain_at..this.plain_at + n]);
                this.plain_at += n;
                this.release_idle_buffers();
                return Poll::Ready(Ok(()));
            }
            if this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            // Handshake messages (a key update's answer) or alerts rustls produced while
            // reading go out first; if the socket is full, reading goes on meanwhile.
            if let Poll::Ready(Err(e)) = this.poll_write_out(cx) {
                return Poll::Ready(Err(e));
            }
            if ready!(this.poll_read_in(cx))? == 0 {
                // The peer closed TCP without close_notify: the end of the stream all the same
                // (the XML stream above decides whether it was complete).
                this.peer_closed = true;
                return Poll::Ready(Ok(()));
            }
            this.process(None)?;
            this.release_idle_buffers();
        }
    }
}

impl AsyncWrite for LeanTlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.outgoing.len() - this.sent >= OUTGOING_HIGH_WATER {
            ready!(this.poll_write_out(cx))?;
        }
        let (next, taken) = this.process(Some(data))?;
        if next != Next::Traffic {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        }
        // Started now, finished by the caller's flush.
        if let Poll::Ready(Err(e)) = this.poll_write_out(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(taken))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_notify_queued {
            this.closing = true;
            this.process(None)?;
        }
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// `tls-exporter` from the exporter master secret. TLS 1.3 only: RFC 9266 §3 forbids it with
/// TLS 1.2 and earlier, where without the extended master secret the exporter is not unique to
/// the session.
fn exporter_from(
    conn: &UnbufferedServerConnection,
    secret: &[u8],
) -> Option<[u8; TLS_EXPORTER_LEN]> {
    if conn.protocol_version() != Some(ProtocolVersion::TLSv1_3) {
        return None;
    }
    let Some(SupportedCipherSuite::Tls13(suite)) = conn.negotiated_cipher_suite() else {
        return None;
    };
    let hash = suite.common.hash_provider.algorithm();
    let value = handshake_capture::export(hash, secret, TLS_EXPORTER_LABEL, TLS_EXPORTER_LEN)?;
    value.try_into().ok()
}

/// Why `append_sized`'s writer did not write.
enum Sized {
    Need(InsufficientSizeError),
    Fail(io::Error),
}

fn encoded(result: Result<usize, EncodeError>) -> Result<usize, Sized> {
    match result {
        Ok(n) => Ok(n),
        Err(EncodeError::InsufficientSize(e)) => Err(Sized::Need(e)),
        Err(e) => Err(Sized::Fail(io::Error::other(e.to_string()))),
    }
}

fn encrypted(result: Result<usize, EncryptError>) -> Result<usize, Sized> {
    match result {
        Ok(n) => Ok(n),
        Err(EncryptError::InsufficientSize(e)) => Err(Sized::Need(e)),
        Err(e) => Err(Sized::Fail(io::Error::other(e.to_string()))),
    }
}

/// Appends to `out` what `write` writes into a slice, growing it to the size `write` asks for.
fn append_sized(
    out: &mut Vec<u8>,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Sized>,
) -> io::Result<()> {
    let at = out.len();
    let written = match write(&mut []) {
        Ok(n) => n,
        Err(Sized::Need(need)) => {
            out.resize(at + need.required_size, 0);
            match write(&mut out[at..]) {
                Ok(n) => n,
                Err(Sized::Need(_)) => return Err(io::Error::other("TLS output size changed")),
                Err(Sized::Fail(e)) => return Err(e),
            }
        }
        Err(Sized::Fail(e)) => return Err(e),
    };
    out.truncate(at + written);
    Ok(())
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::client::TlsStream as ClientTls;

    use super::*;

    /// A server stream on loopback after STARTTLS-style acceptance with `localhost`'s
    /// configuration, and a tokio-rustls client that trusts it, limited to `versions`.
    async fn pair(
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> (LeanTlsStream, ClientTls<TcpStream>) {
        let tls = crate::tls::tests::context(&[("localhost", None)]);
        let (config, served) = tls.starttls("localhost");
        let client = client_config(crate::tls::leaf_der(&served), versions);
        connect(config, client, "localhost").await
    }

    /// A client configuration that trusts only `leaf`.
    fn client_config(
        leaf: &[u8],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(leaf.to_vec().into()).expect("root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    /// A client for `name` against a server accepting with `config`, on loopback.
    async fn connect(
        config: Arc<ServerConfig>,
        client: Arc<rustls::ClientConfig>,
        name: &'static str,
    ) -> (LeanTlsStream, ClientTls<TcpStream>) {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let tcp = TcpStream::connect(listener.local_addr().expect("addr"));
        let (tcp, accepted) = tokio::join!(tcp, listener.accept());
        let name = rustls::pki_types::ServerName::try_from(name).expect("name");
        let connect = tokio_rustls::TlsConnector::from(client).connect(name, tcp.expect("tcp"));
        let accept = LeanTlsStream::accept(accepted.expect("accept").0, config);
        let (server, client) = tokio::join!(accept, connect);
        (
            server.expect("server handshake"),
            client.expect("client handshake"),
        )
    }

    /// Both ways: a short message and one far larger than a record and than the high water
    /// mark, so records split across reads and writes go out in parts.
    async fn exchange(server: &mut LeanTlsStream, client: &mut ClientTls<TcpStream>) {
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let send = async {
            client.write_all(b"<stream>").await.expect("client write");
            client.write_all(&big).await.expect("client write");
            client.flush().await.expect("client flush");
        };
        let receive = async {
            let mut got = vec![0; 8 + big.len()];
            server.read_exact(&mut got).await.expect("server read");
            got
        };
        let ((), got) = tokio::join!(send, receive);
        assert_eq!(&got[..8], b"<stream>");
        assert!(got[8..] == big[..]);

        let send = async {
            server
                .write_all(b"<features/>")
                .await
                .expect("server write");
            server.write_all(&big).await.expect("server write");
            server.flush().await.expect("server flush");
        };
        let receive = async {
            let mut got = vec![0; 11 + big.len()];
            client.read_exact(&mut got).await.expect("client read");
            got
        };
        let ((), got) = tokio::join!(send, receive);
        assert_eq!(&got[..11], b"<features/>");
        assert!(got[11..] == big[..]);
    }

    /// Whether the server, polled for more data that has not come, holds any buffer.
    fn holds_a_buffer_while_waiting(server: &mut LeanTlsStream) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let mut space = [0u8; 64];
        let mut buf = ReadBuf::new(&mut space);
        assert!(Pin::new(&mut *server)
            .poll_read(&mut cx, &mut buf)
            .is_pending());
        server.incoming.capacity() + server.plain.capacity() + server.outgoing.capacity() > 0
    }

    #[tokio::test]
    async fn carries_data_both_ways_and_holds_no_buffer_while_idle() {
        let (mut server, mut client) = pair(&[&rustls::version::TLS13]).await;
        assert!(!holds_a_buffer_while_waiting(&mut server));
        exchange(&mut server, &mut client).await;
        assert!(!holds_a_buffer_while_waiting(&mut server));
    }

    /// The exporter derived from the logged secret is the one rustls' client computes: what
    /// SCRAM-*-PLUS with tls-exporter compares on both ends.
    #[tokio::test]
    async fn tls_exporter_matches_the_clients() {
        let (server, client) = pair(&[&rustls::version::TLS13]).await;
        let expected = client
            .get_ref()
            .1
            .export_keying_material(vec![0; TLS_EXPORTER_LEN], TLS_EXPORTER_LABEL, None)
            .expect("client exporter");
        assert_eq!(server.tls_exporter(), Some(&expected[..]));
    }

    /// Direct TLS (XEP-0368): the certificate is the one SNI names, and the stream says which
    /// it was, on a full handshake and on a resumed one, for tls-server-end-point.
    #[tokio::test]
    async fn direct_tls_tells_the_certificate_sni_chose() {
        let tls = crate::tls::tests::context(&[("localhost", None), ("b.example", None)]);
        let b_der = tls.leaf_der(Some("b.example"));
        assert_ne!(b_der, tls.leaf_der(None));
        let client = client_config(&b_der, &[&rustls::version::TLS13]);
        for expected in [rustls::HandshakeKind::Full, rustls::HandshakeKind::Resumed] {
            let (mut server, mut client) =
                connect(tls.direct.clone(), client.clone(), "b.example").await;
            assert_eq!(client.get_ref().1.handshake_kind(), Some(expected));
            let served = server.take_served().expect("served certificate");
            assert_eq!(crate::tls::leaf_der(&served), &b_der[..]);
            assert!(server.tls_exporter().is_some());
            // The client takes its tickets with the first data it reads.
            server.write_all(b"x").await.expect("write");
            server.flush().await.expect("flush");
            client.read_exact(&mut [0]).await.expect("read");
        }
    }

    /// RFC 9266 §3: no tls-exporter on TLS 1.2; the stream works all the same.
    #[tokio::test]
    async fn tls12_has_no_exporter_and_carries_data() {
        let (mut server, mut client) = pair(&[&rustls::version::TLS12]).await;
        assert_eq!(server.tls_exporter(), None);
        exchange(&mut server, &mut client).await;
    }

    /// Shutdown sends close_notify: the client sees a clean end, not a truncation.
    #[tokio::test]
    async fn shutdown_sends_close_notify_and_a_peers_is_the_end() {
        let (mut server, mut client) = pair(&[&rustls::version::TLS13]).await;
        server.shutdown().await.expect("shutdown");
        let mut rest = Vec::new();
        client
            .read_to_end(&mut rest)
            .await
            .expect("clean end of stream");
        assert!(rest.is_empty());

        let (mut server, mut client) = pair(&[&rustls::version::TLS13]).await;
        client.shutdown().await.expect("client shutdown");
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.expect("end of stream");
        assert!(rest.is_empty());
    }

    /// Bytes that are no TLS: the handshake fails with an error, nothing panics.
    #[tokio::test]
    async fn garbage_fails_the_handshake() {
        let tls = crate::tls::tests::context(&[("localhost", None)]);
        let (config, _) = tls.starttls("localhost");
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let tcp = TcpStream::connect(listener.local_addr().expect("addr"));
        let (tcp, accepted) = tokio::join!(tcp, listener.accept());
        let mut tcp = tcp.expect("tcp");
        tcp.write_all(b"<stream:stream xmlns='jabber:client'>\r\n\r\n")
            .await
            .expect("write");
        let accept = LeanTlsStream::accept(accepted.expect("accept").0, config);
        let error = accept.await.err().expect("no handshake from garbage");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }
}
