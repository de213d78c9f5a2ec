//! TLS between servers (`corvid::tls::s2s`): which certificates `PeerTrust` accepts for a
//! domain, and handshakes over real loopback sockets in both directions, with a test CA made
//! here (a.test connects, b.test accepts).

use std::path::PathBuf;
use std::sync::Arc;

use corvid::tls::connector::{ConnectError, TlsConnector};
use corvid::tls::s2s::{self, PeerCertError, PeerTrust, S2sConnector, S2sTls};
use corvid::tls::{DomainCert, TlsContext, TlsError};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// A leaf certificate and its key.
struct Leaf {
    chain: Vec<CertificateDer<'static>>,
    key: KeyPair,
    /// The end entity, PEM.
    pem: String,
}

impl Leaf {
    fn domain_cert(&self, domain: &str) -> DomainCert {
        DomainCert {
            domain: domain.to_owned(),
            muc_domain: None,
            chain: self.chain.clone(),
            key: PrivateKeyDer::Pkcs8(self.key.serialize_der().into()),
        }
    }

    fn leaf(&self) -> &[u8] {
        self.chain[0].as_ref()
    }
}

/// A test CA, with its certificate in a PEM file for `PeerTrust::new`.
struct Pki {
    _dir: tempfile::TempDir,
    ca_file: PathBuf,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new() -> Pki {
        let ca_key = KeyPair::generate().expect("key");
        let ca = ca_params("corvid test CA")
            .self_signed(&ca_key)
            .expect("CA");
        let dir = tempfile::tempdir().expect("dir");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).expect("write CA");
        Pki {
            _dir: dir,
            ca_file,
            ca,
            ca_key,
        }
    }

    fn trust(&self) -> PeerTrust {
        PeerTrust::new(Some(&self.ca_file)).expect("trust")
    }

    /// A certificate for `names` signed by the CA; `adjust` changes its parameters first.
    fn leaf(&self, names: &[&str], adjust: impl FnOnce(&mut CertificateParams)) -> Leaf {
        let mut params = leaf_params(names);
        adjust(&mut params);
        let key = KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("sign");
        Leaf {
            chain: vec![cert.der().clone()],
            key,
            pem: cert.pem(),
        }
    }

    /// A certificate for `names` signed by an intermediate CA the CA signed: the chain holds
    /// both.
    fn leaf_via_intermediate(&self, names: &[&str]) -> Leaf {
        let intermediate_key = KeyPair::generate().expect("key");
        let intermediate = ca_params("corvid test intermediate")
            .signed_by(&intermediate_key, &self.ca, &self.ca_key)
            .expect("intermediate");
        let key = KeyPair::generate().expect("key");
        let cert = leaf_params(names)
            .signed_by(&key, &intermediate, &intermediate_key)
            .expect("sign");
        Leaf {
            chain: vec![cert.der().clone(), intermediate.der().clone()],
            key,
            pem: cert.pem(),
        }
    }
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn leaf_params(names: &[&str]) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).expect("params");
    params.distinguished_name.push(DnType::CommonName, "leaf");
    params
}

fn self_signed(names: &[&str]) -> Leaf {
    let key = KeyPair::generate().expect("key");
    let cert = leaf_params(names).self_signed(&key).expect("self-signed");
    Leaf {
        chain: vec![cert.der().clone()],
        key,
        pem: cert.pem(),
    }
}

fn context(main: (&str, &Leaf), others: &[(&str, &Leaf)]) -> TlsContext {
    TlsContext::from_parts(
        main.1.domain_cert(main.0),
        others.iter().map(|(d, leaf)| leaf.domain_cert(d)).collect(),
    )
    .expect("context")
}

#[track_caller]
fn assert_invalid(result: Result<(), PeerCertError>, reason: &str) {
    match result {
        Err(PeerCertError::Invalid(message)) => {
            assert!(
                message.to_lowercase().contains(&reason.to_lowercase()),
                "expected {reason:?} in {message:?}"
            );
        }
        other => panic!("expected an invalid certificate ({reason}), got {other:?}"),
    }
}

#[test]
fn a_ca_signed_certificate_is_valid_for_its_names_only() {
    let pki = Pki::new();
    let trust = pki.trust();
    let a = pki.leaf(&["a.test", "conference.a.test"], |_| {});
    for name in ["a.test", "conference.a.test", "A.Test", "a.test."] {
        assert_eq!(trust.verify(&a.chain, name), Ok(()), "{name}");
    }
    for name in ["b.test", "test", "x.a.test", "upload.a.test"] {
        assert_invalid(trust.verify(&a.chain, name), "not valid for");
    }
    // The CA sent along (as some servers do) changes nothing.
    let mut with_root = a.chain.clone();
    with_root.push(pki.ca.der().clone());
    assert_eq!(trust.verify(&with_root, "a.test"), Ok(()));
}

#[test]
fn intermediates_come_from_the_chain() {
    let pki = Pki::new();
    let trust = pki.trust();
    let b = pki.leaf_via_intermediate(&["b.test"]);
    assert_eq!(trust.verify(&b.chain, "b.test"), Ok(()));
    assert_invalid(trust.verify(&b.chain[..1], "b.test"), "issuer");
}

#[test]
fn certificates_no_trusted_root_vouches_for_are_refused() {
    let pki = Pki::new();
    let b = self_signed(&["b.test"]);
    assert_invalid(pki.trust().verify(&b.chain, "b.test"), "issuer");
    // The Mozilla roots alone do not know the test CA.
    let a = pki.leaf(&["a.test"], |_| {});
    let mozilla = PeerTrust::new(None).expect("trust");
    assert_invalid(mozilla.verify(&a.chain, "a.test"), "issuer");
    // A self-signed certificate put in the CA file is trusted as it is.
    let dir = tempfile::tempdir().expect("dir");
    let pinned = dir.path().join("b.pem");
    std::fs::write(&pinned, &b.pem).expect("write");
    let pinning = PeerTrust::new(Some(&pinned)).expect("trust");
    assert_eq!(pinning.verify(&b.chain, "b.test"), Ok(()));
    assert!(matches!(
        PeerTrust::new(Some(&dir.path().join("missing.pem"))),
        Err(TlsError::Read { .. })
    ));
}

#[test]
fn the_common_name_is_not_looked_at() {
    let pki = Pki::new();
    let cn_only = pki.leaf(&[], |params| {
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "b.test");
    });
    assert_invalid(
        pki.trust().verify(&cn_only.chain, "b.test"),
        "not valid for",
    );
}

#[test]
fn an_expired_certificate_is_refused() {
    let pki = Pki::new();
    let expired = pki.leaf(&["b.test"], |params| {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    assert_invalid(pki.trust().verify(&expired.chain, "b.test"), "expired");
    let not_yet = pki.leaf(&["b.test"], |params| {
        params.not_before = rcgen::date_time_ymd(2999, 1, 1);
        params.not_after = rcgen::date_time_ymd(3000, 1, 1);
    });
    assert_invalid(
        pki.trust().verify(&not_yet.chain, "b.test"),
        "not valid yet",
    );
}

#[test]
fn server_or_client_purpose_or_none_is_accepted_any_other_is_not() {
    use ExtendedKeyUsagePurpose::{ClientAuth, CodeSigning, EmailProtection, ServerAuth};
    let pki = Pki::new();
    let trust = pki.trust();
    for ekus in [
        vec![],
        vec![ServerAuth],
        vec![ClientAuth],
        vec![ServerAuth, ClientAuth],
        vec![EmailProtection, ClientAuth],
    ] {
        let leaf = pki.leaf(&["b.test"], |params| {
            params.extended_key_usages = ekus.clone()
        });
        assert_eq!(trust.verify(&leaf.chain, "b.test"), Ok(()), "{ekus:?}");
        // The purpose does not stand in for the name.
        assert_invalid(trust.verify(&leaf.chain, "c.test"), "not valid for");
    }
    for ekus in [vec![EmailProtection], vec![CodeSigning, EmailProtection]] {
        let leaf = pki.leaf(&["b.test"], |params| {
            params.extended_key_usages = ekus.clone()
        });
        assert_invalid(
            trust.verify(&leaf.chain, "b.test"),
            "allows neither server nor client authentication",
        );
    }
}

#[test]
fn a_wildcard_stands_for_one_left_most_label() {
    let pki = Pki::new();
    let trust = pki.trust();
    let wildcard = pki.leaf(&["*.b.test"], |_| {});
    for name in ["x.b.test", "conference.b.test"] {
        assert_eq!(trust.verify(&wildcard.chain, name), Ok(()), "{name}");
    }
    for name in ["b.test", "y.x.b.test", "xb.test"] {
        assert_invalid(trust.verify(&wildcard.chain, name), "not valid for");
    }
}

#[test]
fn internationalized_names_are_compared_as_a_labels() {
    let pki = Pki::new();
    let trust = pki.trust();
    let idn = pki.leaf(&["xn--bcher-kva.test"], |_| {});
    for name in ["bücher.test", "BÜCHER.test", "xn--bcher-kva.test"] {
        assert_eq!(trust.verify(&idn.chain, name), Ok(()), "{name}");
    }
    assert_invalid(trust.verify(&idn.chain, "bucher.test"), "not valid for");
}

#[test]
fn no_certificate_or_no_domain_name_is_said_so() {
    let pki = Pki::new();
    let trust = pki.trust();
    assert_eq!(
        trust.verify(&[], "a.test"),
        Err(PeerCertError::NoCertificate)
    );
    let a = pki.leaf(&["a.test"], |_| {});
    for name in ["127.0.0.1", "", "a..test"] {
        assert_eq!(
            trust.verify(&a.chain, name),
            Err(PeerCertError::InvalidName(name.to_owned())),
            "{name:?}"
        );
    }
    let garbage = [CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01])];
    assert!(matches!(
        trust.verify(&garbage, "a.test"),
        Err(PeerCertError::Invalid(_))
    ));
}

/// What the accepting side saw of one connection.
struct Accepted {
    chain: Vec<CertificateDer<'static>>,
    sni: Option<String>,
    alpn: Option<Vec<u8>>,
}

/// Listens on loopback; the first connection gets `acceptor(tcp)`'s handshake and an echo of
/// one line. Which acceptor may depend on nothing but the listener here (STARTTLS would choose
/// by the stream's `to`, which these tests skip).
async fn listen(
    acceptor: TlsAcceptor,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<Accepted>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut tls = acceptor.accept(tcp).await.expect("inbound handshake");
        let (_, conn) = tls.get_ref();
        let accepted = Accepted {
            chain: s2s::peer_chain(&tls).to_vec(),
            sni: conn.server_name().map(str::to_owned),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        };
        let mut line = [0u8; 5];
        tls.read_exact(&mut line).await.expect("read");
        tls.write_all(&line).await.expect("echo");
        tls.flush().await.expect("flush");
        accepted
    });
    (addr, task)
}

/// The connection carries data both ways.
async fn assert_echoes(tls: &mut (impl AsyncRead + AsyncWrite + Unpin)) {
    tls.write_all(b"ping\n").await.expect("write");
    let mut line = [0u8; 5];
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tls.read_exact(&mut line),
    )
    .await
    .expect("echo in time")
    .expect("read");
    assert_eq!(&line, b"ping\n");
}

async fn finish(tls: &mut S2sTls, server: tokio::task::JoinHandle<Accepted>) -> Accepted {
    assert_echoes(tls).await;
    server.await.expect("server task")
}

struct Federation {
    pki: Pki,
    a: Leaf,
    b: Leaf,
    /// a.test's server, which connects.
    a_tls: TlsContext,
    /// b.test's server, which accepts.
    b_tls: TlsContext,
}

fn federation() -> Federation {
    let pki = Pki::new();
    let a = pki.leaf(&["a.test", "conference.a.test"], |_| {});
    let b = pki.leaf_via_intermediate(&["b.test"]);
    let a_tls = context(("a.test", &a), &[]);
    let b_tls = context(("b.test", &b), &[]);
    Federation {
        pki,
        a,
        b,
        a_tls,
        b_tls,
    }
}

#[tokio::test]
async fn starttls_both_servers_see_and_verify_each_others_certificate() {
    let f = federation();
    let connector = S2sConnector::new(&f.a_tls, f.pki.trust());
    let (addr, server) = listen(f.b_tls.s2s_starttls("b.test")).await;
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let mut tls = connector
        .starttls(tcp, "a.test", "b.test")
        .await
        .expect("outbound handshake");
    assert_eq!(tls.verified(), &Ok(()));
    assert_eq!(tls.peer_certificates(), f.b.chain.as_slice());
    assert_eq!(tls.alpn_protocol(), None);
    let accepted = finish(&mut tls, server).await;
    assert_eq!(
        accepted.chain, f.a.chain,
        "a.test's certificate was presented"
    );
    assert_eq!(accepted.sni.as_deref(), Some("b.test"));
    assert_eq!(f.pki.trust().verify(&accepted.chain, "a.test"), Ok(()));
    // It authenticates a.test and nothing else.
    assert_invalid(
        f.pki.trust().verify(&accepted.chain, "c.test"),
        "not valid for",
    );
}

#[tokio::test]
async fn direct_tls_negotiates_xmpp_server_and_verifies_both_ways() {
    let f = federation();
    let connector = S2sConnector::new(&f.a_tls, f.pki.trust());
    let (addr, server) = listen(f.b_tls.s2s_direct.clone()).await;
    let mut tls = connector
        .connect_direct(addr, "a.test", "b.test")
        .await
        .expect("outbound handshake");
    assert_eq!(tls.alpn_protocol(), Some(&b"xmpp-server"[..]));
    assert_eq!(tls.verified(), &Ok(()));
    assert_eq!(tls.peer_certificates()[0].as_ref(), f.b.leaf());
    let accepted = finish(&mut tls, server).await;
    assert_eq!(accepted.alpn.as_deref(), Some(&b"xmpp-server"[..]));
    assert_eq!(accepted.sni.as_deref(), Some("b.test"));
    assert_eq!(f.pki.trust().verify(&accepted.chain, "a.test"), Ok(()));
}

#[tokio::test]
async fn direct_tls_serves_the_certificate_sni_names() {
    let pki = Pki::new();
    let a = pki.leaf(&["a.test"], |_| {});
    let (main, b) = (
        pki.leaf(&["main.test"], |_| {}),
        pki.leaf(&["b.test"], |_| {}),
    );
    let a_tls = context(("a.test", &a), &[]);
    let server_tls = context(("main.test", &main), &[("b.test", &b)]);
    let connector = S2sConnector::new(&a_tls, pki.trust());
    for (remote, expected) in [("b.test", &b), ("main.test", &main)] {
        let (addr, server) = listen(server_tls.s2s_direct.clone()).await;
        let mut tls = connector
            .connect_direct(addr, "a.test", remote)
            .await
            .expect("outbound handshake");
        assert_eq!(tls.peer_certificates()[0].as_ref(), expected.leaf());
        assert_eq!(tls.verified(), &Ok(()), "{remote}");
        finish(&mut tls, server).await;
    }
}

#[tokio::test]
async fn an_unverifiable_server_certificate_still_completes_the_handshake() {
    let pki = Pki::new();
    let a = pki.leaf(&["a.test"], |_| {});
    let b = self_signed(&["b.test"]);
    let a_tls = context(("a.test", &a), &[]);
    let b_tls = context(("b.test", &b), &[]);
    let connector = S2sConnector::new(&a_tls, pki.trust());

    let (addr, server) = listen(b_tls.s2s_starttls("b.test")).await;
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let mut tls = connector
        .starttls(tcp, "a.test", "b.test")
        .await
        .expect("the handshake completes: dialback may follow");
    assert_invalid(tls.verified().clone(), "issuer");
    assert_eq!(tls.peer_certificates(), b.chain.as_slice());
    let accepted = finish(&mut tls, server).await;
    assert_eq!(pki.trust().verify(&accepted.chain, "a.test"), Ok(()));
}

#[tokio::test]
async fn a_valid_certificate_for_another_domain_is_not_verified() {
    let f = federation();
    // b.test's server answers for c.test with its main domain's certificate.
    let (addr, server) = listen(f.b_tls.s2s_direct.clone()).await;
    let mut tls = S2sConnector::new(&f.a_tls, f.pki.trust())
        .connect_direct(addr, "a.test", "c.test")
        .await
        .expect("the handshake completes");
    assert_eq!(tls.peer_certificates(), f.b.chain.as_slice());
    assert_invalid(tls.verified().clone(), "not valid for");
    finish(&mut tls, server).await;
}

#[tokio::test]
async fn a_service_presents_its_parent_domains_certificate() {
    let pki = Pki::new();
    let (a, c, b) = (
        pki.leaf(&["a.test", "conference.a.test"], |_| {}),
        pki.leaf(&["c.test"], |_| {}),
        pki.leaf(&["b.test"], |_| {}),
    );
    // c.test is the main domain: a.test's service must not fall back to it.
    let local = context(("c.test", &c), &[("a.test", &a)]);
    let b_tls = context(("b.test", &b), &[]);
    let connector = S2sConnector::new(&local, pki.trust());
    for (local_domain, expected) in [
        ("conference.a.test", &a),
        ("a.test", &a),
        ("c.test", &c),
        ("unhosted.test", &c),
    ] {
        let (addr, server) = listen(b_tls.s2s_direct.clone()).await;
        let mut tls = connector
            .connect_direct(addr, local_domain, "b.test")
            .await
            .expect("handshake");
        let accepted = finish(&mut tls, server).await;
        assert_eq!(
            accepted.chain[0].as_ref(),
            expected.leaf(),
            "{local_domain}"
        );
    }
}

#[tokio::test]
async fn an_inbound_server_without_a_certificate_or_with_an_untrusted_one_is_let_in() {
    let f = federation();
    // No client certificate at all: the connector used for c2s-style outbound TLS.
    let mut roots = RootCertStore::empty();
    roots.add(f.pki.ca.der().clone()).expect("root");
    let plain = TlsConnector::new(roots, vec![]).expect("connector");
    let (addr, server) = listen(f.b_tls.s2s_starttls("b.test")).await;
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let mut tls = plain.starttls(tcp, "b.test").await.expect("handshake");
    assert_echoes(&mut tls).await;
    let accepted = server.await.expect("server");
    assert!(accepted.chain.is_empty());
    assert_eq!(
        f.pki.trust().verify(&accepted.chain, "a.test"),
        Err(PeerCertError::NoCertificate)
    );

    // A self-signed client certificate: the handshake completes, the check fails.
    let rogue = self_signed(&["a.test"]);
    let rogue_tls = context(("a.test", &rogue), &[]);
    let (addr, server) = listen(f.b_tls.s2s_direct.clone()).await;
    let mut tls = S2sConnector::new(&rogue_tls, f.pki.trust())
        .connect_direct(addr, "a.test", "b.test")
        .await
        .expect("handshake");
    assert_eq!(tls.verified(), &Ok(()), "b.test's certificate is fine");
    let accepted = finish(&mut tls, server).await;
    assert_eq!(accepted.chain, rogue.chain);
    assert_invalid(f.pki.trust().verify(&accepted.chain, "a.test"), "issuer");
}

/// A client certificate with a key that is not its own: rustls's own `CertifiedKey::from_der`
/// would refuse to build it, so the resolver is made by hand.
#[derive(Debug)]
struct Presents(Arc<CertifiedKey>);

impl ResolvesClientCert for Presents {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A client that trusts the test CA, presents `chain` with `key`, over the given versions.
fn raw_client(
    pki: &Pki,
    chain: Vec<CertificateDer<'static>>,
    key: &KeyPair,
    version: &'static rustls::SupportedProtocolVersion,
) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signing_key = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .expect("key");
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca.der().clone()).expect("root");
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(Presents(Arc::new(CertifiedKey::new(
            chain,
            signing_key,
        )))));
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn the_handshake_proves_the_client_holds_its_certificates_key() {
    let f = federation();
    let stranger = KeyPair::generate().expect("key");
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        // With its own key, over either version: accepted.
        let (addr, server) = listen(f.b_tls.s2s_starttls("b.test")).await;
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let client = raw_client(&f.pki, f.a.chain.clone(), &f.a.key, version);
        let mut tls = client
            .connect(ServerName::try_from("b.test").expect("name"), tcp)
            .await
            .unwrap_or_else(|e| panic!("{version:?}: {e}"));
        assert_echoes(&mut tls).await;
        let accepted = server.await.expect("server");
        assert_eq!(f.pki.trust().verify(&accepted.chain, "a.test"), Ok(()));

        // a.test's certificate with another key: the signature does not verify.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let acceptor = f.b_tls.s2s_starttls("b.test");
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            acceptor.accept(tcp).await.map(|_| ())
        });
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let client = raw_client(&f.pki, f.a.chain.clone(), &stranger, version);
        // TLS 1.3 clients finish before the server has checked; the server decides.
        let _ = client
            .connect(ServerName::try_from("b.test").expect("name"), tcp)
            .await;
        let refused = server.await.expect("server").expect_err("refused");
        let reason = refused
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .cloned();
        assert!(
            matches!(
                reason,
                Some(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::BadSignature
                ))
            ),
            "{version:?}: {refused:?}"
        );
    }
}

#[tokio::test]
async fn a_name_that_is_no_domain_is_refused_before_connecting() {
    let f = federation();
    let connector = S2sConnector::new(&f.a_tls, f.pki.trust());
    // Nothing listens there: the name is refused before a connection is tried.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    let refused = connector
        .connect_direct(addr, "a.test", "127.0.0.1")
        .await
        .expect_err("refused");
    assert!(
        matches!(&refused, ConnectError::InvalidName(name) if name == "127.0.0.1"),
        "{refused:?}"
    );
    let refused = connector
        .connect_direct(addr, "a.test", "b.test")
        .await
        .expect_err("refused");
    assert!(
        matches!(refused, ConnectError::Connect { .. }),
        "{refused:?}"
    );
}

/// A server certificate with a key that is not its own (see `Presents`).
#[derive(Debug)]
struct Serves(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for Serves {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

#[tokio::test]
async fn the_handshake_proves_the_server_holds_its_certificates_key() {
    let f = federation();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let stranger = KeyPair::generate().expect("key");
    let signing_key = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(stranger.serialize_der().into()))
        .expect("key");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Serves(Arc::new(CertifiedKey::new(
            f.b.chain.clone(),
            signing_key,
        )))));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let _ = acceptor.accept(tcp).await;
    });
    let refused = S2sConnector::new(&f.a_tls, f.pki.trust())
        .connect_direct(addr, "a.test", "b.test")
        .await
        .expect_err("b.test's certificate, but not b.test's key");
    assert!(
        matches!(
            refused,
            ConnectError::Refused {
                source: rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature),
                ..
            }
        ),
        "{refused:?}"
    );
    server.await.expect("server");
}
