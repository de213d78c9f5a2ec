//! XEP-0388 SASL2, XEP-0386 Bind2 and XEP-0484 FAST over real STARTTLS connections, with the
//! XML written by hand (no client library speaks SASL2) and SCRAM run by the `sasl` crate's
//! client, which verifies the server signature on its own.

mod common;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use common::xmpp::Session;
use common::*;
use corvid::xml::ns;
use hmac::{Hmac, Mac};
use minidom::Element;
use sasl::client::mechanisms::Scram;
use sasl::client::Mechanism as _;
use sasl::common::scram::Sha256;
use sasl::common::{ChannelBinding, Credentials};

const SASL2: &str = "urn:xmpp:sasl:2";
const FAST: &str = "urn:xmpp:fast:0";
const BIND2: &str = "urn:xmpp:bind:0";

/// STARTTLS, then the stream header; returns the pre-authentication features.
async fn connect(t: &TestServer) -> (Raw, Element) {
    let mut raw = Raw::connect(t.c2s()).await.starttls(t.tls_config()).await;
    raw.write(OPEN).await;
    let features = raw.element().await;
    assert_eq!(features.name(), "features");
    (raw, features)
}

fn user_agent(id: &str) -> String {
    format!(
        "<user-agent id='{id}'><software>corvid-test</software><device>ci</device></user-agent>"
    )
}

fn bind2(tag: &str, extra: &str) -> String {
    format!("<bind xmlns='{BIND2}'><tag>{tag}</tag>{extra}</bind>")
}

/// A SASL2 SCRAM-SHA-256 login; `inline` goes inside `<authenticate/>`. On success the
/// additional data must carry a server signature the client accepts.
async fn scram_login(raw: &mut Raw, user: &str, inline: &str) -> Element {
    scram_login_with(raw, user, inline, ChannelBinding::None).await
}

/// `scram_login` with channel binding: SCRAM-SHA-256-PLUS unless `binding` is None.
async fn scram_login_with(
    raw: &mut Raw,
    user: &str,
    inline: &str,
    binding: ChannelBinding,
) -> Element {
    let creds = Credentials::default()
        .with_username(user)
        .with_password(PASSWORD)
        .with_channel_binding(binding);
    let mut client = Scram::<Sha256>::from_credentials(creds).expect("scram client");
    let mechanism = client.name().to_string();
    raw.write(&format!(
        "<authenticate xmlns='{SASL2}' mechanism='{mechanism}'>\
         <initial-response>{}</initial-response>{inline}</authenticate>",
        BASE64.encode(client.initial())
    ))
    .await;
    let challenge = raw.element().await;
    assert!(challenge.is("challenge", SASL2), "{challenge:?}");
    let response = client
        .response(&BASE64.decode(challenge.text().trim()).expect("base64"))
        .expect("client-final");
    raw.write(&format!(
        "<response xmlns='{SASL2}'>{}</response>",
        BASE64.encode(response)
    ))
    .await;
    let outcome = raw.element().await;
    if outcome.is("success", SASL2) {
        let data = outcome
            .get_child("additional-data", SASL2)
            .expect("additional-data")
            .text();
        client
            .success(&BASE64.decode(data.trim()).expect("base64"))
            .expect("the server signature verifies");
    }
    outcome
}

async fn plain_login(raw: &mut Raw, user: &str, inline: &str) -> Element {
    raw.write(&format!(
        "<authenticate xmlns='{SASL2}' mechanism='PLAIN'>\
         <initial-response>{}</initial-response>{inline}</authenticate>",
        BASE64.encode(format!("\0{user}\0{PASSWORD}"))
    ))
    .await;
    raw.element().await
}

fn hmac(key: &[u8], label: &[u8], cb: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("hmac key");
    mac.update(label);
    mac.update(cb);
    mac.finalize().into_bytes().to_vec()
}

/// A FAST login (draft-schmaus-kitten-sasl-ht): `user NUL HMAC(token, "Initiator" || cb)`. On
/// success the server must prove it knows the token too: `HMAC(token, "Responder" || cb)`.
async fn token_login(
    raw: &mut Raw,
    mechanism: &str,
    user: &str,
    token: &str,
    cb: &[u8],
    inline: &str,
) -> Element {
    let mut message = format!("{user}\0").into_bytes();
    message.extend(hmac(token.as_bytes(), b"Initiator", cb));
    raw.write(&format!(
        "<authenticate xmlns='{SASL2}' mechanism='{mechanism}'>\
         <initial-response>{}</initial-response>{inline}</authenticate>",
        BASE64.encode(message)
    ))
    .await;
    let outcome = raw.element().await;
    if outcome.is("success", SASL2) {
        let data = outcome
            .get_child("additional-data", SASL2)
            .expect("additional-data")
            .text();
        assert_eq!(
            BASE64.decode(data.trim()).expect("base64"),
            hmac(token.as_bytes(), b"Responder", cb),
            "the server's Responder hash"
        );
    }
    outcome
}

fn identifier(success: &Element) -> String {
    success
        .get_child("authorization-identifier", SASL2)
        .expect("authorization-identifier")
        .text()
}

/// The SASL condition of a SASL2 `<failure/>`, which must also explain itself in `<text/>`.
fn failure_condition(el: &Element) -> String {
    assert!(el.is("failure", SASL2), "expected a SASL2 failure: {el:?}");
    assert!(el.has_child("text", SASL2), "failure without text: {el:?}");
    el.children()
        .find(|c| c.ns() == ns::SASL)
        .map(|c| c.name().to_string())
        .expect("a SASL condition")
}

fn token_of(success: &Element) -> (String, String) {
    let token = success.get_child("token", FAST).expect("a FAST token");
    (
        token.attr("token").expect("token").to_string(),
        token.attr("expiry").expect("expiry").to_string(),
    )
}

fn mechanisms(parent: Option<&Element>) -> Vec<String> {
    parent
        .map(|p| {
            p.children()
                .filter(|c| c.name() == "mechanism")
                .map(|c| c.text())
                .collect()
        })
        .unwrap_or_default()
}

/// A password login with Bind2 that asks for a token, as Conversations does on first login.
async fn first_login(t: &TestServer, user: &str, agent: &str, mechanism: &str) -> String {
    let (mut raw, _) = connect(t).await;
    let inline = format!(
        "{}{}<request-token xmlns='{FAST}' mechanism='{mechanism}'/>",
        user_agent(agent),
        bind2("App", "")
    );
    let success = scram_login(&mut raw, user, &inline).await;
    assert!(success.is("success", SASL2), "{success:?}");
    let (token, _) = token_of(&success);
    close(raw).await;
    token
}

async fn close(mut raw: Raw) {
    raw.write("</stream:stream>").await;
    assert!(raw.closed().await);
}

/// A bound SASL2 session, checked to be usable: the stream was not restarted, the success is
/// followed by features that offer no binding (XEP-0388 §2.6), and a roster get is answered.
async fn bound_session(mut raw: Raw, success: &Element) -> Session {
    assert!(success.is("success", SASL2), "{success:?}");
    assert!(success.has_child("bound", BIND2), "{success:?}");
    let jid = identifier(success);
    let features = raw.element().await;
    assert_eq!(features.name(), "features", "{features:?}");
    assert!(!features.has_child("bind", ns::BIND), "already bound");
    assert!(features.has_child("ver", "urn:xmpp:features:rosterver"));
    raw.write("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    let answer = raw.element().await;
    assert_eq!(answer.name(), "iq", "no restart after Bind2");
    assert_eq!(answer.attr("type"), Some("result"));
    Session::from_raw(raw, jid)
}

#[tokio::test]
async fn features_offer_sasl2_with_bind2_and_fast_but_not_tokens_in_classic_sasl() {
    let t = TestServer::start().await;
    let (mut raw, features) = connect(&t).await;
    let auth = features
        .get_child("authentication", SASL2)
        .expect("SASL2 feature");
    let classic = mechanisms(features.get_child("mechanisms", ns::SASL));
    assert_eq!(
        mechanisms(Some(auth)),
        classic,
        "the same password mechanisms"
    );
    let inline = auth.get_child("inline", SASL2).expect("inline");
    let bind = inline.get_child("bind", BIND2).expect("Bind2 inline");
    let vars: Vec<_> = bind
        .get_child("inline", BIND2)
        .expect("Bind2's inline features")
        .children()
        .filter_map(|f| f.attr("var"))
        .collect();
    assert_eq!(vars, ["urn:xmpp:carbons:2", "urn:xmpp:sm:3"]);
    assert!(inline.has_child("sm", "urn:xmpp:sm:3"), "inline resumption");
    // TLS 1.3 with a certificate: every binding variant, strongest first.
    assert_eq!(
        mechanisms(inline.get_child("fast", FAST)),
        ["HT-SHA-256-EXPR", "HT-SHA-256-ENDP", "HT-SHA-256-NONE"]
    );
    assert!(!classic.iter().any(|m| m.starts_with("HT-")));
    raw.write(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='HT-SHA-256-NONE'>AA==</auth>",
    )
    .await;
    let failure = raw.element().await;
    assert!(
        failure.has_child("invalid-mechanism", ns::SASL),
        "{failure:?}"
    );

    // Before TLS nothing may authenticate, so SASL2 is not offered either.
    let mut plain = Raw::connect(t.c2s()).await;
    plain.write(OPEN).await;
    let features = plain.element().await;
    assert!(!features.has_child("authentication", SASL2));
}

#[tokio::test]
async fn scram_with_bind2_then_roster_and_chat_without_restart() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    t.add_user("bob").await;
    let mut bob = Session::online(&t, "bob", "desk").await;
    let (mut raw, _) = connect(&t).await;
    let inline = format!("{}{}", user_agent("ua-1"), bind2("Conversations", ""));
    let success = scram_login(&mut raw, "alice", &inline).await;
    let jid = identifier(&success);
    assert!(
        jid.starts_with("alice@localhost/Conversations."),
        "full JID with the tag: {jid}"
    );
    let mut alice = bound_session(raw, &success).await;
    alice
        .send("<message to='bob@localhost/desk' type='chat'><body>hi bob</body></message>")
        .await;
    let got = bob.expect(is_message_with_body).await;
    assert_eq!(body(&got), "hi bob");
    assert_eq!(got.attr("from"), Some(jid.as_str()));
    bob.send(&format!(
        "<message to='{jid}' type='chat'><body>hi alice</body></message>"
    ))
    .await;
    assert_eq!(body(&alice.expect(is_message_with_body).await), "hi alice");
}

#[tokio::test]
async fn scram_plus_over_sasl2_checks_the_channel_binding() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    let (mut raw, _) = connect(&t).await;
    let wrong = ChannelBinding::TlsExporter(vec![0; 32]);
    let failure = scram_login_with(&mut raw, "alice", "", wrong).await;
    assert_eq!(failure_condition(&failure), "not-authorized");
    let right = ChannelBinding::TlsExporter(raw.exporter.clone().expect("tls-exporter"));
    let inline = format!("{}{}", user_agent("ua-plus"), bind2("App", ""));
    let success = scram_login_with(&mut raw, "alice", &inline, right).await;
    let mut alice = bound_session(raw, &success).await;
    assert!(alice.drain().await.is_empty());
}

#[tokio::test]
async fn abort_and_foreign_elements_during_the_exchange() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    let (mut raw, _) = connect(&t).await;
    let start = format!(
        "<authenticate xmlns='{SASL2}' mechanism='SCRAM-SHA-256'><initial-response>{}</initial-response></authenticate>",
        BASE64.encode("n,,n=alice,r=abcdefghijklmnop")
    );
    raw.write(&start).await;
    assert!(raw.element().await.is("challenge", SASL2));
    raw.write(&format!("<abort xmlns='{SASL2}'/>")).await;
    assert_eq!(failure_condition(&raw.element().await), "aborted");
    // An RFC 6120 <response/> is not part of a SASL2 exchange.
    raw.write(&start).await;
    assert!(raw.element().await.is("challenge", SASL2));
    raw.write("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>AA==</response>")
        .await;
    assert_eq!(failure_condition(&raw.element().await), "malformed-request");
    // Neither left the stream unusable.
    let success = plain_login(&mut raw, "alice", "").await;
    assert!(success.is("success", SASL2), "{success:?}");
}

#[tokio::test]
async fn plain_without_bind2_gets_features_and_binds_itself() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    let (mut raw, _) = connect(&t).await;
    let success = plain_login(&mut raw, "alice", &user_agent("ua-1")).await;
    assert!(success.is("success", SASL2), "{success:?}");
    assert_eq!(identifier(&success), "alice@localhost");
    assert!(!success.has_child("bound", BIND2));
    // No restart: the post-authentication features follow on the same stream.
    let features = raw.element().await;
    assert_eq!(features.name(), "features");
    assert!(features.has_child("bind", ns::BIND));
    raw.write(
        "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
         <resource>r</resource></bind></iq>",
    )
    .await;
    let bound = raw.element().await;
    assert_eq!(bound.attr("type"), Some("result"));
    let mut alice = Session::from_raw(raw, "alice@localhost/r".into());
    assert!(alice.drain().await.is_empty());
}

#[tokio::test]
async fn bind2_resource_is_stable_per_user_agent() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    let login = |agent: &'static str| {
        let t = &t;
        async move {
            let (mut raw, _) = connect(t).await;
            let inline = format!("{}{}", user_agent(agent), bind2("App", ""));
            let success = plain_login(&mut raw, "alice", &inline).await;
            let jid = identifier(&success);
            (bound_session(raw, &success).await, jid)
        }
    };
    let (mut first, jid_a) = login("agent-a").await;
    let (mut other, jid_b) = login("agent-b").await;
    assert_ne!(jid_a, jid_b, "another client gets another resource");
    assert!(jid_b.starts_with("alice@localhost/App."));
    // The same client reconnecting gets its resource back, replacing its stale session.
    let (mut again, jid_a2) = login("agent-a").await;
    assert_eq!(jid_a, jid_a2);
    assert_eq!(first.raw.stream_error().await, "conflict");
    assert!(again.drain().await.is_empty());
    assert!(other.drain().await.is_empty());
}

#[tokio::test]
async fn bind2_inline_carbons_marks_the_session_for_carbons() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    let (mut raw, _) = connect(&t).await;
    let inline = format!(
        "{}{}",
        user_agent("agent-c"),
        bind2("App", "<enable xmlns='urn:xmpp:carbons:2'/>")
    );
    let success = plain_login(&mut raw, "alice", &inline).await;
    let with = identifier(&success);
    let _with = bound_session(raw, &success).await;
    let (mut raw, _) = connect(&t).await;
    let inline = format!("{}{}", user_agent("agent-d"), bind2("App", ""));
    let success = plain_login(&mut raw, "alice", &inline).await;
    let without = identifier(&success);
    // The roster answer in bound_session means both sessions are registered by now.
    let _without = bound_session(raw, &success).await;
    let bare = jid::BareJid::new("alice@localhost").unwrap();
    let carbons: Vec<String> =
        corvid::modules::carbons::enabled_sessions(&t.server.ctx.router, &bare)
            .iter()
            .map(|j| j.to_string())
            .collect();
    assert_eq!(carbons, [with]);
    assert_ne!(carbons, [without]);
}

#[tokio::test]
async fn bind2_inline_carbons_copies_messages_sent_by_another_resource() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    t.add_user("bob").await;
    let mut bob = Session::online(&t, "bob", "desk").await;
    let (mut raw, _) = connect(&t).await;
    let inline = format!(
        "{}{}",
        user_agent("agent-c"),
        bind2("Phone", "<enable xmlns='urn:xmpp:carbons:2'/>")
    );
    let success = plain_login(&mut raw, "alice", &inline).await;
    let mut phone = bound_session(raw, &success).await;
    phone.send("<presence/>").await;
    let mut laptop = Session::online(&t, "alice", "laptop").await;
    laptop
        .send("<message to='bob@localhost/desk' type='chat'><body>from laptop</body></message>")
        .await;
    bob.expect(is_message_with_body).await;
    let copy = phone
        .expect(|el| el.name() == "message" && el.has_child("sent", "urn:xmpp:carbons:2"))
        .await;
    let forwarded = copy
        .get_child("sent", "urn:xmpp:carbons:2")
        .and_then(|s| s.get_child("forwarded", "urn:xmpp:forward:0"))
        .and_then(|f| f.get_child("message", "jabber:client"))
        .expect("the forwarded message");
    assert_eq!(body(forwarded), "from laptop");
}

#[tokio::test]
async fn fast_token_logs_in_without_the_password() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    t.add_user("bob").await;
    let (mut raw, _) = connect(&t).await;
    let inline = format!(
        "{}{}<request-token xmlns='{FAST}' mechanism='HT-SHA-256-NONE'/>",
        user_agent("agent-a"),
        bind2("App", "")
    );
    let success = scram_login(&mut raw, "alice", &inline).await;
    let (token, expiry) = token_of(&success);
    let expiry = chrono::DateTime::parse_from_rfc3339(&expiry).expect("XEP-0082 DateTime");
    let lifetime = chrono::Duration::seconds(t.config().fast.token_lifetime_secs as i64);
    let now = chrono::Utc::now();
    assert!(expiry > now && expiry <= now + lifetime, "{expiry}");
    let first_jid = identifier(&success);
    close(raw).await;

    let (mut raw, _) = connect(&t).await;
    let inline = format!(
        "{}{}<fast xmlns='{FAST}' count='1'/>",
        user_agent("agent-a"),
        bind2("App", "")
    );
    let success = token_login(&mut raw, "HT-SHA-256-NONE", "alice", &token, &[], &inline).await;
    assert_eq!(identifier(&success), first_jid);
    assert!(
        !success.has_child("token", FAST),
        "a fresh token is not rotated"
    );
    let mut alice = bound_session(raw, &success).await;
    let mut bob = Session::online(&t, "bob", "desk").await;
    alice
        .send("<message to='bob@localhost/desk' type='chat'><body>via token</body></message>")
        .await;
    assert_eq!(body(&bob.expect(is_message_with_body).await), "via token");
}

#[tokio::test]
async fn fast_token_is_bound_to_its_mechanism_and_channel() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    let token = first_login(&t, "alice", "agent-a", "HT-SHA-256-EXPR").await;
    let (mut raw, _) = connect(&t).await;
    let exporter = raw.exporter.clone().expect("tls-exporter");
    let ua = user_agent("agent-a");
    // Another TLS session's binding data, then the same token without binding: both refused.
    let other = token_login(&mut raw, "HT-SHA-256-EXPR", "alice", &token, &[7; 32], &ua).await;
    assert_eq!(failure_condition(&other), "not-authorized");
    let unbound = token_login(&mut raw, "HT-SHA-256-NONE", "alice", &token, &[], &ua).await;
    assert_eq!(failure_condition(&unbound), "not-authorized");
    let ok = token_login(&mut raw, "HT-SHA-256-EXPR", "alice", &token, &exporter, &ua).await;
    assert!(ok.is("success", SASL2), "{ok:?}");
    assert_eq!(identifier(&ok), "alice@localhost");

    // tls-server-end-point: the hash of the server's certificate (ECDSA-SHA256, so SHA-256).
    use sha2::Digest;
    let token = first_login(&t, "alice", "agent-e", "HT-SHA-256-ENDP").await;
    let (mut raw, _) = connect(&t).await;
    let ua = user_agent("agent-e");
    let endpoint = sha2::Sha256::digest(&t.cert_der).to_vec();
    let ok = token_login(&mut raw, "HT-SHA-256-ENDP", "alice", &token, &endpoint, &ua).await;
    assert!(ok.is("success", SASL2), "{ok:?}");
}

#[tokio::test]
async fn fast_wrong_token_or_other_client_is_not_authorized() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    let token = first_login(&t, "alice", "agent-a", "HT-SHA-256-NONE").await;
    let (mut raw, _) = connect(&t).await;
    let mech = "HT-SHA-256-NONE";
    let wrong = token_login(
        &mut raw,
        mech,
        "alice",
        "not-the-token",
        &[],
        &user_agent("agent-a"),
    )
    .await;
    assert_eq!(failure_condition(&wrong), "not-authorized");
    let other = token_login(&mut raw, mech, "alice", &token, &[], &user_agent("agent-b")).await;
    assert_eq!(failure_condition(&other), "not-authorized");
    let anonymous = token_login(&mut raw, mech, "alice", &token, &[], "").await;
    assert_eq!(failure_condition(&anonymous), "not-authorized");
    let ok = token_login(&mut raw, mech, "alice", &token, &[], &user_agent("agent-a")).await;
    assert!(ok.is("success", SASL2), "{ok:?}");
}

#[tokio::test]
async fn fast_count_must_increase() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    let token = first_login(&t, "alice", "agent-a", "HT-SHA-256-NONE").await;
    let mech = "HT-SHA-256-NONE";
    let with_count = |n: u32| {
        format!(
            "{}<fast xmlns='{FAST}' count='{n}'/>",
            user_agent("agent-a")
        )
    };
    let (mut raw, _) = connect(&t).await;
    let ok = token_login(&mut raw, mech, "alice", &token, &[], &with_count(5)).await;
    assert!(ok.is("success", SASL2), "{ok:?}");
    close(raw).await;
    let (mut raw, _) = connect(&t).await;
    for replayed in [5, 4] {
        let refused =
            token_login(&mut raw, mech, "alice", &token, &[], &with_count(replayed)).await;
        assert_eq!(
            failure_condition(&refused),
            "not-authorized",
            "count {replayed}"
        );
    }
    let ok = token_login(&mut raw, mech, "alice", &token, &[], &with_count(6)).await;
    assert!(ok.is("success", SASL2), "{ok:?}");
}

#[tokio::test]
async fn fast_invalidate_ends_the_token() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    let token = first_login(&t, "alice", "agent-a", "HT-SHA-256-NONE").await;
    let mech = "HT-SHA-256-NONE";
    let (mut raw, _) = connect(&t).await;
    let inline = format!(
        "{}<fast xmlns='{FAST}' invalidate='true'/>",
        user_agent("agent-a")
    );
    let ok = token_login(&mut raw, mech, "alice", &token, &[], &inline).await;
    assert!(ok.is("success", SASL2), "{ok:?}");
    assert!(!ok.has_child("token", FAST));
    close(raw).await;
    let (mut raw, _) = connect(&t).await;
    let refused = token_login(&mut raw, mech, "alice", &token, &[], &user_agent("agent-a")).await;
    assert_eq!(failure_condition(&refused), "not-authorized");
}

#[tokio::test]
async fn fast_expired_token_is_refused_as_credentials_expired() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    let now = chrono::Utc::now().timestamp_millis();
    // A token whose lifetime already ran out, written where the server keeps its tokens.
    t.storage()
        .fast
        .issue_fast_token(
            &account("alice"),
            "agent-a",
            "old-token",
            "HT-SHA-256-NONE",
            now - 1,
            now - 1000,
        )
        .await
        .unwrap();
    let (mut raw, _) = connect(&t).await;
    let ua = user_agent("agent-a");
    let refused = token_login(&mut raw, "HT-SHA-256-NONE", "alice", "old-token", &[], &ua).await;
    assert_eq!(failure_condition(&refused), "credentials-expired");
    // The client falls back to its password on the same stream.
    let ok = plain_login(&mut raw, "alice", &ua).await;
    assert!(ok.is("success", SASL2), "{ok:?}");
}

#[tokio::test]
async fn fast_token_in_the_second_half_of_its_life_is_rotated() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    let now = chrono::Utc::now().timestamp_millis();
    // An hour left of a 14-day lifetime: time to hand out the next token.
    t.storage()
        .fast
        .issue_fast_token(
            &account("alice"),
            "agent-a",
            "aging-token",
            "HT-SHA-256-NONE",
            now + 3_600_000,
            now,
        )
        .await
        .unwrap();
    let (mut raw, _) = connect(&t).await;
    let ua = user_agent("agent-a");
    let ok = token_login(
        &mut raw,
        "HT-SHA-256-NONE",
        "alice",
        "aging-token",
        &[],
        &ua,
    )
    .await;
    let (next, _) = token_of(&ok);
    close(raw).await;
    let (mut raw, _) = connect(&t).await;
    let ok = token_login(&mut raw, "HT-SHA-256-NONE", "alice", &next, &[], &ua).await;
    assert!(ok.is("success", SASL2), "{ok:?}");
    assert!(!ok.has_child("token", FAST), "the new token is fresh");
}

#[tokio::test]
async fn fast_rotation_keeps_the_old_token_until_the_new_one_is_used() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    let old = first_login(&t, "alice", "agent-a", "HT-SHA-256-NONE").await;
    let mech = "HT-SHA-256-NONE";
    let ua = user_agent("agent-a");
    let (mut raw, _) = connect(&t).await;
    let inline = format!("{ua}<request-token xmlns='{FAST}' mechanism='{mech}'/>");
    let ok = token_login(&mut raw, mech, "alice", &old, &[], &inline).await;
    let (new, _) = token_of(&ok);
    assert_ne!(new, old);
    close(raw).await;
    // The new token may never have reached the client: the old one still works...
    let (mut raw, _) = connect(&t).await;
    let ok = token_login(&mut raw, mech, "alice", &old, &[], &ua).await;
    assert!(ok.is("success", SASL2), "{ok:?}");
    close(raw).await;
    // ...until the new one is used.
    let (mut raw, _) = connect(&t).await;
    let ok = token_login(&mut raw, mech, "alice", &new, &[], &ua).await;
    assert!(ok.is("success", SASL2), "{ok:?}");
    close(raw).await;
    let (mut raw, _) = connect(&t).await;
    let refused = token_login(&mut raw, mech, "alice", &old, &[], &ua).await;
    assert_eq!(failure_condition(&refused), "not-authorized");
}

#[tokio::test]
async fn bad_authenticate_gets_sasl_failures_and_the_server_stays_up() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    t.add_user("bob").await;
    let (mut raw, _) = connect(&t).await;
    raw.write(&format!("<authenticate xmlns='{SASL2}'/>")).await;
    assert_eq!(failure_condition(&raw.element().await), "invalid-mechanism");
    raw.write(&format!(
        "<authenticate xmlns='{SASL2}' mechanism='DIGEST-MD5'><initial-response>AA==</initial-response></authenticate>"
    ))
    .await;
    assert_eq!(failure_condition(&raw.element().await), "invalid-mechanism");
    raw.write(&format!(
        "<authenticate xmlns='{SASL2}' mechanism='PLAIN'><initial-response>!!not base64!!</initial-response></authenticate>"
    ))
    .await;
    assert_eq!(
        failure_condition(&raw.element().await),
        "incorrect-encoding"
    );
    raw.write(&format!(
        "<authenticate xmlns='{SASL2}' mechanism='HT-SHA-256-NONE'><initial-response>AA==</initial-response></authenticate>"
    ))
    .await;
    assert_eq!(failure_condition(&raw.element().await), "malformed-request");
    // A wrong password is not-authorized; a fifth failure ends the stream.
    raw.write(&format!(
        "<authenticate xmlns='{SASL2}' mechanism='PLAIN'><initial-response>{}</initial-response></authenticate>",
        BASE64.encode("\0alice\0wrong")
    ))
    .await;
    assert_eq!(failure_condition(&raw.element().await), "not-authorized");
    raw.write(&format!("<authenticate xmlns='{SASL2}'/>")).await;
    assert_eq!(raw.stream_error().await, "policy-violation");

    let mut bob = Session::online(&t, "bob", "desk").await;
    assert!(bob.drain().await.is_empty());
}

#[tokio::test]
async fn sasl2_elements_out_of_order_end_the_stream() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    // A response with no exchange under way.
    let (mut raw, _) = connect(&t).await;
    raw.write(&format!("<response xmlns='{SASL2}'>AA==</response>"))
        .await;
    assert_eq!(raw.stream_error().await, "not-authorized");
    // A second authentication on an authenticated stream.
    let (mut raw, _) = connect(&t).await;
    let success = plain_login(&mut raw, "alice", "").await;
    assert!(success.is("success", SASL2), "{success:?}");
    assert_eq!(raw.element().await.name(), "features");
    let again = plain_login(&mut raw, "alice", "").await;
    assert!(again.name() == "error", "{again:?}");
    assert!(again.has_child("not-authorized", ns::STREAMS_ERRORS));
}

const SM: &str = "urn:xmpp:sm:3";

#[tokio::test]
async fn bind2_enables_stream_management_and_sasl2_resumes_it_inline() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    t.add_user("bob").await;
    let mut bob = Session::online(&t, "bob", "desk").await;
    let (mut raw, _) = connect(&t).await;
    let enable = format!("<enable xmlns='{SM}' resume='true'/>");
    let inline = format!("{}{}", user_agent("ua-sm"), bind2("App", &enable));
    let success = scram_login(&mut raw, "alice", &inline).await;
    let enabled = success
        .get_child("bound", BIND2)
        .and_then(|b| b.get_child("enabled", SM))
        .expect("<enabled/> inside <bound/>");
    assert_eq!(enabled.attr("resume"), Some("true"));
    let previd = enabled.attr("id").expect("a resumption id").to_owned();
    let jid = identifier(&success);
    // The roster result is the session's first stanza out.
    let mut alice = bound_session(raw, &success).await;
    bob.send(&format!(
        "<message to='{jid}' type='chat'><body>before</body></message>"
    ))
    .await;
    assert_eq!(body(&alice.expect(is_message_with_body).await), "before");
    // The connection dies without a goodbye; the session waits to be resumed.
    drop(alice);
    let full = jid::FullJid::new(&jid).unwrap();
    while !t.server.ctx.router.is_detached(&full) {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    bob.send(&format!(
        "<message to='{jid}' type='chat'><body>during the gap</body></message>"
    ))
    .await;
    // Bob's stanzas are handled in order: after his drain, the message is queued.
    bob.drain().await;

    let (mut raw, _) = connect(&t).await;
    // Two stanzas arrived before the break: the roster result and "before".
    let inline = format!(
        "{}<resume xmlns='{SM}' previd='{previd}' h='2'/>{}",
        user_agent("ua-sm"),
        bind2("App", "")
    );
    let success = scram_login(&mut raw, "alice", &inline).await;
    assert!(success.is("success", SASL2), "{success:?}");
    let resumed = success.get_child("resumed", SM).expect("<resumed/> inline");
    assert_eq!(resumed.attr("previd"), Some(previd.as_str()));
    // We sent one stanza (the roster get) before the break.
    assert_eq!(resumed.attr("h"), Some("1"));
    assert!(
        !success.has_child("bound", BIND2),
        "resumed, not bound anew"
    );
    assert_eq!(identifier(&success), jid);
    let features = raw.element().await;
    assert_eq!(features.name(), "features");
    let mut alice = Session::from_raw(raw, jid.clone());
    let seen = alice.drain().await;
    let bodies: Vec<String> = seen
        .iter()
        .filter(|el| is_message_with_body(el))
        .map(body)
        .collect();
    assert_eq!(bodies, ["during the gap"], "{seen:?}");
}

#[tokio::test]
async fn a_failed_inline_resumption_still_binds() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    let (mut raw, _) = connect(&t).await;
    let inline = format!(
        "{}<resume xmlns='{SM}' previd='no-such-session' h='0'/>{}",
        user_agent("ua-x"),
        bind2("App", "")
    );
    let success = scram_login(&mut raw, "alice", &inline).await;
    let failed = success.get_child("failed", SM).expect("<failed/> inline");
    assert!(
        failed.has_child("item-not-found", ns::STANZAS_ERRORS),
        "{failed:?}"
    );
    let mut alice = bound_session(raw, &success).await;
    assert!(alice.drain().await.is_empty());
}

/// XEP-0474: the hash a client computes from the features it saw, as the XEP says: the
/// mechanisms sorted and joined by %x1E, then %x1F and the channel-binding types likewise.
fn expected_downgrade_protection(features: &Element) -> String {
    use sha2::Digest;
    let mut mechanisms = mechanisms(features.get_child("authentication", SASL2));
    mechanisms.sort();
    let mut text = mechanisms.join("\u{1e}");
    if let Some(list) = features.get_child("sasl-channel-binding", ns::SASL_CB) {
        let mut types: Vec<String> = list
            .children()
            .filter_map(|c| c.attr("type").map(str::to_owned))
            .collect();
        types.sort();
        text.push('\u{1f}');
        text.push_str(&types.join("\u{1e}"));
    }
    BASE64.encode(sha2::Sha256::digest(text.as_bytes()))
}

#[tokio::test]
async fn scram_server_first_message_carries_the_downgrade_protection_hash() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    let (mut raw, features) = connect(&t).await;
    assert!(
        features.has_child("sasl-channel-binding", ns::SASL_CB),
        "over TLS the binding types are listed: {features:?}"
    );
    let expected = expected_downgrade_protection(&features);

    let creds = Credentials::default()
        .with_username("alice")
        .with_password(PASSWORD)
        .with_channel_binding(ChannelBinding::None);
    let mut client = Scram::<Sha256>::from_credentials(creds).expect("scram client");
    raw.write(&format!(
        "<authenticate xmlns='{SASL2}' mechanism='SCRAM-SHA-256'>\
         <initial-response>{}</initial-response></authenticate>",
        BASE64.encode(client.initial())
    ))
    .await;
    let challenge = raw.element().await;
    let server_first = BASE64.decode(challenge.text().trim()).expect("base64");
    let text = String::from_utf8(server_first.clone()).expect("utf-8");
    let h = text
        .split(',')
        .find_map(|attr| attr.strip_prefix("h="))
        .unwrap_or_else(|| panic!("no h= in {text}"));
    assert_eq!(h, expected, "{text}");

    // The attribute is part of what SCRAM signs: the exchange completes, and the server's
    // signature verifies, with a client that knows nothing of XEP-0474.
    let response = client.response(&server_first).expect("client-final");
    raw.write(&format!(
        "<response xmlns='{SASL2}'>{}</response>",
        BASE64.encode(response)
    ))
    .await;
    let outcome = raw.element().await;
    assert!(outcome.is("success", SASL2), "{outcome:?}");
    let data = outcome
        .get_child("additional-data", SASL2)
        .expect("additional-data")
        .text();
    client
        .success(&BASE64.decode(data.trim()).expect("base64"))
        .expect("the server signature verifies");
}
