//! Outbound TLS (`corvid::tls::connector`), the side a server takes when it connects to
//! another: tried against corvid's own listeners over real sockets, direct TLS and STARTTLS,
//! trusting each domain's certificate as read from its file.

mod common;

use common::*;
use corvid::tls::connector::{ConnectError, OutboundTls, TlsConnector};
use corvid::xml::{ns, Frame, StreamParser, XmlLimits};
use minidom::Element;
use rustls::{CertificateError, RootCertStore};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const B: &str = "b.example";

async fn server() -> TestServer {
    TestServer::start_with(|config| {
        config
            .hosts
            .insert(B.into(), corvid::config::HostConfig::default());
    })
    .await
}

/// A connector that trusts `cert` and nothing else.
fn trusting(cert: &[u8], alpn: &[u8]) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(cert.to_vec().into()).expect("a usable root");
    let alpn = if alpn.is_empty() {
        vec![]
    } else {
        vec![alpn.to_vec()]
    };
    TlsConnector::new(roots, alpn).expect("connector")
}

/// Reads up to the next top-level element, skipping stream headers.
async fn element(io: &mut (impl AsyncRead + Unpin), parser: &mut StreamParser) -> Element {
    let mut frames = Vec::new();
    loop {
        if let Some(at) = frames.iter().position(|f| matches!(f, Frame::Element(_))) {
            let Frame::Element(el) = frames.swap_remove(at) else {
                unreachable!("checked above");
            };
            return el;
        }
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), io.read(&mut buf))
            .await
            .expect("data in time")
            .expect("read");
        assert!(n > 0, "connection closed");
        parser
            .feed(&buf[..n], &mut frames)
            .expect("well-formed XML");
    }
}

/// Opens a stream to `domain` over `io`; returns its features and the parser that goes on
/// reading it.
async fn features(
    io: &mut (impl AsyncRead + AsyncWrite + Unpin),
    domain: &str,
) -> (Element, StreamParser) {
    io.write_all(open_to(domain).as_bytes())
        .await
        .expect("write");
    let mut parser = StreamParser::new(XmlLimits::with_max_size(1 << 20));
    let features = element(io, &mut parser).await;
    assert!(features.is("features", ns::STREAM), "{features:?}");
    (features, parser)
}

/// The TLS connection is a working stream: the server answers a header over it.
async fn assert_serves_xmpp(mut tls: OutboundTls, domain: &str) {
    let (features, _) = features(&mut tls, domain).await;
    assert!(features.has_child("mechanisms", ns::SASL), "{features:?}");
    assert!(!features.has_child("starttls", ns::TLS), "{features:?}");
}

#[tokio::test]
async fn direct_tls_verifies_the_server_and_keeps_its_certificate() {
    let t = server().await;
    for domain in [DOMAIN, B] {
        let expected = t.cert_der_of(domain);
        let connector = trusting(&expected, b"xmpp-client");
        let tls = connector
            .connect(t.direct_tls(), domain)
            .await
            .unwrap_or_else(|e| panic!("handshake with {domain}: {e}"));
        assert_eq!(tls.alpn_protocol(), Some(&b"xmpp-client"[..]));
        let chain = tls.peer_certificates();
        assert_eq!(chain.len(), 1, "a self-signed certificate alone");
        assert_eq!(
            chain[0].as_ref(),
            expected.as_slice(),
            "{domain}'s certificate"
        );
        assert_serves_xmpp(tls, domain).await;
    }
}

#[tokio::test]
async fn starttls_upgrades_an_outbound_stream() {
    let t = server().await;
    for domain in [DOMAIN, B] {
        let expected = t.cert_der_of(domain);
        let mut tcp = TcpStream::connect(t.c2s()).await.expect("connect");
        let (features, mut parser) = features(&mut tcp, domain).await;
        assert!(features.has_child("starttls", ns::TLS), "{features:?}");
        tcp.write_all(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .await
            .expect("write");
        // The parser stays behind: nothing from before TLS is read as if it came over it.
        let proceed = element(&mut tcp, &mut parser).await;
        assert!(proceed.is("proceed", ns::TLS), "{proceed:?}");
        let tls = trusting(&expected, b"")
            .starttls(tcp, domain)
            .await
            .unwrap_or_else(|e| panic!("handshake with {domain}: {e}"));
        assert_eq!(tls.peer_certificates()[0].as_ref(), expected.as_slice());
        assert_serves_xmpp(tls, domain).await;
    }
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused_with_the_reason() {
    let t = server().await;
    // Trusted, but issued for localhost: the server serves it to an unknown SNI.
    let connector = trusting(&t.cert_der, b"xmpp-client");
    let refused = connector
        .connect(t.direct_tls(), "wrong.example")
        .await
        .err()
        .expect("refused");
    match &refused {
        ConnectError::Refused {
            name,
            source: rustls::Error::InvalidCertificate(reason),
        } => {
            assert_eq!(name, "wrong.example");
            assert!(
                matches!(
                    reason,
                    CertificateError::NotValidForName
                        | CertificateError::NotValidForNameContext { .. }
                ),
                "{reason:?}"
            );
        }
        other => panic!("expected a refused certificate, got {other:?}"),
    }
    let message = refused.to_string();
    assert!(message.contains("wrong.example"), "{message}");
    assert!(message.contains("not valid for name"), "{message}");
}

#[tokio::test]
async fn a_certificate_no_root_vouches_for_is_refused() {
    let t = server().await;
    let roots = corvid::tls::connector::roots(None).expect("built-in roots");
    let connector = TlsConnector::new(roots, vec![]).expect("connector");
    let refused = connector
        .connect(t.direct_tls(), DOMAIN)
        .await
        .err()
        .expect("a self-signed certificate is not trusted by default");
    assert!(
        matches!(
            refused,
            ConnectError::Refused {
                source: rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
                ..
            }
        ),
        "{refused:?}"
    );
}

#[tokio::test]
async fn no_listener_is_a_connect_error() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    let connector = TlsConnector::new(RootCertStore::empty(), vec![]).expect("connector");
    let refused = connector
        .connect(addr, DOMAIN)
        .await
        .err()
        .expect("nothing listens");
    assert!(
        matches!(refused, ConnectError::Connect { addr: a, .. } if a == addr),
        "{refused:?}"
    );
}
