//! Logging in over every listener and mechanism, with tokio-xmpp as the independent client
//! where it can, and raw streams with the `sasl` crate's client where the mechanism matters.

mod common;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use common::*;
use futures::{SinkExt, StreamExt};
use minidom::Element;
use sasl::client::mechanisms::Scram;
use sasl::client::Mechanism as _;
use sasl::common::scram::Sha256;
use sasl::common::{ChannelBinding, Credentials};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn starttls_login_with_scram_sha_256() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    let mut alice = t.client("alice", "laptop", false);
    assert_eq!(online(&mut alice).await, "alice@localhost/laptop");
}

#[tokio::test]
async fn starttls_login_with_scram_sha_256_plus_tls_exporter() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    let mut alice = t.client("alice", "laptop", true);
    assert_eq!(online(&mut alice).await, "alice@localhost/laptop");
}

#[tokio::test]
async fn direct_tls_login() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    let mut alice = t.client_via("alice", "phone", Mode::DirectTls, true);
    assert_eq!(online(&mut alice).await, "alice@localhost/phone");
}

#[tokio::test]
async fn features_offer_tls_first_then_scram_plus_and_channel_binding_types() {
    let t = TestServer::start().await;
    let mut raw = Raw::connect(t.c2s()).await;
    raw.write(OPEN).await;
    let features = raw.element().await;
    let starttls = features
        .get_child("starttls", corvid::xml::ns::TLS)
        .expect("starttls offered");
    assert!(starttls.has_child("required", corvid::xml::ns::TLS));
    assert!(
        !features.has_child("mechanisms", corvid::xml::ns::SASL),
        "no SASL before TLS when encryption is required"
    );

    let mut raw = Raw::connect(t.c2s()).await.starttls(t.tls_config()).await;
    raw.write(OPEN).await;
    let features = raw.element().await;
    let mechanisms: Vec<String> = features
        .get_child("mechanisms", corvid::xml::ns::SASL)
        .expect("mechanisms")
        .children()
        .map(|m| m.text())
        .collect();
    for expected in [
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-1-PLUS",
        "SCRAM-SHA-256",
        "SCRAM-SHA-1",
        "PLAIN",
    ] {
        assert!(
            mechanisms.iter().any(|m| m == expected),
            "{expected} in {mechanisms:?}"
        );
    }
    let types: Vec<&str> = features
        .get_child("sasl-channel-binding", "urn:xmpp:sasl-cb:0")
        .expect("XEP-0440 advertisement")
        .children()
        .filter_map(|c| c.attr("type"))
        .collect();
    assert!(types.contains(&"tls-exporter"), "{types:?}");
    assert!(types.contains(&"tls-server-end-point"), "{types:?}");
}

#[tokio::test]
async fn plain_login_then_bind_with_generated_resource() {
    let t = TestServer::start().await;
    t.add_user("bob").await;
    let mut raw = Raw::connect(t.c2s()).await.starttls(t.tls_config()).await;
    raw.write(OPEN).await;
    raw.element().await;
    raw.auth_plain("bob", PASSWORD).await;
    assert_eq!(raw.element().await.name(), "success");
    raw.reset_parser();
    raw.write(OPEN).await;
    let features = raw.element().await;
    assert!(features.has_child("bind", corvid::xml::ns::BIND));
    raw.write("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        .await;
    let reply = raw.element().await;
    assert_eq!(reply.attr("type"), Some("result"));
    let jid = reply
        .get_child("bind", corvid::xml::ns::BIND)
        .and_then(|b| b.get_child("jid", corvid::xml::ns::BIND))
        .map(|j| j.text())
        .expect("jid");
    assert!(
        jid.starts_with("bob@localhost/") && jid.len() > "bob@localhost/".len(),
        "{jid}"
    );
}

#[tokio::test]
async fn wrong_password_is_not_authorized_and_client_may_retry() {
    let t = TestServer::start().await;
    t.add_user("carol").await;
    let mut raw = Raw::connect(t.c2s()).await.starttls(t.tls_config()).await;
    raw.write(OPEN).await;
    raw.element().await;
    raw.auth_plain("carol", "wrong").await;
    let failure = raw.element().await;
    assert_eq!(failure.name(), "failure");
    assert!(failure.has_child("not-authorized", corvid::xml::ns::SASL));
    // Unknown users look exactly the same.
    raw.auth_plain("nobody", "wrong").await;
    let failure = raw.element().await;
    assert!(failure.has_child("not-authorized", corvid::xml::ns::SASL));
    raw.auth_plain("carol", PASSWORD).await;
    assert_eq!(raw.element().await.name(), "success");
}

/// Runs a SCRAM exchange with the `sasl` crate's client on a raw stream.
async fn raw_scram(raw: &mut Raw, mechanism: &str, binding: ChannelBinding) -> Element {
    let creds = Credentials::default()
        .with_username("dave")
        .with_password(PASSWORD)
        .with_channel_binding(binding);
    let mut client = Scram::<Sha256>::from_credentials(creds).expect("scram client");
    assert_eq!(client.name(), mechanism);
    let initial = BASE64.encode(client.initial());
    raw.write(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mechanism}'>{initial}</auth>"
    ))
    .await;
    let challenge = raw.element().await;
    if challenge.name() == "failure" {
        return challenge;
    }
    assert_eq!(challenge.name(), "challenge", "{challenge:?}");
    let server_first = BASE64.decode(challenge.text()).expect("base64");
    let response = client.response(&server_first).expect("client final");
    raw.write(&format!(
        "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
        BASE64.encode(response)
    ))
    .await;
    let outcome = raw.element().await;
    if outcome.name() == "success" {
        let server_final = BASE64.decode(outcome.text()).expect("base64");
        client
            .success(&server_final)
            .expect("server signature verifies");
    }
    outcome
}

/// A disabled account (XEP-0133) is refused with `<account-disabled/>` after a right password,
/// by SCRAM as by PLAIN; a wrong password stays `<not-authorized/>`, so the answer tells
/// nothing about the account to someone without its password. The standing is read with the
/// credentials, in the same statement.
#[tokio::test]
async fn a_disabled_account_is_refused_only_after_a_right_password() {
    let t = TestServer::start().await;
    t.add_user("dave").await;
    t.storage()
        .admin
        .set_disabled(&account("dave"), true)
        .await
        .expect("disable");
    let mut raw = Raw::connect(t.c2s()).await.starttls(t.tls_config()).await;
    raw.write(OPEN).await;
    raw.element().await;
    let condition = |el: &Element| {
        assert_eq!(el.name(), "failure", "{el:?}");
        el.children()
            .find(|c| c.ns() == corvid::xml::ns::SASL)
            .map(|c| c.name().to_owned())
            .expect("a condition")
    };
    let outcome = raw_scram(&mut raw, "SCRAM-SHA-256", ChannelBinding::None).await;
    assert_eq!(condition(&outcome), "account-disabled");
    raw.auth_plain("dave", "wrong").await;
    assert_eq!(condition(&raw.element().await), "not-authorized");
    raw.auth_plain("dave", PASSWORD).await;
    assert_eq!(condition(&raw.element().await), "account-disabled");
    t.storage()
        .admin
        .set_disabled(&account("dave"), false)
        .await
        .expect("enable");
    raw.auth_plain("dave", PASSWORD).await;
    assert_eq!(raw.element().await.name(), "success");
}

#[tokio::test]
async fn scram_plus_binding_mismatch_and_downgrade_are_refused() {
    let t = TestServer::start().await;
    t.add_user("dave").await;
    let mut raw = Raw::connect(t.c2s()).await.starttls(t.tls_config()).await;
    raw.write(OPEN).await;
    raw.element().await;
    let right = raw.exporter.clone().expect("tls exporter");
    let outcome = raw_scram(
        &mut raw,
        "SCRAM-SHA-256-PLUS",
        ChannelBinding::TlsExporter(vec![0; 32]),
    )
    .await;
    assert_eq!(outcome.name(), "failure", "wrong binding data must fail");
    // 'y' says "I could bind but you did not offer it": a downgrade, since we did offer it.
    let outcome = raw_scram(&mut raw, "SCRAM-SHA-256", ChannelBinding::Unsupported).await;
    assert_eq!(
        outcome.name(),
        "failure",
        "y,, must fail when -PLUS was offered"
    );
    let outcome = raw_scram(
        &mut raw,
        "SCRAM-SHA-256-PLUS",
        ChannelBinding::TlsExporter(right),
    )
    .await;
    assert_eq!(outcome.name(), "success");
}

#[tokio::test]
async fn scram_plus_with_tls_server_end_point() {
    use hmac::{Hmac, Mac};
    use sha2::Digest;
    let t = TestServer::start().await;
    t.add_user("dave").await;
    let mut raw = Raw::connect(t.c2s()).await.starttls(t.tls_config()).await;
    raw.write(OPEN).await;
    raw.element().await;
    // RFC 5929: the hash of the server certificate (ECDSA-SHA256 here, so SHA-256).
    let cb_data = sha2::Sha256::digest(&t.cert_der).to_vec();
    let gs2 = "p=tls-server-end-point,,";
    let client_nonce = "fyko+d2lbbFgONRv9qkxdawL";
    let client_first_bare = format!("n=dave,r={client_nonce}");
    raw.write(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256-PLUS'>{}</auth>",
        BASE64.encode(format!("{gs2}{client_first_bare}"))
    ))
    .await;
    let challenge = raw.element().await;
    let server_first = String::from_utf8(BASE64.decode(challenge.text()).unwrap()).unwrap();
    let field = |k: &str| {
        server_first
            .split(',')
            .find_map(|p| p.strip_prefix(&format!("{k}=")))
            .unwrap()
            .to_string()
    };
    let (nonce, salt, iterations) = (
        field("r"),
        BASE64.decode(field("s")).unwrap(),
        field("i").parse::<u32>().unwrap(),
    );
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(PASSWORD.as_bytes(), &salt, iterations, &mut salted);
    let hmac = |key: &[u8], data: &[u8]| {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    };
    let client_key = hmac(&salted, b"Client Key");
    let stored_key = sha2::Sha256::digest(&client_key);
    let mut cbind = gs2.as_bytes().to_vec();
    cbind.extend_from_slice(&cb_data);
    let without_proof = format!("c={},r={nonce}", BASE64.encode(&cbind));
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
    let outcome = raw.element().await;
    assert_eq!(outcome.name(), "success", "{outcome:?}");
    let server_key = hmac(&salted, b"Server Key");
    let expected = format!(
        "v={}",
        BASE64.encode(hmac(&server_key, auth_message.as_bytes()))
    );
    assert_eq!(
        String::from_utf8(BASE64.decode(outcome.text()).unwrap()).unwrap(),
        expected
    );
}

// ---------------------------------------------------------------------------------------------
// WebSocket (RFC 7395)

type Ws = tokio_tungstenite::WebSocketStream<Box<dyn Io>>;

fn ws_request(url: &str) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "xmpp".parse().unwrap());
    request
}

/// ws:// to the plain HTTP listener, or wss:// through rustls (pinned certificate).
pub async fn ws_connect(t: &TestServer, secure: bool) -> Ws {
    let (addr, url) = if secure {
        let addr = t.server.https_addr.expect("https listener");
        (
            addr,
            format!("wss://localhost:{}/xmpp-websocket", addr.port()),
        )
    } else {
        (t.http(), format!("ws://{}/xmpp-websocket", t.http()))
    };
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let io: Box<dyn Io> = if secure {
        let config = pinned_tls_config(t.cert_der.clone(), vec![b"http/1.1".to_vec()]);
        let name = rustls::pki_types::ServerName::try_from(DOMAIN).unwrap();
        Box::new(
            tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .unwrap(),
        )
    } else {
        Box::new(tcp)
    };
    let (ws, response) = tokio_tungstenite::client_async(ws_request(&url), io)
        .await
        .expect("ws handshake");
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("xmpp")
    );
    ws
}

#[tokio::test]
async fn websocket_without_xmpp_subprotocol_is_refused() {
    let t = TestServer::start().await;
    let request = format!("ws://{}/xmpp-websocket", t.http())
        .into_client_request()
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(t.http()).await.unwrap();
    assert!(tokio_tungstenite::client_async(request, tcp).await.is_err());
}

#[tokio::test]
async fn host_meta_announces_the_websocket_endpoint() {
    let t = TestServer::start().await;
    let addr = t.http();
    let fetch = move |path: &'static str| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    let xml = fetch("/.well-known/host-meta").await;
    assert!(xml.starts_with("HTTP/1.1 200"), "{xml}");
    assert!(xml.contains("urn:xmpp:alt-connections:websocket"));
    let https_port = t.server.https_addr.unwrap().port();
    assert!(
        xml.contains(&format!(
            "href='wss://localhost:{https_port}/xmpp-websocket'"
        )),
        "{xml}"
    );
    let json = fetch("/.well-known/host-meta.json").await;
    assert!(
        json.contains("\"rel\":\"urn:xmpp:alt-connections:websocket\""),
        "{json}"
    );
    assert!(json
        .to_ascii_lowercase()
        .contains("access-control-allow-origin: *"));
}

const WS_OPEN: &str =
    "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>";

/// Opens the stream; returns the features.
async fn ws_open(ws: &mut Ws) -> Element {
    ws.send(Message::Text(WS_OPEN.into())).await.unwrap();
    let reply = ws_element(ws).await;
    assert!(
        reply.is("open", "urn:ietf:params:xml:ns:xmpp-framing"),
        "{reply:?}"
    );
    let features = ws_element(ws).await;
    assert!(
        features.is("features", "http://etherx.jabber.org/streams"),
        "{features:?}"
    );
    features
}

/// Logs in over WebSocket with SCRAM-SHA-256 (the `sasl` crate's client) and binds.
pub async fn ws_login(t: &TestServer, user: &str, resource: &str, secure: bool) -> Ws {
    let mut ws = ws_connect(t, secure).await;
    let features = ws_open(&mut ws).await;
    let mechanisms: Vec<String> = features
        .get_child("mechanisms", corvid::xml::ns::SASL)
        .expect("mechanisms over an encrypted (or loopback) WebSocket")
        .children()
        .map(|m| m.text())
        .collect();
    assert!(
        mechanisms.iter().any(|m| m == "SCRAM-SHA-256"),
        "{mechanisms:?}"
    );
    let creds = Credentials::default()
        .with_username(user)
        .with_password(PASSWORD)
        .with_channel_binding(ChannelBinding::None);
    let mut client = Scram::<Sha256>::from_credentials(creds).unwrap();
    let auth = format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>{}</auth>",
        BASE64.encode(client.initial())
    );
    ws.send(Message::Text(auth.into())).await.unwrap();
    let challenge = ws_element(&mut ws).await;
    let response = client
        .response(&BASE64.decode(challenge.text()).unwrap())
        .unwrap();
    let response = format!(
        "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
        BASE64.encode(response)
    );
    ws.send(Message::Text(response.into())).await.unwrap();
    let success = ws_element(&mut ws).await;
    assert_eq!(success.name(), "success", "{success:?}");
    let features = ws_open(&mut ws).await;
    assert!(features.has_child("bind", corvid::xml::ns::BIND));
    let bind = format!(
        "<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
    );
    ws.send(Message::Text(bind.into())).await.unwrap();
    let bound = ws_element(&mut ws).await;
    assert_eq!(bound.attr("type"), Some("result"));
    ws
}

pub async fn ws_element<S>(ws: &mut S) -> Element
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("ws message in time")
            .expect("ws open")
            .expect("ws ok");
        if let Message::Text(text) = message {
            return corvid::xml::parse_standalone(text.as_bytes(), corvid::xml::XmlLimits::STORED)
                .unwrap_or_else(|e| panic!("frame {text} not an element: {e}"));
        }
    }
}

#[tokio::test]
async fn websocket_login_and_chat_with_a_tcp_user() {
    let t = TestServer::start().await;
    t.add_user("webby").await;
    t.add_user("tcpuser").await;
    let mut ws = ws_login(&t, "webby", "browser", true).await;
    let mut tcp = t.client("tcpuser", "desk", true);
    online(&mut tcp).await;

    ws.send(Message::Text("<presence xmlns='jabber:client'/>".into()))
        .await
        .unwrap();
    let own = ws_element(&mut ws).await;
    assert_eq!(own.name(), "presence");

    send(&mut tcp, "<message xmlns='jabber:client' to='webby@localhost/browser' type='chat' id='m1'><body>hello from tcp</body></message>").await;
    let got = ws_element(&mut ws).await;
    assert_eq!(got.attr("from"), Some("tcpuser@localhost/desk"));
    assert_eq!(body(&got), "hello from tcp");

    ws.send(Message::Text(
        "<message xmlns='jabber:client' to='tcpuser@localhost/desk' type='chat' id='m2'><body>hello from ws</body></message>".into(),
    ))
    .await
    .unwrap();
    let got = next_matching(&mut tcp, is_message_with_body).await;
    assert_eq!(got.attr("from"), Some("webby@localhost/browser"));
    assert_eq!(body(&got), "hello from ws");

    ws.send(Message::Text(
        "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>".into(),
    ))
    .await
    .unwrap();
    let close = ws_element(&mut ws).await;
    assert!(close.is("close", "urn:ietf:params:xml:ns:xmpp-framing"));
}

#[tokio::test]
async fn websocket_on_loopback_counts_as_encrypted() {
    let t = TestServer::start().await;
    t.add_user("webby").await;
    let mut ws = ws_login(&t, "webby", "local", false).await;
    ws.send(Message::Text(
        "<iq xmlns='jabber:client' type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>".into(),
    ))
    .await
    .unwrap();
    assert_eq!(ws_element(&mut ws).await.attr("type"), Some("result"));
}

#[tokio::test]
async fn unencrypted_websocket_may_not_authenticate_when_encryption_is_required() {
    let t = TestServer::start_with(|c| c.http.loopback_is_secure = false).await;
    t.add_user("webby").await;
    let mut ws = ws_connect(&t, false).await;
    let features = ws_open(&mut ws).await;
    assert!(
        !features.has_child("mechanisms", corvid::xml::ns::SASL),
        "{features:?}"
    );
    let token = BASE64.encode(format!("\0webby\0{PASSWORD}"));
    ws.send(Message::Text(
        format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
            .into(),
    ))
    .await
    .unwrap();
    let failure = ws_element(&mut ws).await;
    assert!(
        failure.has_child("encryption-required", corvid::xml::ns::SASL),
        "{failure:?}"
    );
}

/// The negotiation deadline now counts from TCP accept and bounds the HTTP connection until
/// the upgrade: a bound WebSocket session must not be cut by it (ws and wss).
#[tokio::test]
async fn a_websocket_session_outlives_the_negotiation_timeout() {
    let t = TestServer::start_with(|c| c.c2s.negotiation_timeout_secs = 2).await;
    t.add_user("lasting").await;
    let mut sessions = Vec::new();
    for secure in [false, true] {
        sessions.push(ws_login(&t, "lasting", &format!("r{secure}"), secure).await);
    }
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    for ws in &mut sessions {
        ws.send(Message::Text(
            "<iq xmlns='jabber:client' type='get' id='late'><ping xmlns='urn:xmpp:ping'/></iq>"
                .into(),
        ))
        .await
        .expect("still open");
        loop {
            let el = ws_element(ws).await;
            if el.attr("id") == Some("late") {
                assert_eq!(el.attr("type"), Some("result"));
                break;
            }
        }
    }
}

/// Issue 13: `[http] enabled = false` opens no HTTP listener at all, the HTTPS one included,
/// even with `tls_enabled` left at its default.
#[tokio::test]
async fn http_disabled_opens_neither_http_nor_https() {
    let t = TestServer::start_with(|c| {
        c.http.enabled = false;
        assert!(c.http.tls_enabled, "the default stays on");
    })
    .await;
    assert!(t.server.http_addr.is_none());
    assert!(t.server.https_addr.is_none());
}

/// XEP-0478: an authenticated client learns the largest stanza it may send.
#[tokio::test]
async fn the_stanza_size_limit_is_advertised_after_authentication() {
    let t = TestServer::start_with(|c| c.c2s.max_stanza_size = 100_000).await;
    t.add_user("alice").await;
    let (_raw, features) = Raw::authenticated(t.c2s(), t.tls_config(), "alice").await;
    let max = features
        .get_child("limits", "urn:xmpp:stream-limits:0")
        .and_then(|limits| limits.get_child("max-bytes", "urn:xmpp:stream-limits:0"))
        .map(|max| max.text());
    assert_eq!(max.as_deref(), Some("100000"), "{features:?}");
}
