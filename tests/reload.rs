//! Certificates reloaded without a restart: a new connection is served the new certificate
//! while a session from before the reload keeps working; a configuration that does not
//! validate changes nothing; SIGHUP on `corvid serve` reloads too.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

/// Accepts any certificate: the test compares what was served itself.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn any_cert(alpn: Vec<Vec<u8>>) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn;
    Arc::new(config)
}

/// The leaf certificate a new STARTTLS connection to `addr` is served.
async fn served_starttls(addr: SocketAddr) -> Vec<u8> {
    let mut raw = Raw::connect(addr).await;
    raw.write(OPEN).await;
    let _features = raw.element().await;
    raw.write("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await;
    assert_eq!(raw.element().await.name(), "proceed");
    let name = ServerName::try_from(DOMAIN.to_owned()).expect("name");
    let tls = tokio_rustls::TlsConnector::from(any_cert(vec![]))
        .connect(name, raw.io)
        .await
        .expect("handshake");
    leaf(tls.get_ref().1)
}

/// The leaf certificate a new TLS connection to `addr` (direct TLS, HTTPS) is served.
async fn served_direct(addr: SocketAddr, alpn: &[u8]) -> Vec<u8> {
    served_direct_to(addr, DOMAIN, alpn).await
}

/// `served_direct` with SNI `domain`.
async fn served_direct_to(addr: SocketAddr, domain: &str, alpn: &[u8]) -> Vec<u8> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(domain.to_owned()).expect("name");
    let tls = tokio_rustls::TlsConnector::from(any_cert(vec![alpn.to_vec()]))
        .connect(name, tcp)
        .await
        .expect("handshake");
    leaf(tls.get_ref().1)
}

fn leaf(conn: &rustls::ClientConnection) -> Vec<u8> {
    conn.peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .expect("a certificate")
}

/// Writes a new certificate for localhost over `cert`/`key`; returns its DER.
fn replace_certificate(cert: &Path, key: &Path) -> Vec<u8> {
    replace_certificate_for("localhost", cert, key)
}

fn replace_certificate_for(domain: &str, cert: &Path, key: &Path) -> Vec<u8> {
    let certified =
        rcgen::generate_simple_self_signed(vec![domain.into(), format!("conference.{domain}")])
            .expect("generate");
    std::fs::write(cert, certified.cert.pem()).expect("write cert");
    std::fs::write(key, certified.key_pair.serialize_pem()).expect("write key");
    certified.cert.der().to_vec()
}

async fn next_message(raw: &mut Raw) -> minidom::Element {
    loop {
        let el = raw.element().await;
        if el.name() == "message" {
            return el;
        }
    }
}

#[tokio::test]
async fn new_connections_get_the_new_certificate_and_old_sessions_go_on() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    t.add_user("bob").await;
    let (mut alice, alice_jid) = Raw::login(t.c2s(), t.tls_config(), "alice", "a").await;
    let old = t.cert_der.clone();
    assert_eq!(served_starttls(t.c2s()).await, old);
    let https = t.server.https_addr.expect("HTTPS listens");
    assert_eq!(served_direct(https, b"http/1.1").await, old);

    let config = t.config();
    let new = replace_certificate(&config.tls.cert, &config.tls.key);
    assert_ne!(new, old);
    let report = t.server.reload().await.expect("reload");
    assert_eq!(report.reloaded, ["certificates"]);
    assert!(report.needs_restart.is_empty(), "{report:?}");

    assert_eq!(served_starttls(t.c2s()).await, new, "STARTTLS");
    assert_eq!(
        served_direct(t.direct_tls(), b"xmpp-client").await,
        new,
        "direct TLS"
    );
    let https = t.server.https_addr.expect("HTTPS listens");
    assert_eq!(served_direct(https, b"http/1.1").await, new, "HTTPS");
    // A client pinned to the new certificate logs in; alice, connected before, still talks.
    let (mut bob, bob_jid) =
        Raw::login(t.c2s(), pinned_tls_config(new.clone(), vec![]), "bob", "b").await;
    alice
        .write(&format!(
            "<message to='{bob_jid}' type='chat' id='1'><body>before</body></message>"
        ))
        .await;
    assert_eq!(
        next_message(&mut bob).await.attr("from"),
        Some(alice_jid.as_str())
    );
    bob.write(&format!(
        "<message to='{alice_jid}' type='chat' id='2'><body>after</body></message>"
    ))
    .await;
    let reply = next_message(&mut alice).await;
    assert_eq!(body(&reply), "after");
}

#[tokio::test]
async fn a_broken_configuration_changes_nothing() {
    let t = TestServer::start().await;
    let old = t.cert_der.clone();
    let config = t.config().clone();
    // New certificate files, but a configuration file that does not validate.
    let _new = replace_certificate(&config.tls.cert, &config.tls.key);
    let file = t.dir.path().join("corvid.toml");
    std::fs::write(&file, "domain = 'localhost'\nno_such_setting = 1\n").expect("write");
    t.server.set_config_path(&file);
    let refused = t.server.reload().await;
    let error = refused.expect_err("refused").to_string();
    assert!(error.contains("no_such_setting"), "{error}");
    assert_eq!(
        served_starttls(t.c2s()).await,
        old,
        "certificates unchanged"
    );

    // The same file made valid, with a listener change: certificates reload, the port change
    // is reported as needing a restart.
    std::fs::write(
        &file,
        format!(
            "domain = 'localhost'\n[storage]\nurl = '{url}'\n[tls]\ncert = '{cert}'\nkey = '{key}'\n\
             [c2s]\nbind = '127.0.0.1'\nport = 1\n",
            url = config.storage.url,
            cert = config.tls.cert.display(),
            key = config.tls.key.display(),
        ),
    )
    .expect("write");
    let report = t.server.reload().await.expect("reload");
    assert_eq!(report.reloaded, ["certificates", "configuration"]);
    assert!(
        report.needs_restart.iter().any(|s| s == "c2s"),
        "{report:?}"
    );
    assert_ne!(served_starttls(t.c2s()).await, old);
}

/// The first `127.0.0.1:port` in a log line.
fn address_in(line: &str) -> Option<SocketAddr> {
    let start = line.find("127.0.0.1:")?;
    let rest = &line[start..];
    let end = rest
        .char_indices()
        .skip("127.0.0.1:".len())
        .find(|(_, c)| !c.is_ascii_digit())
        .map_or(rest.len(), |(i, _)| i);
    rest[..end].parse().ok()
}

#[tokio::test]
async fn sighup_reloads_the_certificates_of_corvid_serve() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("corvid.toml");
    std::fs::write(
        &config,
        "domain = 'localhost'\n[storage]\nurl = 'sqlite://corvid.db'\n[tls]\ncert = 'cert.pem'\n\
         key = 'key.pem'\n[c2s]\nbind = '127.0.0.1'\nport = 0\ndirect_tls = false\n[http]\n\
         enabled = false\n[s2s]\nenabled = false\n[metrics]\nenabled = false\n",
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_corvid"))
        .args(["-c", config.to_str().expect("path"), "serve"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("corvid serves");
    let stderr = child.stderr.take().expect("stderr");
    let (found, addr) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent && line.contains("c2s (STARTTLS) listening") {
                let _ = found.send(address_in(&line));
                sent = true;
            }
        }
    });
    let addr = tokio::task::spawn_blocking(move || addr.recv_timeout(Duration::from_secs(60)))
        .await
        .expect("join")
        .expect("the server logs its address")
        .expect("an address in the log line");
    let generated = served_starttls(addr).await;
    let new = replace_certificate(&dir.path().join("cert.pem"), &dir.path().join("key.pem"));
    assert_ne!(generated, new);
    let pid = child.id() as libc::pid_t;
    // SAFETY: signals a child process this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let mut served = Vec::new();
    for _ in 0..500 {
        served = served_starttls(addr).await;
        if served == new {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = child.wait().expect("exits");
    assert_eq!(
        served, new,
        "a new connection after SIGHUP gets the new certificate"
    );
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn s2s_serves_the_new_certificate_and_federation_goes_on() {
    use common::federation::{Federation, Trust, A, B};
    use common::xmpp::Session;

    // a.test also listens for direct TLS, on a port of its own choosing.
    let f = Federation::start_with(
        Trust::SelfSigned,
        |c| {
            c.s2s.direct_tls = true;
            c.s2s.direct_tls_port = 0;
        },
        |_| {},
    )
    .await;
    f.a.add_user(&format!("alice@{A}")).await;
    f.b.add_user(&format!("bob@{B}")).await;
    let s2s_direct = f.a.server.s2s_direct_tls_addr.expect("s2s direct TLS");
    let old = served_direct_to(s2s_direct, A, b"xmpp-server").await;
    let config = f.a.config();
    let new = replace_certificate_for(A, &config.tls.cert, &config.tls.key);
    assert_ne!(old, new);
    f.a.server.reload().await.expect("reload");
    assert_eq!(served_direct_to(s2s_direct, A, b"xmpp-server").await, new);

    // Federation still works after the reload (b.test checks a.test by dialback here).
    let mut alice = Session::online_on(&f.a, A, "alice", "pc").await;
    let mut bob = Session::online_on(&f.b, B, "bob", "phone").await;
    alice
        .send("<message to='bob@b.test' type='chat' id='m1'><body>after reload</body></message>")
        .await;
    bob.expect(|el| el.name() == "message" && body(el) == "after reload")
        .await;
}

/// A SIGHUP sent as soon as the server listens (a deploy script that renews the certificate
/// right after starting it) reloads it: the handler is installed before the listeners open,
/// instead of SIGHUP's default action ending the process.
#[tokio::test]
async fn a_sighup_as_soon_as_the_server_listens_reloads_and_does_not_kill_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("corvid.toml");
    std::fs::write(
        &config,
        "domain = 'localhost'\n[storage]\nurl = 'sqlite://corvid.db'\n[tls]\ncert = 'cert.pem'\n\
         key = 'key.pem'\n[c2s]\nbind = '127.0.0.1'\nport = 0\ndirect_tls = false\n[http]\n\
         enabled = false\n[s2s]\nenabled = false\n[metrics]\nenabled = false\n",
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_corvid"))
        .args(["-c", config.to_str().expect("path"), "serve"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("corvid serves");
    let pid = child.id() as libc::pid_t;
    let stderr = child.stderr.take().expect("stderr");
    let (reloaded, reload_logged) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut signalled = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // The first listener, long before the server is done starting.
            if !signalled && line.contains("listening") {
                // SAFETY: signals a child process this test started and has not reaped.
                unsafe { libc::kill(pid, libc::SIGHUP) };
                signalled = true;
            }
            if line.contains("SIGHUP: reloading") {
                let _ = reloaded.send(());
            }
        }
    });
    let logged =
        tokio::task::spawn_blocking(move || reload_logged.recv_timeout(Duration::from_secs(60)))
            .await
            .expect("join");
    let alive = child.try_wait().expect("status").is_none();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = child.wait().expect("exits");
    assert!(
        logged.is_ok(),
        "the SIGHUP was not taken as a reload: {status:?}"
    );
    assert!(alive, "the SIGHUP ended the server: {status:?}");
    assert!(status.success(), "{status:?}");
}
