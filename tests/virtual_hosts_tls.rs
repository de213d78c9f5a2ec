//! Each hosted domain has its own certificate: chosen by the stream's `to` on STARTTLS and by
//! SNI on direct TLS and HTTPS, and the one tls-server-end-point hashes. Clients here pin one
//! domain's certificate (read from its file), so a handshake completes only when the server
//! presented exactly that one.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use common::*;
use minidom::Element;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const B: &str = "b.example";

/// `localhost` and `b.example`, each with a self-signed certificate generated into the temp
/// dir on start.
async fn server() -> TestServer {
    let t = TestServer::start_with(|config| {
        config
            .hosts
            .insert(B.into(), corvid::config::HostConfig::default());
    })
    .await;
    assert_ne!(t.cert_der_of(DOMAIN), t.cert_der_of(B), "two certificates");
    assert_eq!(
        t.cert_der_of(DOMAIN),
        t.cert_der,
        "the main one is localhost's"
    );
    t
}

fn open(to: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' to='{to}' version='1.0'>"
    )
}

/// A client trusting `pinned` only, sending `sni` (none when `None`).
fn client_config(pinned: Vec<u8>, sni: Option<&str>, alpn: &[u8]) -> (Arc<ClientConfig>, String) {
    let alpn = if alpn.is_empty() {
        vec![]
    } else {
        vec![alpn.to_vec()]
    };
    let mut config = (*pinned_tls_config(pinned, alpn)).clone();
    config.enable_sni = sni.is_some();
    // Without SNI the name is only what the (pinning) verifier is told.
    (Arc::new(config), sni.unwrap_or(DOMAIN).to_owned())
}

/// A TLS handshake on a fresh connection to `addr` (direct TLS or HTTPS).
async fn handshake(
    addr: SocketAddr,
    pinned: Vec<u8>,
    sni: Option<&str>,
    alpn: &[u8],
) -> std::io::Result<TlsStream<TcpStream>> {
    let (config, name) = client_config(pinned, sni, alpn);
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name).expect("server name");
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// A stream to `to` on 5222 up to `<proceed/>`, then the handshake sending `sni`.
async fn starttls(
    t: &TestServer,
    to: &str,
    sni: Option<&str>,
    pinned: Vec<u8>,
) -> std::io::Result<Raw> {
    let mut raw = Raw::connect(t.c2s()).await;
    raw.write(&open(to)).await;
    let features = raw.element().await;
    assert!(
        features.has_child("starttls", corvid::xml::ns::TLS),
        "{features:?}"
    );
    raw.write("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await;
    assert_eq!(raw.element().await.name(), "proceed");
    let (config, name) = client_config(pinned, sni, b"");
    let name = ServerName::try_from(name).expect("server name");
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, raw.io)
        .await?;
    Ok(Raw::over_stream(Box::new(tls)))
}

/// Opens the stream to `to` over an established TLS connection; returns the SASL mechanisms
/// offered (where this suite stops: logging in to b.example is not about certificates).
async fn mechanisms(raw: &mut Raw, to: &str) -> Vec<String> {
    raw.write(&open(to)).await;
    let features = raw.element().await;
    features
        .get_child("mechanisms", corvid::xml::ns::SASL)
        .map(|m| m.children().map(Element::text).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn starttls_presents_the_certificate_of_the_streams_to() {
    let t = server().await;
    let (main, b) = (t.cert_der_of(DOMAIN), t.cert_der_of(B));
    // SNI, when it names the other domain, does not decide: the stream header did.
    for (to, sni, own, other) in [
        (B, Some(B), &b, &main),
        (B, Some(DOMAIN), &b, &main),
        (B, None, &b, &main),
        (DOMAIN, Some(DOMAIN), &main, &b),
        (DOMAIN, Some(B), &main, &b),
    ] {
        let what = format!("to='{to}', SNI {sni:?}");
        let mut raw = starttls(&t, to, sni, own.clone())
            .await
            .unwrap_or_else(|e| panic!("{what}: the handshake fails: {e}"));
        let offered = mechanisms(&mut raw, to).await;
        assert!(
            offered.iter().any(|m| m == "SCRAM-SHA-256-PLUS"),
            "{what}: {offered:?}"
        );
        assert!(
            starttls(&t, to, sni, other.clone()).await.is_err(),
            "{what}: the other domain's certificate was presented"
        );
    }
}

#[tokio::test]
async fn direct_tls_presents_the_certificate_named_by_sni() {
    let t = server().await;
    let (main, b) = (t.cert_der_of(DOMAIN), t.cert_der_of(B));
    for (sni, own, other) in [
        (Some(B), &b, &main),
        (Some("conference.b.example"), &b, &main),
        (Some("upload.b.example"), &b, &main),
        (Some(DOMAIN), &main, &b),
        (Some("conference.localhost"), &main, &b),
        (Some("unknown.example"), &main, &b),
        (None, &main, &b),
    ] {
        let tls = handshake(t.direct_tls(), own.clone(), sni, b"xmpp-client")
            .await
            .unwrap_or_else(|e| panic!("SNI {sni:?}: the handshake fails: {e}"));
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"xmpp-client"[..]));
        let mut raw = Raw::over_stream(Box::new(tls));
        assert!(
            !mechanisms(&mut raw, DOMAIN).await.is_empty(),
            "SNI {sni:?}: SASL offered"
        );
        assert!(
            handshake(t.direct_tls(), other.clone(), sni, b"xmpp-client")
                .await
                .is_err(),
            "SNI {sni:?}: the other domain's certificate was presented"
        );
    }
}

#[tokio::test]
async fn https_presents_the_certificate_named_by_sni() {
    let t = server().await;
    let https = t.server.https_addr.expect("https listener");
    let (main, b) = (t.cert_der_of(DOMAIN), t.cert_der_of(B));
    for (sni, own, other) in [
        (Some(B), &b, &main),
        (Some("conference.b.example"), &b, &main),
        (Some(DOMAIN), &main, &b),
        (None, &main, &b),
    ] {
        let tls = handshake(https, own.clone(), sni, b"http/1.1")
            .await
            .unwrap_or_else(|e| panic!("SNI {sni:?}: the handshake fails: {e}"));
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let host = sni.unwrap_or(DOMAIN);
        let mut request = format!("wss://{host}:{}/xmpp-websocket", https.port())
            .into_client_request()
            .expect("request");
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "xmpp".parse().expect("header"));
        tokio_tungstenite::client_async(request, tls)
            .await
            .unwrap_or_else(|e| panic!("SNI {sni:?}: the WebSocket upgrade fails: {e}"));
        assert!(
            handshake(https, other.clone(), sni, b"http/1.1")
                .await
                .is_err(),
            "SNI {sni:?}: the other domain's certificate was presented"
        );
    }
}

/// RFC 5929 tls-server-end-point is the hash of the certificate this connection was served:
/// b.example's when SNI named it, even on a stream to localhost.
#[tokio::test]
async fn tls_server_end_point_hashes_the_certificate_served_by_sni() {
    use sha2::Digest;
    let t = server().await;
    t.add_user("dave").await;
    let (main, b) = (t.cert_der_of(DOMAIN), t.cert_der_of(B));
    for (hashed, expected) in [(&b, "success"), (&main, "failure")] {
        let tls = handshake(t.direct_tls(), b.clone(), Some(B), b"xmpp-client")
            .await
            .expect("handshake");
        let mut raw = Raw::over_stream(Box::new(tls));
        let offered = mechanisms(&mut raw, DOMAIN).await;
        assert!(
            offered.iter().any(|m| m == "SCRAM-SHA-256-PLUS"),
            "{offered:?}"
        );
        // Both certificates are ECDSA with SHA-256, so the binding is their SHA-256.
        let cb_data = sha2::Sha256::digest(hashed).to_vec();
        let outcome = scram_sha256_plus_end_point(&mut raw, "dave", &cb_data).await;
        assert_eq!(outcome.name(), expected, "{outcome:?}");
    }
}

/// SCRAM-SHA-256-PLUS with tls-server-end-point `cb_data` (RFC 5802, RFC 7677); the `sasl`
/// crate has no tls-server-end-point. Returns the server's last answer.
async fn scram_sha256_plus_end_point(raw: &mut Raw, user: &str, cb_data: &[u8]) -> Element {
    use hmac::{Hmac, Mac};
    use sha2::Digest;
    let gs2 = "p=tls-server-end-point,,";
    let client_first_bare = format!("n={user},r=rOprNGfwEbeRWgbNEkqO");
    raw.write(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256-PLUS'>{}</auth>",
        BASE64.encode(format!("{gs2}{client_first_bare}"))
    ))
    .await;
    let challenge = raw.element().await;
    assert_eq!(challenge.name(), "challenge", "{challenge:?}");
    let server_first =
        String::from_utf8(BASE64.decode(challenge.text()).expect("base64")).expect("UTF-8");
    let field = |k: &str| {
        server_first
            .split(',')
            .find_map(|p| p.strip_prefix(&format!("{k}=")))
            .expect("field")
            .to_owned()
    };
    let salt = BASE64.decode(field("s")).expect("salt");
    let iterations: u32 = field("i").parse().expect("iterations");
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(PASSWORD.as_bytes(), &salt, iterations, &mut salted);
    let hmac = |key: &[u8], data: &[u8]| {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("key");
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    };
    let client_key = hmac(&salted, b"Client Key");
    let stored_key = sha2::Sha256::digest(&client_key);
    let mut cbind = gs2.as_bytes().to_vec();
    cbind.extend_from_slice(cb_data);
    let without_proof = format!("c={},r={}", BASE64.encode(&cbind), field("r"));
    let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
    let signature = hmac(&stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(signature)
        .map(|(a, b)| a ^ b)
        .collect();
    raw.write(&format!(
        "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
        BASE64.encode(format!("{without_proof},p={}", BASE64.encode(proof)))
    ))
    .await;
    raw.element().await
}
