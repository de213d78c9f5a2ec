//! RFC 7590 (Use of TLS in XMPP): TLS 1.2 and 1.3 are accepted with forward-secret AEAD suites,
//! and nothing older: a client that offers only TLS 1.0 is refused with a fatal alert instead of
//! being served a downgraded connection.

mod common;

use std::sync::Arc;

use common::*;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Connects to the direct TLS listener with `config` and returns what was negotiated, after
/// checking that an XMPP stream really runs over it.
async fn negotiated(t: &TestServer, config: Arc<ClientConfig>) -> (ProtocolVersion, String) {
    let tcp = TcpStream::connect(t.direct_tls()).await.expect("connect");
    let name = ServerName::try_from(DOMAIN).expect("server name");
    let mut tls = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let (version, suite) = {
        let (_, connection) = tls.get_ref();
        (
            connection.protocol_version().expect("a version"),
            format!(
                "{:?}",
                connection
                    .negotiated_cipher_suite()
                    .expect("a suite")
                    .suite()
            ),
        )
    };
    tls.write_all(OPEN.as_bytes()).await.expect("write");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("</stream:features>") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), tls.read(&mut buf))
            .await
            .expect("features in time")
            .expect("read");
        assert!(n > 0, "closed before features");
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&seen).contains("urn:ietf:params:xml:ns:xmpp-sasl"));
    (version, suite)
}

#[tokio::test]
async fn tls_1_2_is_served_with_an_ephemeral_aead_suite() {
    let t = TestServer::start().await;
    let config = pinned_tls_config_for(
        t.cert_der.clone(),
        &[&rustls::version::TLS12],
        vec![b"xmpp-client".to_vec()],
    );
    let (version, suite) = negotiated(&t, config).await;
    assert_eq!(version, ProtocolVersion::TLSv1_2);
    assert!(
        suite.starts_with("TLS_ECDHE_") && (suite.contains("_GCM_") || suite.contains("CHACHA20")),
        "forward secrecy and an AEAD cipher: {suite}"
    );
}

#[tokio::test]
async fn tls_1_3_is_served() {
    let t = TestServer::start().await;
    let config = pinned_tls_config_for(
        t.cert_der.clone(),
        &[&rustls::version::TLS13],
        vec![b"xmpp-client".to_vec()],
    );
    let (version, _) = negotiated(&t, config).await;
    assert_eq!(version, ProtocolVersion::TLSv1_3);
}

/// A ClientHello as a TLS 1.0-only client sends it: legacy version 3.1, no
/// supported_versions extension, CBC suites only.
fn tls_1_0_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x01];
    body.extend_from_slice(&[0x5a; 32]);
    body.push(0); // no session id
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]); // ECDHE-RSA/RSA AES128-CBC-SHA
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut handshake = vec![0x01, 0x00];
    handshake.extend_from_slice(&(body.len() as u16).to_be_bytes());
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test]
async fn a_tls_1_0_client_is_refused_with_a_fatal_alert() {
    let t = TestServer::start().await;
    let mut tcp = TcpStream::connect(t.direct_tls()).await.expect("connect");
    tcp.write_all(&tls_1_0_client_hello()).await.expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp.read_to_end(&mut answer),
    )
    .await
    .expect("answered and closed in time");
    // A reset after the alert is as good as a close.
    if let Err(e) = read {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    // One alert record (21), fatal (2): protocol_version (70) or handshake_failure (40), as
    // the TLS library ranks the missing version and the missing suites; never a ServerHello.
    assert_eq!(
        answer.len(),
        7,
        "one alert record and nothing else: {answer:?}"
    );
    assert_eq!(answer[0], 0x15, "alert content type: {answer:?}");
    assert_eq!(answer[5], 0x02, "fatal: {answer:?}");
    assert!(matches!(answer[6], 0x46 | 0x28), "refusal: {answer:?}");
}
