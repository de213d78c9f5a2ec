//! Hand-rolled XMPP client session: TCP, optional STARTTLS, SASL PLAIN,
//! resource binding, legacy session, initial presence.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::xml::{self, Ev, Splitter};

pub type Result<T> = std::result::Result<T, String>;

/// Plain TCP or TLS over TCP.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Certificate verifier that accepts anything: benchmarks run on loopback
/// against self-signed certificates, and verification cost is not ours to measure.
#[derive(Debug)]
struct AcceptAnyCert(Vec<SignatureScheme>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.clone()
    }
}

/// A TLS connector that accepts any certificate. Session resumption is off
/// unless `resume`, so every login pays a full handshake like a fresh client.
/// With `resume`, every login made through this connector shares one
/// [`TicketStore`]: a ticket from one login's handshake may resume another's.
pub fn tls_connector(resume: bool) -> Result<TlsConnector> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let schemes = provider
        .signature_verification_algorithms
        .supported_schemes();
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("rustls config: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(schemes)))
        .with_no_client_auth();
    cfg.resumption = if resume {
        rustls::client::Resumption::store(Arc::new(TicketStore::default()))
    } else {
        rustls::client::Resumption::disabled()
    };
    Ok(TlsConnector::from(Arc::new(cfg)))
}

/// TLS 1.3 tickets kept per server name.
const MAX_TICKETS: usize = 200_000;

/// The client's session store for `--tls-resume`. rustls' in-memory store
/// keeps 8 TLS 1.3 tickets per server name: all the tool's connections go to
/// one name, so with more logins in flight than that most would find none.
/// This one keeps up to [`MAX_TICKETS`] (each is used at most once, as a
/// ticket must be).
#[derive(Debug, Default)]
pub struct TicketStore {
    inner: std::sync::Mutex<TicketsByName>,
}

#[derive(Debug, Default)]
struct TicketsByName {
    kx_hint: std::collections::HashMap<ServerName<'static>, rustls::NamedGroup>,
    tls12: std::collections::HashMap<ServerName<'static>, rustls::client::Tls12ClientSessionValue>,
    tls13: std::collections::HashMap<
        ServerName<'static>,
        std::collections::VecDeque<rustls::client::Tls13ClientSessionValue>,
    >,
}

impl TicketStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, TicketsByName> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl rustls::client::ClientSessionStore for TicketStore {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: rustls::NamedGroup) {
        self.lock().kx_hint.insert(server_name, group);
    }
    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.lock().kx_hint.get(server_name).copied()
    }
    fn set_tls12_session(
        &self,
        server_name: ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        self.lock().tls12.insert(server_name, value);
    }
    fn tls12_session(
        &self,
        server_name: &ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.lock().tls12.get(server_name).cloned()
    }
    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.lock().tls12.remove(server_name);
    }
    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        let mut inner = self.lock();
        let tickets = inner.tls13.entry(server_name).or_default();
        // Full: the tickets already kept are the ones the next logins will use.
        if tickets.len() < MAX_TICKETS {
            tickets.push_back(value);
        }
    }
    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        // Oldest first: a measured login takes a ticket the priming pass left, as one of many
        // clients coming back would. Newest first would hand out the ticket the login just
        // before got, which a server that remembers only its latest sessions still knows.
        self.lock().tls13.get_mut(server_name)?.pop_front()
    }
}

/// Everything needed to log a user in. Clones share the TLS connector, and
/// with it the session store.
#[derive(Clone)]
pub struct LoginCfg {
    pub addr: SocketAddr,
    pub domain: String,
    pub password: String,
    pub resource: String,
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
    pub presence: bool,
    pub sources: SourceAddrs,
}

/// Loopback source addresses taken in turn (`--source-addrs`); clones share the turn.
#[derive(Clone)]
pub struct SourceAddrs {
    count: u8,
    next: Arc<AtomicUsize>,
}

impl SourceAddrs {
    pub fn new(count: u8) -> Self {
        SourceAddrs {
            count,
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The next source address (127.0.0.2 onwards), None when the kernel is to choose.
    fn next(&self) -> Option<IpAddr> {
        if self.count == 0 {
            return None;
        }
        let k = self.next.fetch_add(1, Ordering::Relaxed) % usize::from(self.count);
        // At most 127.0.1.0 (count 255): still loopback, all of 127.0.0.0/8 is.
        let first = u32::from(Ipv4Addr::new(127, 0, 0, 2));
        Some(IpAddr::V4(Ipv4Addr::from(first + k as u32)))
    }
}

async fn connect(addr: SocketAddr, sources: &SourceAddrs) -> io::Result<TcpStream> {
    let Some(source) = sources.next() else {
        return TcpStream::connect(addr).await;
    };
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}

/// One logged-in (or logging-in) client stream.
pub struct Session {
    pub stream: Stream,
    pub rbuf: Vec<u8>,
    pub split: Splitter,
    pub user: String,
    /// The first `<message type='error'>` received (a snippet), for the report.
    pub first_error: Option<String>,
    /// How the TLS handshake went: None without TLS, Some(true) if it resumed
    /// an earlier session.
    pub tls_resumed: Option<bool>,
}

const READ_CHUNK: usize = 4096;

impl Session {
    pub async fn send(&mut self, data: &[u8]) -> Result<()> {
        self.stream
            .write_all(data)
            .await
            .map_err(|e| format!("{}: write: {e}", self.user))?;
        self.stream
            .flush()
            .await
            .map_err(|e| format!("{}: flush: {e}", self.user))
    }

    /// Make room before a read into `rbuf`.
    pub fn prepare_read(&mut self) {
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
            self.rbuf.reserve(READ_CHUNK);
        }
    }

    /// Read once from the socket into `rbuf`; error on EOF.
    pub async fn read_more(&mut self) -> Result<usize> {
        self.prepare_read();
        match self.stream.read_buf(&mut self.rbuf).await {
            Ok(0) => Err(self.err("connection closed by server")),
            Ok(n) => Ok(n),
            Err(e) => Err(self.err(&format!("read: {e}"))),
        }
    }

    /// Next event from the buffered bytes (no I/O).
    pub fn poll_event(&mut self) -> Result<Option<Ev>> {
        let r = self.split.next(&self.rbuf);
        r.map_err(|e| self.err(&format!("XML: {e}")))
    }

    pub fn compact(&mut self) {
        self.split.compact(&mut self.rbuf);
    }

    /// Error with context: user and the last bytes received.
    pub fn err(&self, what: &str) -> String {
        let tail = &self.rbuf[self.rbuf.len().saturating_sub(300)..];
        if tail.is_empty() {
            format!("{}: {what}", self.user)
        } else {
            format!(
                "{}: {what} (last received: {})",
                self.user,
                xml::snippet(tail)
            )
        }
    }

    /// Wait for the next top-level stanza; stream errors and closes are errors.
    async fn next_stanza(&mut self, step: &str) -> Result<Range<usize>> {
        loop {
            match self.poll_event()? {
                Some(Ev::Open) => continue,
                Some(Ev::Close) => return Err(self.err(&format!("{step}: stream closed"))),
                Some(Ev::Stanza(r)) => {
                    let el = &self.rbuf[r.clone()];
                    if xml::name(el) == b"stream:error" || xml::local_name(el) == b"error" {
                        return Err(format!(
                            "{}: {step}: stream error: {}",
                            self.user,
                            xml::snippet(el)
                        ));
                    }
                    return Ok(r);
                }
                None => {
                    self.read_more()
                        .await
                        .map_err(|e| format!("{e} [during {step}]"))?;
                }
            }
        }
    }

    /// Send a stream header, then wait for the features; returns them (owned).
    async fn open_stream(&mut self, domain: &str, step: &str) -> Result<Vec<u8>> {
        self.rbuf.clear();
        self.split.reset();
        let header = format!(
            "<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' xml:lang='en' \
             xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        );
        self.send(header.as_bytes()).await?;
        let r = self.next_stanza(step).await?;
        let el = self.rbuf[r].to_vec();
        if xml::local_name(&el) != b"features" {
            return Err(format!(
                "{}: {step}: expected stream features, got {}",
                self.user,
                xml::snippet(&el)
            ));
        }
        self.compact();
        Ok(el)
    }
}

/// Log `user` in: returns the session (after bind and, if asked, initial
/// presence) and the time from TCP connect to that point.
pub async fn login(cfg: &LoginCfg, user: &str) -> Result<(Session, Duration)> {
    let t0 = Instant::now();
    let tcp = connect(cfg.addr, &cfg.sources)
        .await
        .map_err(|e| format!("{user}: connect {}: {e}", cfg.addr))?;
    tcp.set_nodelay(true)
        .map_err(|e| format!("{user}: set_nodelay: {e}"))?;
    let mut s = Session {
        stream: Stream::Plain(tcp),
        rbuf: Vec::with_capacity(READ_CHUNK),
        split: Splitter::default(),
        user: user.to_string(),
        first_error: None,
        tls_resumed: None,
    };
    let mut features = s.open_stream(&cfg.domain, "stream open").await?;

    if let Some((connector, name)) = &cfg.tls {
        if !xml::contains(&features, b"<starttls") {
            return Err(format!(
                "{user}: server does not offer STARTTLS: {}",
                xml::snippet(&features)
            ));
        }
        s.send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .await?;
        let r = s.next_stanza("starttls").await?;
        if xml::local_name(&s.rbuf[r]) != b"proceed" {
            return Err(s.err("starttls: no <proceed/>"));
        }
        s.compact();
        if !s.rbuf.is_empty() {
            return Err(s.err("starttls: data after <proceed/>"));
        }
        let Stream::Plain(tcp) = s.stream else {
            return Err(format!("{user}: starttls on a TLS stream"));
        };
        let tls = connector
            .connect(name.clone(), tcp)
            .await
            .map_err(|e| format!("{user}: TLS handshake: {e}"))?;
        s.tls_resumed =
            Some(tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed));
        s.stream = Stream::Tls(Box::new(tls));
        features = s.open_stream(&cfg.domain, "stream open after TLS").await?;
    }

    if !xml::contains(&features, b">PLAIN<") {
        return Err(format!(
            "{user}: server does not offer SASL PLAIN here: {}",
            xml::snippet(&features)
        ));
    }
    let creds = base64::engine::general_purpose::STANDARD
        .encode(format!("\0{user}\0{}", cfg.password).as_bytes());
    let auth =
        format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>");
    s.send(auth.as_bytes()).await?;
    let r = s.next_stanza("SASL").await?;
    match xml::local_name(&s.rbuf[r.clone()]) {
        b"success" => {}
        _ => {
            return Err(format!(
                "{user}: SASL PLAIN failed: {}",
                xml::snippet(&s.rbuf[r])
            ))
        }
    }
    s.compact();

    let features = s.open_stream(&cfg.domain, "stream restart").await?;
    if !xml::contains(&features, b"urn:ietf:params:xml:ns:xmpp-bind") {
        return Err(format!(
            "{user}: no resource binding offered: {}",
            xml::snippet(&features)
        ));
    }
    let bind = format!(
        "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
         <resource>{}</resource></bind></iq>",
        cfg.resource
    );
    s.send(bind.as_bytes()).await?;
    wait_iq_result(&mut s, b"b", "bind").await?;

    if legacy_session_required(&features) {
        s.send(
            b"<iq type='set' id='s'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>",
        )
        .await?;
        wait_iq_result(&mut s, b"s", "session").await?;
    }
    if cfg.presence {
        s.send(b"<presence/>").await?;
    }
    let dt = t0.elapsed();
    s.rbuf.shrink_to(READ_CHUNK);
    Ok((s, dt))
}

/// Skip stanzas until the iq with this id; it must be a result.
async fn wait_iq_result(s: &mut Session, id: &[u8], step: &str) -> Result<()> {
    loop {
        let r = s.next_stanza(step).await?;
        let el = &s.rbuf[r];
        if xml::name(el) == b"iq" && xml::attr(el, b"id") == Some(id) {
            if xml::attr(el, b"type") != Some(b"result") {
                return Err(format!("{}: {step} failed: {}", s.user, xml::snippet(el)));
            }
            s.compact();
            return Ok(());
        }
        s.compact();
    }
}

/// RFC 3921 session establishment: needed if advertised without `<optional/>`.
fn legacy_session_required(features: &[u8]) -> bool {
    let Some(i) = xml::find(features, b"urn:ietf:params:xml:ns:xmpp-session") else {
        return false;
    };
    // Element `<session .../>` or `<session ...>...</session>`.
    let rest = &features[i..];
    let Some(gt) = rest.iter().position(|&b| b == b'>') else {
        return false;
    };
    if gt > 0 && rest[gt - 1] == b'/' {
        return true;
    }
    let body_end = xml::find(rest, b"</").unwrap_or(rest.len());
    !xml::contains(&rest[..body_end], b"optional")
}

/// Answer what a server may ask an idle client (XEP-0199 ping) and report
/// message errors. Returns the number of `<message type='error'>` seen.
pub async fn handle_incoming(s: &mut Session) -> Result<u64> {
    let mut errors = 0;
    let mut replies: Vec<u8> = Vec::new();
    while let Some(ev) = s.poll_event()? {
        match ev {
            Ev::Open => {}
            Ev::Close => return Err(s.err("server closed the stream")),
            Ev::Stanza(r) => {
                let el = &s.rbuf[r];
                match xml::name(el) {
                    b"iq" => {
                        let t = xml::attr(el, b"type");
                        if t == Some(b"get") || t == Some(b"set") {
                            iq_reply(el, &mut replies);
                        }
                    }
                    b"message" if xml::attr(el, b"type") == Some(b"error") => {
                        errors += 1;
                        if s.first_error.is_none() {
                            // From <error>: the condition and text matter, not the body.
                            let at = xml::find(el, b"<error").unwrap_or(0);
                            let from = xml::attr(el, b"from").unwrap_or_default();
                            s.first_error = Some(format!(
                                "from {}: {}",
                                String::from_utf8_lossy(from),
                                xml::snippet(&el[at..])
                            ));
                        }
                    }
                    b"stream:error" => {
                        return Err(format!("{}: stream error: {}", s.user, xml::snippet(el)))
                    }
                    _ => {}
                }
            }
        }
    }
    s.compact();
    if !replies.is_empty() {
        s.send(&replies).await?;
    }
    Ok(errors)
}

/// Reply to an iq get/set: result for pings and roster pushes (RFC 6121
/// 2.1.6: a client acknowledges a push), service-unavailable otherwise.
pub fn iq_reply(el: &[u8], out: &mut Vec<u8>) {
    let id = String::from_utf8_lossy(xml::attr(el, b"id").unwrap_or_default()).into_owned();
    let from = xml::attr(el, b"from").map(|f| String::from_utf8_lossy(f).into_owned());
    let to = from.map(|f| format!(" to='{f}'")).unwrap_or_default();
    let roster_push =
        xml::attr(el, b"type") == Some(b"set") && xml::contains(el, b"jabber:iq:roster");
    if roster_push || xml::contains(el, b"urn:xmpp:ping") {
        out.extend_from_slice(format!("<iq type='result' id='{id}'{to}/>").as_bytes());
    } else {
        out.extend_from_slice(
            format!(
                "<iq type='error' id='{id}'{to}><error type='cancel'>\
                 <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
            )
            .as_bytes(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_session_detection() {
        assert!(!legacy_session_required(
            b"<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"
        ));
        assert!(legacy_session_required(b"<stream:features><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></stream:features>"));
        assert!(!legacy_session_required(b"<stream:features><session xmlns=\"urn:ietf:params:xml:ns:xmpp-session\"><optional/></session></stream:features>"));
        assert!(legacy_session_required(b"<stream:features><session xmlns='urn:ietf:params:xml:ns:xmpp-session'></session></stream:features>"));
    }

    #[test]
    fn ping_reply() {
        let mut out = Vec::new();
        iq_reply(
            b"<iq from='bench.test' type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>",
            &mut out,
        );
        assert_eq!(out, b"<iq type='result' id='p1' to='bench.test'/>");
    }

    #[test]
    fn roster_push_acknowledged() {
        let mut out = Vec::new();
        iq_reply(
            b"<iq type='set' id='push1'><query xmlns='jabber:iq:roster'><item jid='c1@bench.test' subscription='both'/></query></iq>",
            &mut out,
        );
        assert_eq!(out, b"<iq type='result' id='push1'/>");
        out.clear();
        iq_reply(
            b"<iq type='get' id='v1' from='bench.test'><query xmlns='jabber:iq:version'/></iq>",
            &mut out,
        );
        assert!(out.starts_with(b"<iq type='error' id='v1' to='bench.test'>"));
    }
}
