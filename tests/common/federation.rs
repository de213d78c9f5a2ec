//! Two corvid servers federating over real sockets: `a.test` with s2s on 127.0.0.2 and
//! `b.test` on 127.0.0.3, each reaching the other through `[s2s.routes]`. Certificates come
//! from a test CA both trust (so SASL EXTERNAL works), or are self-signed (so only dialback
//! can authenticate).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use corvid::config::Config;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

use super::TestServer;

pub const A: &str = "a.test";
pub const B: &str = "b.test";
pub const A_IP: [u8; 4] = [127, 0, 0, 2];
pub const B_IP: [u8; 4] = [127, 0, 0, 3];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Trust {
    /// Both certificates issued by a test CA both servers trust: SASL EXTERNAL.
    TestCa,
    /// Each server's own self-signed certificate, trusted by nobody: dialback.
    SelfSigned,
}

pub struct Federation {
    pub a: TestServer,
    pub b: TestServer,
    pub certs: tempfile::TempDir,
}

/// A port free on `ip` now (bound and released): the other server's route must name it
/// before that server starts.
pub fn free_port(ip: [u8; 4]) -> u16 {
    std::net::TcpListener::bind(SocketAddr::from((ip, 0)))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub struct Certs {
    pub ca_pem: PathBuf,
}

/// Writes a test CA and, for each domain, `<domain>.crt`/`.key` into `dir`: issued by the CA
/// for `Trust::TestCa`, self-signed otherwise. Each names the domain and its `conference.`.
pub fn write_certs(dir: &Path, trust: Trust, domains: &[&str]) -> Certs {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "corvid test CA");
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let ca_pem = dir.join("ca.pem");
    std::fs::write(&ca_pem, ca.pem()).expect("write ca");
    for domain in domains {
        let key = KeyPair::generate().expect("key");
        let params =
            CertificateParams::new(vec![domain.to_string(), format!("conference.{domain}")])
                .expect("params");
        let cert = match trust {
            Trust::TestCa => params.signed_by(&key, &ca, &ca_key).expect("signed"),
            Trust::SelfSigned => params.self_signed(&key).expect("self-signed"),
        };
        std::fs::write(dir.join(format!("{domain}.crt")), cert.pem()).expect("write cert");
        std::fs::write(dir.join(format!("{domain}.key")), key.serialize_pem()).expect("write key");
    }
    Certs { ca_pem }
}

impl Federation {
    pub async fn start(trust: Trust) -> Federation {
        Self::start_with(trust, |_| {}, |_| {}).await
    }

    /// `adjust_a`/`adjust_b` may change either server's settings last.
    pub async fn start_with(
        trust: Trust,
        adjust_a: impl FnOnce(&mut Config),
        adjust_b: impl FnOnce(&mut Config),
    ) -> Federation {
        let certs = tempfile::tempdir().expect("cert dir");
        let written = write_certs(certs.path(), trust, &[A, B]);
        let a_port = free_port(A_IP);
        let b_port = free_port(B_IP);
        let a = TestServer::start_with(|c| {
            configure(
                c,
                certs.path(),
                &written,
                A,
                A_IP,
                a_port,
                (B, B_IP, b_port),
            );
            adjust_a(c);
        })
        .await;
        let b = TestServer::start_with(|c| {
            configure(
                c,
                certs.path(),
                &written,
                B,
                B_IP,
                b_port,
                (A, A_IP, a_port),
            );
            adjust_b(c);
        })
        .await;
        Federation { a, b, certs }
    }
}

/// `a.test` as in `Federation`, and `b.test` on a runtime of its own so that it can crash
/// (`crash_b`): its tasks vanish with their sockets, and the kernel closes its connections
/// without a `</stream:stream>` or a TLS close_notify, which is what a killed process or a
/// machine that went away looks like from `a.test`. Anything that runs on `b.test`'s storage
/// goes through `on_b`, on its runtime.
pub struct CrashableFederation {
    pub a: TestServer,
    pub b: std::sync::Arc<TestServer>,
    b_runtime: Option<tokio::runtime::Runtime>,
    pub certs: tempfile::TempDir,
}

impl CrashableFederation {
    /// `adjust` changes both servers' settings last.
    pub async fn start(trust: Trust, adjust: fn(&mut Config)) -> CrashableFederation {
        let certs = tempfile::tempdir().expect("cert dir");
        let written = write_certs(certs.path(), trust, &[A, B]);
        let a_port = free_port(A_IP);
        let b_port = free_port(B_IP);
        let a = TestServer::start_with(|c| {
            configure(
                c,
                certs.path(),
                &written,
                A,
                A_IP,
                a_port,
                (B, B_IP, b_port),
            );
            adjust(c);
        })
        .await;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("b.test's runtime");
        let dir = certs.path().to_owned();
        let b = runtime
            .spawn(async move {
                TestServer::start_with(move |c| {
                    configure(c, &dir, &written, B, B_IP, b_port, (A, A_IP, a_port));
                    adjust(c);
                })
                .await
            })
            .await
            .expect("b.test starts");
        CrashableFederation {
            a,
            b: std::sync::Arc::new(b),
            b_runtime: Some(runtime),
            certs,
        }
    }

    /// Runs `work` with `b.test` on its runtime, where its storage and tasks live.
    pub async fn on_b<F, Fut, T>(&self, work: F) -> T
    where
        F: FnOnce(std::sync::Arc<TestServer>) -> Fut,
        Fut: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let runtime = self.b_runtime.as_ref().expect("b.test is running");
        runtime
            .spawn(work(self.b.clone()))
            .await
            .expect("work on b.test")
    }

    /// Kills `b.test`: its runtime stops and drops every task where it stands, nothing said.
    pub fn crash_b(&mut self) {
        if let Some(runtime) = self.b_runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for CrashableFederation {
    fn drop(&mut self) {
        // A runtime may not be dropped inside another one (the test's) but may be shut down.
        self.crash_b();
    }
}

pub fn configure(
    c: &mut Config,
    dir: &Path,
    certs: &Certs,
    domain: &str,
    ip: [u8; 4],
    port: u16,
    (other, other_ip, other_port): (&str, [u8; 4], u16),
) {
    c.domain = domain.to_owned();
    c.tls.cert = dir.join(format!("{domain}.crt"));
    c.tls.key = dir.join(format!("{domain}.key"));
    c.tls.generate_self_signed = false;
    c.s2s.enabled = true;
    c.s2s.bind = ip.into();
    c.s2s.port = port;
    c.s2s.direct_tls = false;
    c.s2s.ca_file = Some(certs.ca_pem.clone());
    c.s2s.routes.insert(
        other.to_owned(),
        SocketAddr::from((other_ip, other_port)).to_string(),
    );
    c.s2s.routes.insert(
        format!("conference.{other}"),
        SocketAddr::from((other_ip, other_port)).to_string(),
    );
}

/// A raw server-to-server stream to `server` claiming to come from `from`: the header, STARTTLS
/// (trusting the server's certificate for `to`, presenting none), the header again. Returns the
/// connection, the id of the secured stream (what dialback keys are made for) and its features.
pub async fn raw_s2s(
    server: &TestServer,
    from: &str,
    to: &str,
) -> (super::Raw, String, minidom::Element) {
    let addr = server.server.s2s_addr.expect("s2s listens");
    let mut raw = super::Raw::connect(addr).await;
    raw.write(&s2s_header(from, to)).await;
    let _header = raw.frame().await;
    let features = raw.element().await;
    assert!(
        features.has_child("starttls", corvid::xml::ns::TLS),
        "{features:?}"
    );
    raw.write("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await;
    assert_eq!(raw.element().await.name(), "proceed");
    let tls = super::pinned_tls_config(server.cert_der_of(to), vec![]);
    let name = rustls::pki_types::ServerName::try_from(to.to_owned()).expect("name");
    let io = tokio_rustls::TlsConnector::from(tls)
        .connect(name, raw.io)
        .await
        .expect("TLS with the server");
    let mut raw = super::Raw::over_stream(Box::new(io));
    raw.write(&s2s_header(from, to)).await;
    let id = match raw.frame().await {
        Some(corvid::xml::Frame::StreamOpen(header)) => header.id.expect("a stream id"),
        other => panic!("expected a stream header, got {other:?}"),
    };
    let features = raw.element().await;
    (raw, id, features)
}

pub fn s2s_header(from: &str, to: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
         xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
         from='{from}' to='{to}' version='1.0'>"
    )
}

/// The dialback keys `server` gives out, from its stored secret.
pub async fn dialback_keys(server: &TestServer) -> corvid::s2s::dialback::DialbackKeys {
    let secret = server
        .storage()
        .secrets
        .server_secret(corvid::s2s::dialback::SECRET_NAME, b"not used: one exists")
        .await
        .expect("secret");
    corvid::s2s::dialback::DialbackKeys::new(&secret)
}

/// Stops `old` and starts it again with the same settings and data (its database, its s2s
/// port, its certificate): what survives a restart.
pub async fn restarted(old: TestServer) -> TestServer {
    let config = old.config().clone();
    let TestServer { server, dir, .. } = old;
    server.shutdown().await;
    let mut fresh = TestServer::start_with(|c| *c = config).await;
    // The old folder holds the database the new server opened: it must outlive it.
    fresh.dir = dir;
    fresh
}
