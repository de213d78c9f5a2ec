//! The server side of a TLS connection whose buffers exist only while data flows (issue 16).
//!
//! rustls' buffered connection (what tokio-rustls wraps) keeps a 4 kB receive buffer allocated
//! from the first record on, for the life of the connection: on an idle c2s session that was
//! more than a third of its memory. rustls' unbuffered API leaves the buffers to the caller, so
//! here reads and writes go through buffers on the stack, and only what cannot be handed on at
//! once (a record that arrived in part, decrypted bytes the reader has no room for yet,
//! encrypted bytes the socket did not take) is kept on the heap, and freed once drained.
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

/// Writes up to this size are encrypted into a buffer on the stack of `STACK_OUT` bytes: one
/// record and its expansion, with room to spare for a handshake message rustls adds.
const STACK_PLAIN: usize = 4096;
const STACK_OUT: usize = STACK_PLAIN + 512;

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
            // TLS 1.3's session tickets, queued as the handshake ends, wait for the first
            // write and share its system call (or go out before the first read waits, see
            // `poll_read`): the client needs nothing more to finish. TLS 1.2's last flight
            // (the server's Finished) goes now, as the client waits for it.
            let tls13 = self.conn.protocol_version() == Some(ProtocolVersion::TLSv1_3);
            if tls13 && !self.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            ready!(self.poll_write_out(cx))?;
            if self.peer_closed {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            if !self.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            match ready!(self.poll_fill(cx, None)) {
                Ok(true) => {}
                Ok(false) => return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into())),
                Err(e) => return Poll::Ready(Err(self.fail(cx, e))),
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

    /// Runs rustls over `input` (received bytes, from the first it has not consumed) until it
    /// needs more of them or offers to send application data, and encrypts `to_send` then.
    /// Decrypted bytes go to `dest` while it has room, the rest to `plain`; bytes for the peer
    /// go to `out`. Returns where it stopped, how much of `input` it consumed, and how much of
    /// `to_send` it took.
    fn process(
        &mut self,
        input: &mut [u8],
        mut to_send: Option<&[u8]>,
        mut dest: Option<&mut ReadBuf<'_>>,
        out: &mut Out<'_>,
    ) -> io::Result<(Next, usize, usize)> {
        let mut consumed = 0;
        let mut taken = 0;
        loop {
            // Only the handshake reveals anything: past it, each record goes straight to
            // rustls, with no thread-local to clear and read.
            let handshaking = self.conn.is_handshaking();
            let (conn, rest) = (&mut self.conn, &mut input[consumed..]);
            let call = move || {
                let (conn, rest) = (conn, rest);
                conn.process_tls_records(rest)
            };
            let (status, learned) = if handshaking {
                handshake_capture::capture(call)
            } else {
                (call(), Learned::default())
            };
            let UnbufferedStatus { mut discard, state } = status;
            let next = match state.map_err(tls_error)? {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record.map_err(tls_error)?;
                        discard += record.discard;
                        let mut payload = record.payload;
                        // Straight to the reader, unless earlier bytes still wait in `plain`.
                        if let Some(dest) = dest.as_deref_mut() {
                            if self.plain_at == self.plain.len() {
                                let n = dest.remaining().min(payload.len());
                                dest.put_slice(&payload[..n]);
                                payload = &payload[n..];
                            }
                        }
                        if !payload.is_empty() {
                            if self.plain_at == self.plain.len() {
                                self.plain.clear();
                                self.plain_at = 0;
                            }
                            self.plain.extend_from_slice(payload);
                        }
                    }
                    None
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    out.append(&mut self.outgoing, |buf| encoded(encode.encode(buf)))?;
                    None
                }
                // What was encoded is in `out`, which goes out in order before anything
                // encrypted later: as good as sent, as far as rustls is concerned.
                ConnectionState::TransmitTlsData(transmit) => {
                    transmit.done();
                    None
                }
                ConnectionState::BlockedHandshake => Some(Next::Read),
                ConnectionState::WriteTraffic(mut traffic) => {
                    if let Some(data) = to_send.take() {
                        out.append(&mut self.outgoing, |buf| {
                            encrypted(traffic.encrypt(data, buf))
                        })?;
                        taken = data.len();
                    }
                    if self.closing && !self.close_notify_queued {
                        out.append(&mut self.outgoing, |buf| {
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
            consumed += discard;
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
                return Ok((next, consumed, taken));
            }
        }
    }

    /// `process` for a write: over the bytes kept from earlier reads (a record still
    /// incomplete), which rustls must be shown again whenever it is called.
    fn process_pending(
        &mut self,
        to_send: Option<&[u8]>,
        out: &mut Out<'_>,
    ) -> io::Result<(Next, usize)> {
        let mut incoming = std::mem::take(&mut self.incoming);
        let processed = self.process(&mut incoming, to_send, None, out);
        if let Ok((_, consumed, _)) = processed {
            incoming.drain(..consumed);
        }
        self.incoming = incoming;
        processed.map(|(next, _, taken)| (next, taken))
    }

    /// Reads once from the socket and runs rustls over what came, after what was left from
    /// before (see `process` for `dest`). False at the end of the stream.
    ///
    /// The common case, no partial record left from before, reads into a buffer on the stack:
    /// only a record that arrives in parts is kept on the heap until it is whole.
    fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        dest: Option<&mut ReadBuf<'_>>,
    ) -> Poll<io::Result<bool>> {
        if self.incoming.is_empty() {
            let mut chunk = [0u8; READ_SIZE];
            let mut buf = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
            let n = buf.filled().len();
            if n == 0 {
                return Poll::Ready(Ok(false));
            }
            let (_, consumed, _) = self.process(&mut chunk[..n], None, dest, &mut Out::heap())?;
            self.incoming.extend_from_slice(&chunk[consumed..n]);
            return Poll::Ready(Ok(true));
        }
        let limit = if self.conn.is_handshaking() {
            MAX_HANDSHAKE
        } else {
            MAX_RECORD + READ_SIZE
        };
        let at = self.incoming.len();
        if at >= limit {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "TLS message too large",
            )));
        }
        self.incoming.resize(at + READ_SIZE.min(limit - at), 0);
        let mut buf = ReadBuf::new(&mut self.incoming[at..]);
        let poll = Pin::new(&mut self.io).poll_read(cx, &mut buf);
        let n = buf.filled().len();
        self.incoming.truncate(at + n);
        ready!(poll)?;
        if n == 0 {
            return Poll::Ready(Ok(false));
        }
        let mut incoming = std::mem::take(&mut self.incoming);
        let processed = self.process(&mut incoming, None, dest, &mut Out::heap());
        if let Ok((_, consumed, _)) = processed {
            incoming.drain(..consumed);
        }
        self.incoming = if incoming.is_empty() {
            Vec::new()
        } else {
            incoming
        };
        processed.map(|_| true).into()
    }

    /// After rustls failed the connection: sends the alert it queued if the socket takes it
    /// now (the connection is over either way) and gives the error back.
    fn fail(&mut self, cx: &mut Context<'_>, error: io::Error) -> io::Error {
        let status = self.conn.process_tls_records(&mut []);
        if let Ok(ConnectionState::EncodeTlsData(mut encode)) = status.state {
            let _ = append_sized(&mut self.outgoing, |buf| encoded(encode.encode(buf)));
            let _ = self.poll_write_out(cx);
        }
        error
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
}

impl AsyncRead for LeanTlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        loop {
            if this.plain_at < this.plain.len() {
                let n = buf.remaining().min(this.plain.len() - this.plain_at);
                buf.put_slice(&this.plain[this.plain_at..this.plain_at + n]);
                this.plain_at += n;
                if this.plain_at == this.plain.len() {
                    this.plain = Vec::new();
                    this.plain_at = 0;
                }
            }
            if buf.filled().len() > before || this.peer_closed || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            // Handshake messages (a key update's answer) or alerts rustls produced while
            // reading go out first; if the socket is full, reading goes on meanwhile.
            if let Poll::Ready(Err(e)) = this.poll_write_out(cx) {
                return Poll::Ready(Err(e));
            }
            match ready!(this.poll_fill(cx, Some(buf))) {
                Ok(true) => {}
                // The peer closed TCP without close_notify: the end of the stream all the
                // same (the XML stream above decides whether it was complete).
                Ok(false) => this.peer_closed = true,
                // A record that fails to decrypt, a protocol violation.
                Err(e) => return Poll::Ready(Err(this.fail(cx, e))),
            }
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
        // A stanza (the usual write) is encrypted on the stack and handed to the socket from
        // there; only what the socket does not take at once is kept.
        let mut stack = [0u8; STACK_OUT];
        let mut out = if this.outgoing.is_empty() && data.len() <= STACK_PLAIN {
            Out::stack(&mut stack)
        } else {
            Out::heap()
        };
        // Bounded, so a large write is encrypted and sent in parts.
        let data = &data[..data.len().min(OUTGOING_HIGH_WATER)];
        let (next, taken) = this.process_pending(Some(data), &mut out)?;
        if next != Next::Traffic {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        }
        let mut unsent = out.unspilled();
        while !unsent.is_empty() {
            match Pin::new(&mut this.io).poll_write(cx, unsent) {
                Poll::Ready(Ok(n)) if n > 0 => unsent = &unsent[n..],
                Poll::Ready(Ok(_)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            }
        }
        this.outgoing.extend_from_slice(unsent);
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
            this.process_pending(None, &mut Out::heap())?;
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

/// Where `process` puts bytes for the peer: a buffer on the stack while they fit, after what
/// `outgoing` holds otherwise (then the stack's bytes go there first, to keep their order).
struct Out<'a> {
    stack: &'a mut [u8],
    used: usize,
    spilled: bool,
}

impl<'a> Out<'a> {
    /// `outgoing` must be empty: the stack's bytes are older than anything written after.
    fn stack(stack: &'a mut [u8]) -> Self {
        Out {
            stack,
            used: 0,
            spilled: false,
        }
    }

    fn heap() -> Self {
        Out {
            stack: &mut [],
            used: 0,
            spilled: true,
        }
    }

    fn append(
        &mut self,
        heap: &mut Vec<u8>,
        mut write: impl FnMut(&mut [u8]) -> Result<usize, Unwritten>,
    ) -> io::Result<()> {
        if !self.spilled {
            match write(&mut self.stack[self.used..]) {
                Ok(n) => {
                    self.used += n;
                    return Ok(());
                }
                Err(Unwritten::Need(_)) => {
                    heap.extend_from_slice(&self.stack[..self.used]);
                    self.used = 0;
                    self.spilled = true;
                }
                Err(Unwritten::Fail(e)) => return Err(e),
            }
        }
        append_sized(heap, write)
    }

    /// What is on the stack, not yet handed to the socket.
    fn unspilled(&self) -> &[u8] {
        &self.stack[..self.used]
    }
}

/// Why `append_sized`'s writer did not write.
enum Unwritten {
    Need(InsufficientSizeError),
    Fail(io::Error),
}

fn encoded(result: Result<usize, EncodeError>) -> Result<usize, Unwritten> {
    match result {
        Ok(n) => Ok(n),
        Err(EncodeError::InsufficientSize(e)) => Err(Unwritten::Need(e)),
        Err(e) => Err(Unwritten::Fail(io::Error::other(e.to_string()))),
    }
}

fn encrypted(result: Result<usize, EncryptError>) -> Result<usize, Unwritten> {
    match result {
        Ok(n) => Ok(n),
        Err(EncryptError::InsufficientSize(e)) => Err(Unwritten::Need(e)),
        Err(e) => Err(Unwritten::Fail(io::Error::other(e.to_string()))),
    }
}

/// Appends to `out` what `write` writes into a slice, growing it to the size `write` asks for.
fn append_sized(
    out: &mut Vec<u8>,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Unwritten>,
) -> io::Result<()> {
    let at = out.len();
    let written = match write(&mut []) {
        Ok(n) => n,
        Err(Unwritten::Need(need)) => {
            out.resize(at + need.required_size, 0);
            match write(&mut out[at..]) {
                Ok(n) => n,
                Err(Unwritten::Need(_)) => return Err(io::Error::other("TLS output size changed")),
                Err(Unwritten::Fail(e)) => return Err(e),
            }
        }
        Err(Unwritten::Fail(e)) => return Err(e),
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
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
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
            // Reads smaller than a record, as the stream's reader does: the rest of each record
            // waits in `plain`.
            let mut got = Vec::new();
            let mut small = [0u8; 1000];
            while got.len() < 8 + big.len() {
                let n = server.read(&mut small).await.expect("server read");
                assert!(n > 0, "end of stream after {} bytes", got.len());
                got.extend_from_slice(&small[..n]);
            }
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

    /// Issue 16: TLS 1.3's session tickets wait for the server's first write and go out in
    /// the same system call (one read takes both), not in one of their own.
    #[tokio::test]
    async fn tls13_tickets_share_the_first_write() {
        let (mut server, client) = pair(&[&rustls::version::TLS13]).await;
        assert!(!server.outgoing.is_empty(), "the tickets wait");
        let mut tcp = client.into_inner().0;
        server.write_all(b"<stream>").await.expect("write");
        server.flush().await.expect("flush");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let mut buf = vec![0u8; 16 * 1024];
        let n = tcp.read(&mut buf).await.expect("read");
        // Records: the tickets' (handshake messages, one record or more, which look like
        // application data under TLS 1.3), then the stanza's.
        let mut records = 0;
        let mut at = 0;
        while at + 5 <= n {
            records += 1;
            at += 5 + usize::from(u16::from_be_bytes([buf[at + 3], buf[at + 4]]));
        }
        assert_eq!(at, n, "whole records");
        assert!(
            records >= 2,
            "tickets and the stanza in one read: {records} record(s)"
        );
        assert!(server.outgoing.is_empty());
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

    /// A record that does not decrypt after the handshake: the read fails with an error and
    /// the peer is told why (a fatal alert), nothing panics.
    #[tokio::test]
    async fn a_forged_record_ends_the_connection_with_an_alert() {
        let (mut server, mut client) = pair(&[&rustls::version::TLS13]).await;
        let mut forged = vec![23, 3, 3, 0, 40];
        forged.extend([0x5a; 40]);
        client
            .get_mut()
            .0
            .write_all(&forged)
            .await
            .expect("raw write");
        let mut buf = [0u8; 16];
        let error = server.read(&mut buf).await.expect_err("forged record");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        let alert = client.read(&mut buf).await.expect_err("the alert");
        assert!(alert.to_string().contains("BadRecordMac"), "{alert}");
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
