//! TLS session resumption for returning clients: a client that reconnects with the session it
//! was given (a TLS 1.3 ticket, a TLS 1.2 ticket or session id) gets an abbreviated handshake,
//! on STARTTLS and on direct TLS, and logs in over it; however many other clients came in
//! between; and never with a session another server made.

mod common;

use std::sync::Arc;

use common::*;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, HandshakeKind, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A pinned client that offers only `versions`; its session store (rustls' default) keeps what
/// the server gives it for the next connection.
fn client(t: &TestServer, versions: &[&'static SupportedProtocolVersion]) -> Arc<ClientConfig> {
    pinned_tls_config_for(t.cert_der.clone(), versions, vec![])
}

/// STARTTLS on the c2s port, then PLAIN and bind over the TLS stream: how the handshake went,
/// after a login that worked.
async fn starttls_login(t: &TestServer, tls: Arc<ClientConfig>, user: &str) -> HandshakeKind {
    let mut raw = Raw::connect(t.c2s()).await;
    raw.write(&open_to(DOMAIN)).await;
    let features = raw.element().await;
    assert!(features.has_child("starttls", corvid::xml::ns::TLS));
    raw.write("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await;
    assert_eq!(raw.element().await.name(), "proceed");
    let name = ServerName::try_from(DOMAIN).expect("name");
    let stream = TlsConnector::from(tls)
        .connect(name, raw.io)
        .await
        .expect("TLS handshake");
    let kind = stream.get_ref().1.handshake_kind().expect("handshake done");
    let mut raw = Raw::over_stream(Box::new(stream));
    raw.write(&open_to(DOMAIN)).await;
    let _features = raw.element().await;
    raw.auth_plain(user, PASSWORD).await;
    let success = raw.element().await;
    assert_eq!(success.name(), "success", "{success:?}");
    raw.reset_parser();
    raw.write(&open_to(DOMAIN)).await;
    let _features = raw.element().await;
    raw.write("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        .await;
    let bound = raw.element().await;
    assert_eq!(bound.attr("type"), Some("result"), "{bound:?}");
    raw.write("</stream:stream>").await;
    kind
}

/// A handshake on the direct TLS port, and the stream features read over it (which also
/// takes in the tickets the server sends after the handshake).
async fn direct_tls(addr: std::net::SocketAddr, tls: Arc<ClientConfig>) -> HandshakeKind {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(DOMAIN).expect("name");
    let mut stream = TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let kind = stream.get_ref().1.handshake_kind().expect("handshake done");
    stream.write_all(OPEN.as_bytes()).await.expect("write");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("</stream:features>") {
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("features in time")
            .expect("read");
        assert!(n > 0, "closed before features");
        seen.extend_from_slice(&buf[..n]);
    }
    kind
}

#[tokio::test]
async fn a_returning_starttls_client_resumes_with_tls_1_3() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    let tls = client(&t, &[&rustls::version::TLS13]);
    assert_eq!(
        starttls_login(&t, tls.clone(), "alice").await,
        HandshakeKind::Full
    );
    assert_eq!(
        starttls_login(&t, tls.clone(), "alice").await,
        HandshakeKind::Resumed
    );
    // Each ticket is good once; the server gave enough for a second return.
    assert_eq!(
        starttls_login(&t, tls, "alice").await,
        HandshakeKind::Resumed
    );
}

#[tokio::test]
async fn a_returning_starttls_client_resumes_with_tls_1_2() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    let tls = client(&t, &[&rustls::version::TLS12]);
    assert_eq!(
        starttls_login(&t, tls.clone(), "alice").await,
        HandshakeKind::Full
    );
    assert_eq!(
        starttls_login(&t, tls, "alice").await,
        HandshakeKind::Resumed
    );
}

#[tokio::test]
async fn a_returning_direct_tls_client_resumes() {
    let t = TestServer::start().await;
    let tls = pinned_tls_config(t.cert_der.clone(), vec![b"xmpp-client".to_vec()]);
    assert_eq!(
        direct_tls(t.direct_tls(), tls.clone()).await,
        HandshakeKind::Full
    );
    assert_eq!(
        direct_tls(t.direct_tls(), tls).await,
        HandshakeKind::Resumed
    );
}

/// The server keeps nothing per client for TLS 1.3: a client still resumes after more clients
/// than any session cache of a fixed size would hold came in between (rustls' default cache
/// held 256 sessions, two per connection).
#[tokio::test]
async fn a_client_resumes_after_many_others() {
    let t = TestServer::start().await;
    let alpn = || vec![b"xmpp-client".to_vec()];
    let returning = pinned_tls_config(t.cert_der.clone(), alpn());
    assert_eq!(
        direct_tls(t.direct_tls(), returning.clone()).await,
        HandshakeKind::Full
    );
    for _ in 0..300 {
        // A fresh config each time: a new client with nothing to resume.
        let other = pinned_tls_config(t.cert_der.clone(), alpn());
        assert_eq!(direct_tls(t.direct_tls(), other).await, HandshakeKind::Full);
    }
    assert_eq!(
        direct_tls(t.direct_tls(), returning).await,
        HandshakeKind::Resumed
    );
}

/// A session is resumed only by the server that made it: another server answering to the same
/// name (a restarted one, another node) does a full handshake, with its own certificate.
#[tokio::test]
async fn a_session_from_another_server_is_not_resumed() {
    let a = TestServer::start().await;
    let b = TestServer::start().await;
    let tls = pinned_tls_config(a.cert_der.clone(), vec![b"xmpp-client".to_vec()]);
    assert_eq!(
        direct_tls(a.direct_tls(), tls.clone()).await,
        HandshakeKind::Full
    );
    // b's certificate is not the pinned one: anything but a resumption fails verification.
    let tcp = TcpStream::connect(b.direct_tls()).await.expect("connect");
    let name = ServerName::try_from(DOMAIN).expect("name");
    let refused = TlsConnector::from(tls).connect(name, tcp).await;
    assert!(refused.is_err(), "b resumed a's session");
}
