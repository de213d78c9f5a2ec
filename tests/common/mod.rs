//! Test support: an in-process server on ephemeral loopback ports, tokio-xmpp clients that
//! trust its certificate, and a raw client for behaviour a client library would hide.
#![allow(dead_code)]

pub mod adhoc;
pub mod cluster;
pub mod cluster_processes;
pub mod federation;
pub mod private_postgres;
pub mod register;
pub mod xmpp;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use corvid::config::Config;
use corvid::server::RunningServer;
use corvid::storage::{ScramHash, Storage};
use futures::{SinkExt, StreamExt};
use minidom::Element;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;
use tokio_xmpp::connect::ServerConnector;
use tokio_xmpp::parsers::starttls;
use tokio_xmpp::xmlstream::{
    initiate_stream, PendingFeaturesRecv, StreamHeader, Timeouts, XmppStreamElement,
};
use tokio_xmpp::{Client, Event};

pub const DOMAIN: &str = "localhost";

/// The storage key of a test account: `name` on the main test domain, or `name` itself when
/// it already names a domain.
pub fn account(name: &str) -> String {
    if name.contains('@') {
        name.to_owned()
    } else {
        format!("{name}@{DOMAIN}")
    }
}
pub const PASSWORD: &str = "secret-pw";

/// Creates the account `name` (see `account`) with SCRAM credentials for `password`.
pub async fn create_account(storage: &Storage, name: &str, password: &str) {
    let creds: Vec<_> = [ScramHash::Sha1, ScramHash::Sha256]
        .into_iter()
        .map(|h| corvid::sasl::derive_credentials(password, h, 4096).expect("derive"))
        .collect();
    storage
        .accounts
        .create_account(&account(name), &creds)
        .await
        .expect("create account");
}

/// `a` and `b` subscribed to each other, written straight to storage.
pub async fn subscribe_both(storage: &Storage, a: &str, b: &str) {
    for (user, contact) in [(a, b), (b, a)] {
        let mut item = corvid::storage::RosterItem::new(account(contact));
        item.subscription = corvid::storage::Subscription::Both;
        storage
            .roster
            .put_roster_item(&account(user), &item, 100)
            .await
            .expect("roster item");
    }
}
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub server: RunningServer,
    pub dir: tempfile::TempDir,
    pub cert_der: Vec<u8>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Starts a server on 127.0.0.1 ephemeral ports with a fresh SQLite file and certificate;
    /// `adjust` may change any setting first.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        Self::start_custom(adjust, |storage| storage).await
    }

    /// `start_with`, and `wrap` may put something in front of the opened storage (e.g. a
    /// store that delays reads, to make a race deterministic).
    pub async fn start_custom(
        adjust: impl FnOnce(&mut Config),
        wrap: impl FnOnce(Storage) -> Storage,
    ) -> TestServer {
        Self::start_full(adjust, wrap, Vec::new()).await
    }

    /// `start_custom`, with `extra` modules registered (e.g. an in-test component standing
    /// in for an outside service).
    pub async fn start_full(
        adjust: impl FnOnce(&mut Config),
        wrap: impl FnOnce(Storage) -> Storage,
        extra: Vec<Arc<dyn corvid::router::Module>>,
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::default();
        config.storage.url = format!("sqlite://{}", dir.path().join("corvid.db").display());
        config.tls.cert = dir.path().join("cert.pem");
        config.tls.key = dir.path().join("key.pem");
        let loopback = [127, 0, 0, 1].into();
        config.c2s.bind = loopback;
        config.c2s.port = 0;
        config.c2s.direct_tls_port = 0;
        config.http.bind = loopback;
        config.http.port = 0;
        config.http.tls_port = 0;
        // Suites open many connections from 127.0.0.1 at once; tests/connection_limits.rs
        // turns these on where they are the subject.
        config.limits.max_connections_per_address = 0;
        config.limits.connection_rate_per_address = 0;
        // Federation is off unless a test is about it (tests/federation*.rs): other domains
        // are then bounced at once instead of looked up in DNS.
        config.s2s.enabled = false;
        config.s2s.bind = loopback;
        config.s2s.port = 0;
        config.s2s.direct_tls_port = 0;
        config.control.socket = dir.path().join("corvid.sock");
        config.upload.directory = dir.path().join("uploads");
        config.metrics.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        adjust(&mut config);
        if std::env::var_os("CORVID_TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter("debug")
                .with_test_writer()
                .try_init();
        }
        let storage = Storage::open_with(&config.storage)
            .await
            .expect("storage opens");
        let server = corvid::server::start_with_modules(Arc::new(config), wrap(storage), extra)
            .await
            .expect("server starts");
        let cert_der = server
            .ctx
            .tls
            .as_ref()
            .map(|t| t.leaf_der(None).to_vec())
            .expect("tls context");
        TestServer {
            server,
            dir,
            cert_der,
        }
    }

    pub fn storage(&self) -> &Storage {
        self.server.ctx.router.storage()
    }

    pub async fn add_user(&self, name: &str) {
        self.add_user_with_password(name, PASSWORD).await
    }

    pub async fn add_user_with_password(&self, name: &str, password: &str) {
        create_account(self.storage(), name, password).await;
    }

    /// Both directions subscribed, written straight to storage.
    pub async fn make_mutual(&self, a: &str, b: &str) {
        subscribe_both(self.storage(), a, b).await;
    }

    /// Waits (without asserting anything about time) until the server has noticed the broken
    /// connection of `jid` and parked its session for resumption.
    pub async fn until_detached(&self, jid: &str) {
        let jid = jid::FullJid::new(jid).expect("full jid");
        for _ in 0..1000 {
            if self.server.ctx.router.is_detached(&jid) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{jid} never detached");
    }

    pub fn c2s(&self) -> SocketAddr {
        self.server.c2s_addr
    }

    pub fn direct_tls(&self) -> SocketAddr {
        self.server.direct_tls_addr.expect("direct TLS listener")
    }

    pub fn http(&self) -> SocketAddr {
        self.server.http_addr.expect("http listener")
    }

    pub fn tls_config(&self) -> Arc<ClientConfig> {
        pinned_tls_config(self.cert_der.clone(), vec![])
    }

    /// A tokio-xmpp client over STARTTLS; SASL with channel binding when `cb` is set.
    pub fn client(&self, user: &str, resource: &str, cb: bool) -> Client {
        self.client_via(user, resource, Mode::StartTls, cb)
    }

    pub fn client_via(&self, user: &str, resource: &str, mode: Mode, cb: bool) -> Client {
        let addr = match mode {
            Mode::StartTls => self.c2s(),
            Mode::DirectTls => self.direct_tls(),
        };
        let alpn = match mode {
            Mode::StartTls => vec![],
            Mode::DirectTls => vec![b"xmpp-client".to_vec()],
        };
        let connector = TestConnector {
            addr,
            tls: pinned_tls_config(self.cert_der.clone(), alpn),
            mode,
            channel_binding: cb,
        };
        let jid = jid::FullJid::new(&format!("{user}@{DOMAIN}/{resource}")).expect("jid");
        Client::new_with_connector(jid, PASSWORD, connector, Timeouts::tight())
    }

    pub fn config(&self) -> &Config {
        &self.server.ctx.config
    }

    /// DER of the leaf certificate in `domain`'s certificate file (a hosted domain's), read
    /// from disk rather than asked of the server, so that tests check what it serves.
    pub fn cert_der_of(&self, domain: &str) -> Vec<u8> {
        let host = self
            .config()
            .hosted_domains()
            .into_iter()
            .find(|h| h.domain == domain)
            .expect("a hosted domain");
        let pem = std::fs::read(&host.tls.cert).expect("certificate file");
        let first = rustls_pemfile::certs(&mut pem.as_slice())
            .next()
            .expect("a certificate")
            .expect("PEM");
        first.to_vec()
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("corvid.db")
    }
}

/// A server on a runtime of its own with a single worker thread. A connection that
/// monopolises a worker then hangs the server but not the test, which fails on its timeouts
/// instead of hanging with it.
pub struct IsolatedServer {
    pub c2s: SocketAddr,
    pub http: SocketAddr,
    pub direct_tls: SocketAddr,
    pub https: SocketAddr,
    pub cert_der: Vec<u8>,
    /// The server's runtime, for its metrics (e.g. `num_alive_tasks`, which tests/soak.rs
    /// watches for leaked tasks: only the server's tasks run there, not the test's).
    pub runtime: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl IsolatedServer {
    /// Starts the server with `users` created (password `PASSWORD`).
    pub fn start(
        adjust: impl FnOnce(&mut Config) + Send + 'static,
        users: &[&str],
    ) -> IsolatedServer {
        let users: Vec<String> = users.iter().map(|u| u.to_string()).collect();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("server runtime");
            runtime.block_on(async move {
                let server = TestServer::start_with(adjust).await;
                for user in &users {
                    server.add_user(user).await;
                }
                let https = server.server.https_addr.expect("https listener");
                let _ = ready_tx.send((
                    [server.c2s(), server.http(), server.direct_tls(), https],
                    server.cert_der.clone(),
                    tokio::runtime::Handle::current(),
                ));
                let _ = stop_rx.await;
                drop(server);
            });
            // A hung worker would block the runtime's shutdown: leave it to the process exit.
            runtime.shutdown_background();
        });
        let ([c2s, http, direct_tls, https], cert_der, runtime) =
            ready_rx.recv_timeout(WAIT).expect("server started");
        IsolatedServer {
            c2s,
            http,
            direct_tls,
            https,
            cert_der,
            runtime,
            stop: Some(stop_tx),
        }
    }

    pub fn tls_config(&self) -> Arc<ClientConfig> {
        pinned_tls_config(self.cert_der.clone(), vec![])
    }
}

impl Drop for IsolatedServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Mode {
    StartTls,
    DirectTls,
}

/// Waits for the client to be online; returns the bound JID.
pub async fn online(client: &mut Client) -> String {
    loop {
        match tokio::time::timeout(WAIT, client.next()).await {
            Ok(Some(Event::Online { bound_jid, .. })) => return bound_jid.to_string(),
            Ok(Some(Event::Disconnected(e))) => panic!("disconnected before online: {e}"),
            Ok(Some(Event::Stanza(_))) => continue,
            Ok(None) => panic!("client stream ended before online"),
            Err(_) => panic!("not online within {WAIT:?}"),
        }
    }
}

/// The next stanza the client receives, as an element.
pub async fn next_stanza(client: &mut Client) -> Element {
    loop {
        match tokio::time::timeout(WAIT, client.next()).await {
            Ok(Some(Event::Stanza(stanza))) => return Element::from(stanza),
            Ok(Some(Event::Online { .. })) => continue,
            Ok(Some(Event::Disconnected(e))) => panic!("disconnected: {e}"),
            Ok(None) => panic!("client stream ended"),
            Err(_) => panic!("no stanza within {WAIT:?}"),
        }
    }
}

/// The next stanza matching `pred`, skipping others (e.g. own presence).
pub async fn next_matching(client: &mut Client, pred: impl Fn(&Element) -> bool) -> Element {
    loop {
        let el = next_stanza(client).await;
        if pred(&el) {
            return el;
        }
    }
}

pub async fn send(client: &mut Client, xml: &str) {
    let el: Element = xml.parse().expect("test stanza parses");
    let stanza = tokio_xmpp::Stanza::try_from(el).expect("is a stanza");
    client.send_stanza(stanza).await.expect("send");
}

pub fn is_message_with_body(el: &Element) -> bool {
    el.name() == "message" && el.get_child("body", "jabber:client").is_some()
}

pub fn body(el: &Element) -> String {
    el.get_child("body", "jabber:client")
        .map(|b| b.text())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// TLS that trusts exactly the server's certificate.

#[derive(Debug)]
struct PinnedCert(Vec<u8>, Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.0.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("unexpected certificate".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.1.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.1.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.1.signature_verification_algorithms.supported_schemes()
    }
}

pub fn pinned_tls_config(cert_der: Vec<u8>, alpn: Vec<Vec<u8>>) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCert(cert_der, provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn;
    Arc::new(config)
}

/// The same pinned verifier, offering only `versions` (one TLS version at a time, to see which
/// the server accepts).
#[allow(dead_code)]
pub fn pinned_tls_config_for(
    cert_der: Vec<u8>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: Vec<Vec<u8>>,
) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCert(cert_der, provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn;
    Arc::new(config)
}

// ---------------------------------------------------------------------------------------------
// tokio-xmpp connector for loopback with the pinned certificate.

#[derive(Clone, Debug)]
struct TestConnector {
    addr: SocketAddr,
    tls: Arc<ClientConfig>,
    mode: Mode,
    channel_binding: bool,
}

fn header() -> StreamHeader<'static> {
    StreamHeader {
        to: Some(Cow::Borrowed(DOMAIN)),
        from: None,
        id: None,
    }
}

impl ServerConnector for TestConnector {
    type Stream = BufStream<tokio_rustls::client::TlsStream<TcpStream>>;

    async fn connect(
        &self,
        _jid: &jid::Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<
        (
            PendingFeaturesRecv<Self::Stream>,
            sasl::common::ChannelBinding,
        ),
        tokio_xmpp::Error,
    > {
        let tcp = TcpStream::connect(self.addr).await?;
        let tcp = match self.mode {
            Mode::DirectTls => tcp,
            Mode::StartTls => {
                let pending = initiate_stream(BufStream::new(tcp), ns, header(), timeouts).await?;
                let (_features, mut stream) = pending
                    .recv_features::<XmppStreamElement>()
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                stream
                    .send(&XmppStreamElement::Starttls(starttls::Nonza::Request(
                        starttls::Request,
                    )))
                    .await?;
                loop {
                    match stream.next().await {
                        Some(Ok(XmppStreamElement::Starttls(starttls::Nonza::Proceed(_)))) => break,
                        Some(Ok(_)) => continue,
                        _ => return Err(tokio_xmpp::Error::Disconnected),
                    }
                }
                stream.into_inner().into_inner()
            }
        };
        let name = ServerName::try_from(DOMAIN).expect("server name");
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await?;
        let binding = if self.channel_binding {
            let data = tls
                .get_ref()
                .1
                .export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            sasl::common::ChannelBinding::TlsExporter(data)
        } else {
            sasl::common::ChannelBinding::None
        };
        let stream = initiate_stream(BufStream::new(tls), ns, header(), timeouts).await?;
        Ok((stream, binding))
    }
}

// ---------------------------------------------------------------------------------------------
// A raw client: bytes in and out, frames parsed, for behaviour a library hides.

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub struct Raw {
    pub io: Box<dyn Io>,
    /// RFC 9266 tls-exporter data of this connection, once TLS is up.
    pub exporter: Option<Vec<u8>>,
    parser: corvid::xml::StreamParser,
    frames: std::collections::VecDeque<corvid::xml::Frame>,
}

pub const OPEN: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

/// A stream header like `OPEN`, for the hosted domain `domain`.
pub fn open_to(domain: &str) -> String {
    OPEN.replace("to='localhost'", &format!("to='{domain}'"))
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        Raw::over(Box::new(tcp))
    }

    /// A raw client on a connection opened (and perhaps written to) elsewhere.
    pub fn over_tcp(tcp: TcpStream) -> Raw {
        Raw::over(Box::new(tcp))
    }

    /// `connect` from the local address `from` (any of 127.0.0.0/8 works on Linux), so a test
    /// can be several clients as the server sees them.
    pub async fn connect_from(addr: SocketAddr, from: std::net::IpAddr) -> Raw {
        let socket = match from {
            std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .expect("socket");
        socket
            .bind(SocketAddr::new(from, 0))
            .expect("bind the client side");
        let tcp = socket.connect(addr).await.expect("connect");
        Raw::over(Box::new(tcp))
    }

    /// A raw client on any stream (e.g. one a test wrapped in TLS itself).
    pub fn over_stream(io: Box<dyn Io>) -> Raw {
        Raw::over(io)
    }

    fn over(io: Box<dyn Io>) -> Raw {
        Raw {
            io,
            exporter: None,
            parser: corvid::xml::StreamParser::new(corvid::xml::XmlLimits {
                max_stanza_size: 1 << 20,
                ..corvid::xml::XmlLimits::STORED
            }),
            frames: Default::default(),
        }
    }

    pub async fn io_write_bytes(&mut self, data: &[u8]) {
        self.io.write_all(data).await.expect("write");
        self.io.flush().await.expect("flush");
    }

    /// Writes what the server will still take: for input the server refuses before it has
    /// read it all, and closes the connection on.
    pub async fn write_until_refused(&mut self, data: &str) {
        let _ = self.io.write_all(data.as_bytes()).await;
        let _ = self.io.flush().await;
    }

    pub async fn write(&mut self, data: &str) {
        self.io.write_all(data.as_bytes()).await.expect("write");
        self.io.flush().await.expect("flush");
    }

    /// The next frame, or None when the connection closes.
    pub async fn frame(&mut self) -> Option<corvid::xml::Frame> {
        loop {
            if let Some(frame) = self.frames.pop_front() {
                return Some(frame);
            }
            let mut buf = [0u8; 8192];
            let n = match tokio::time::timeout(WAIT, self.io.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                Ok(Err(_)) => return None,
                Err(_) => panic!("no data within {WAIT:?}"),
            };
            if n == 0 {
                return None;
            }
            let mut out = Vec::new();
            self.parser
                .feed(&buf[..n], &mut out)
                .expect("server sends well-formed XML");
            self.frames.extend(out);
        }
    }

    /// The next top-level element (skipping stream headers).
    pub async fn element(&mut self) -> Element {
        loop {
            match self.frame().await {
                Some(corvid::xml::Frame::Element(el)) => return el,
                Some(corvid::xml::Frame::StreamOpen(_)) => continue,
                Some(corvid::xml::Frame::StreamClose) => panic!("stream closed"),
                None => panic!("connection closed"),
            }
        }
    }

    /// Reads until a `<stream:error/>` arrives; returns its condition. Then expects the stream
    /// to be closed.
    pub async fn stream_error(&mut self) -> String {
        loop {
            match self.frame().await {
                Some(corvid::xml::Frame::Element(el)) if el.name() == "error" => {
                    let condition = el
                        .children()
                        .find(|c| c.ns() == corvid::xml::ns::STREAMS_ERRORS && c.name() != "text")
                        .map(|c| c.name().to_string())
                        .expect("a condition");
                    return condition;
                }
                Some(_) => continue,
                None => panic!("connection closed without a stream error"),
            }
        }
    }

    /// True once the server has closed the connection (EOF or footer, then EOF).
    pub async fn closed(&mut self) -> bool {
        loop {
            match self.frame().await {
                None => return true,
                Some(corvid::xml::Frame::StreamClose) => continue,
                Some(_) => continue,
            }
        }
    }

    pub async fn starttls(self, tls: Arc<ClientConfig>) -> Raw {
        self.starttls_with(tls, "").await
    }

    /// `starttls`, with `extra` in the same write as `<starttls/>` (what a STARTTLS command
    /// injection looks like on the wire).
    pub async fn starttls_with(self, tls: Arc<ClientConfig>, extra: &str) -> Raw {
        self.starttls_to(tls, DOMAIN, extra).await
    }

    /// `starttls_with` on a stream to the hosted domain `domain`, whose certificate `tls` must
    /// accept.
    pub async fn starttls_to(mut self, tls: Arc<ClientConfig>, domain: &str, extra: &str) -> Raw {
        self.write(&open_to(domain)).await;
        let features = self.element().await;
        assert!(features.has_child("starttls", corvid::xml::ns::TLS));
        self.write(&format!(
            "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>{extra}"
        ))
        .await;
        let proceed = self.element().await;
        assert_eq!(proceed.name(), "proceed");
        let io = self.io;
        // The box erases the type; STARTTLS needs the TcpStream back, so raw TLS goes through
        // a fresh connector on the boxed stream.
        let name = ServerName::try_from(domain.to_owned()).expect("name");
        let tls = tokio_rustls::TlsConnector::from(tls)
            .connect(name, io)
            .await
            .expect("tls handshake");
        let exporter = tls
            .get_ref()
            .1
            .export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
            .ok();
        let mut raw = Raw::over(Box::new(tls));
        raw.exporter = exporter;
        raw
    }

    /// STARTTLS, PLAIN, bind: a logged-in raw session. Returns the bound JID.
    pub async fn login(
        addr: SocketAddr,
        tls: Arc<ClientConfig>,
        user: &str,
        resource: &str,
    ) -> (Raw, String) {
        Raw::login_on(addr, tls, DOMAIN, user, resource).await
    }

    /// `login` as `user` of the hosted domain `domain` (`tls` must accept its certificate).
    pub async fn login_on(
        addr: SocketAddr,
        tls: Arc<ClientConfig>,
        domain: &str,
        user: &str,
        resource: &str,
    ) -> (Raw, String) {
        let (mut raw, _features) = Raw::authenticated_on(addr, tls, domain, user).await;
        raw.write(&format!(
            "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
        ))
        .await;
        let bound = raw.element().await;
        let jid = bound
            .get_child("bind", corvid::xml::ns::BIND)
            .and_then(|b| b.get_child("jid", corvid::xml::ns::BIND))
            .map(|j| j.text())
            .expect("bound jid");
        (raw, jid)
    }

    /// STARTTLS and PLAIN without binding; returns the connection and the features of the
    /// authenticated stream, ready for a bind request.
    pub async fn authenticated(
        addr: SocketAddr,
        tls: Arc<ClientConfig>,
        user: &str,
    ) -> (Raw, Element) {
        Raw::authenticated_on(addr, tls, DOMAIN, user).await
    }

    /// `authenticated` as `user` of the hosted domain `domain`.
    pub async fn authenticated_on(
        addr: SocketAddr,
        tls: Arc<ClientConfig>,
        domain: &str,
        user: &str,
    ) -> (Raw, Element) {
        let mut raw = Raw::connect(addr).await.starttls_to(tls, domain, "").await;
        raw.write(&open_to(domain)).await;
        let _features = raw.element().await;
        raw.auth_plain(user, PASSWORD).await;
        let success = raw.element().await;
        assert_eq!(success.name(), "success", "login of {user}: {success:?}");
        raw.parser.reset();
        raw.write(&open_to(domain)).await;
        let features = raw.element().await;
        (raw, features)
    }

    /// Enables XEP-0198 with resumption on a bound stream; returns the resumption id.
    pub async fn enable_resumption(&mut self) -> String {
        self.write("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
            .await;
        let enabled = self.element().await;
        assert!(enabled.is("enabled", "urn:xmpp:sm:3"), "{enabled:?}");
        enabled.attr("id").expect("resumable").to_owned()
    }

    /// Asks to resume `previd` having handled `h` stanzas; returns the answer.
    pub async fn resume(&mut self, previd: &str, h: u32) -> Element {
        self.write(&format!(
            "<resume xmlns='urn:xmpp:sm:3' previd='{previd}' h='{h}'/>"
        ))
        .await;
        self.element().await
    }

    pub async fn auth_plain(&mut self, user: &str, password: &str) {
        use base64::Engine;
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        self.write(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
        ))
        .await;
    }

    pub fn reset_parser(&mut self) {
        self.parser.reset();
    }
}

/// A server on PostgreSQL (a fresh schema of `CORVID_TEST_POSTGRES`), or None when the
/// variable is not set. The schema is dropped by `drop_schema`.
pub async fn start_on_postgres() -> Option<(TestServer, String)> {
    start_on_postgres_after(|_| async {}).await
}

/// `start_on_postgres`, with `prepare` writing to the fresh schema before the server starts
/// on it (what an earlier release left there, say).
pub async fn start_on_postgres_after<F, Fut>(prepare: F) -> Option<(TestServer, String)>
where
    F: FnOnce(Storage) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let url = std::env::var("CORVID_TEST_POSTGRES").ok()?;
    let schema = format!("corvid_srv_{}", rand_suffix());
    let backend = corvid::storage::PostgresStorage::open_with_schema(&url, &schema)
        .await
        .expect("postgres schema");
    let storage = Storage::from_backend(Arc::new(backend));
    prepare(storage.clone()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::default();
    config.storage.url = url;
    config.tls.cert = dir.path().join("cert.pem");
    config.tls.key = dir.path().join("key.pem");
    let loopback = [127, 0, 0, 1].into();
    config.c2s.bind = loopback;
    config.c2s.port = 0;
    config.c2s.direct_tls = false;
    config.http.enabled = false;
    config.http.tls_enabled = false;
    // Federation would bind 5269 on every address: two of these servers at once would clash.
    config.s2s.enabled = false;
    config.control.socket = dir.path().join("corvid.sock");
    config.metrics.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let server = corvid::server::start_with_storage(Arc::new(config), storage)
        .await
        .expect("server starts");
    let cert_der = server
        .ctx
        .tls
        .as_ref()
        .map(|t| t.leaf_der(None).to_vec())
        .expect("tls");
    Some((
        TestServer {
            server,
            dir,
            cert_der,
        },
        schema,
    ))
}

pub async fn drop_schema(schema: &str) {
    if let Ok(url) = std::env::var("CORVID_TEST_POSTGRES") {
        if let Ok(pool) = sqlx::PgPool::connect(&url).await {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .execute(&pool)
                .await;
        }
    }
}

fn rand_suffix() -> String {
    use rand::Rng;
    let n: u64 = rand::thread_rng().gen();
    format!("{n:016x}")
}
