//! Stanzas that break RFC 6120 / 6121 / 7622 rules get the error the RFCs call for (never
//! silence, never an error answering an error), and the per-account resource cap, over real
//! sockets. Raw sockets throughout: a client library would refuse to send most of this.

mod common;

use common::xmpp::{error_condition, Session};
use common::*;
use minidom::Element;

const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
const SASL2: &str = "urn:xmpp:sasl:2";
const BIND2: &str = "urn:xmpp:bind:0";
const SM: &str = "urn:xmpp:sm:3";

/// The `type` of the `<error/>` child.
fn error_type(el: &Element) -> Option<String> {
    el.get_child("error", "jabber:client")
        .and_then(|e| e.attr("type"))
        .map(str::to_owned)
}

/// Asserts `el` is a `<name type='error'>` with `id`, `condition` and error type `kind`.
fn assert_error(el: &Element, name: &str, id: &str, condition: &str, kind: &str) {
    assert_eq!(el.name(), name, "{el:?}");
    assert_eq!(el.attr("type"), Some("error"), "{el:?}");
    assert_eq!(el.attr("id"), Some(id), "{el:?}");
    assert_eq!(error_condition(el).as_deref(), Some(condition), "{el:?}");
    assert_eq!(error_type(el).as_deref(), Some(kind), "{el:?}");
}

async fn users(t: &TestServer, names: &[&str]) {
    for name in names {
        t.add_user(name).await;
    }
}

/// The next element that is not a presence (the own-presence echo and friends).
async fn next_non_presence(s: &mut Session) -> Element {
    s.expect(|el| el.name() != "presence").await
}

#[tokio::test]
async fn iq_without_type_or_with_an_unknown_type_gets_bad_request() {
    let t = TestServer::start().await;
    users(&t, &["alice", "bob"]).await;
    let mut alice = Session::login(&t, "alice", "a").await;
    let mut bob = Session::login(&t, "bob", "b").await;

    alice
        .send("<iq id='t1'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_error(&alice.next().await, "iq", "t1", "bad-request", "modify");

    alice
        .send("<iq id='t2' type='foo' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_error(&alice.next().await, "iq", "t2", "bad-request", "modify");

    // Addressed to another user's session: refused here, not passed on for bob to puzzle over.
    alice
        .send("<iq id='t3' type='foo' to='bob@localhost/b'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_error(&alice.next().await, "iq", "t3", "bad-request", "modify");
    alice
        .send("<iq id='t4' to='bob@localhost/b'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_error(&alice.next().await, "iq", "t4", "bad-request", "modify");
    let marker = Session::marker();
    alice.send_marker("bob@localhost/b", &marker).await;
    let seen = bob.until_marker(&marker).await;
    assert!(seen.iter().all(|el| el.name() != "iq"), "{seen:?}");
}

#[tokio::test]
async fn iq_get_or_set_without_exactly_one_child_gets_bad_request() {
    let t = TestServer::start().await;
    users(&t, &["alice", "bob"]).await;
    let mut alice = Session::login(&t, "alice", "a").await;
    let mut bob = Session::login(&t, "bob", "b").await;

    alice
        .send("<iq id='c1' type='get' to='bob@localhost/b'/>")
        .await;
    assert_error(&alice.next().await, "iq", "c1", "bad-request", "modify");
    alice
        .send(
            "<iq id='c2' type='set' to='bob@localhost/b'>\
             <ping xmlns='urn:xmpp:ping'/><ping xmlns='urn:xmpp:ping'/></iq>",
        )
        .await;
    assert_error(&alice.next().await, "iq", "c2", "bad-request", "modify");
    alice.send("<iq id='c3' type='get'/>").await;
    assert_error(&alice.next().await, "iq", "c3", "bad-request", "modify");
    let marker = Session::marker();
    alice.send_marker("bob@localhost/b", &marker).await;
    let seen = bob.until_marker(&marker).await;
    assert!(seen.iter().all(|el| el.name() != "iq"), "{seen:?}");
}

#[tokio::test]
async fn iq_result_or_error_of_any_shape_is_never_answered() {
    let t = TestServer::start().await;
    users(&t, &["alice"]).await;
    let mut alice = Session::login(&t, "alice", "a").await;
    alice
        .send("<iq id='r1' type='result' to='localhost'><a xmlns='x:a'/><b xmlns='x:b'/></iq>")
        .await;
    alice.send("<iq id='r2' type='error'/>").await;
    alice
        .send("<iq id='r3' type='error' to='alice@localhost/a'><x xmlns='x:a'/></iq>")
        .await;
    alice.send("<iq id='r4' type='result'/>").await;
    alice
        .send("<iq id='r5' type='result' to='bob@localhost&#x200B;'/>")
        .await;
    alice
        .send("<iq id='r6' type='error' to='bob@localhost&#x200B;'/>")
        .await;
    // r3 reaches alice herself as sent; nothing else may come back before the ping's answer.
    alice
        .send("<iq id='p' type='get'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    loop {
        let el = alice.next().await;
        if el.attr("id") == Some("p") {
            assert_eq!(el.attr("type"), Some("result"), "{el:?}");
            break;
        }
        assert_eq!(el.attr("id"), Some("r3"), "unexpected answer: {el:?}");
        assert!(error_condition(&el).is_none(), "{el:?}");
    }
}

#[tokio::test]
async fn presence_with_an_unknown_type_gets_bad_request() {
    let t = TestServer::start().await;
    users(&t, &["alice", "bob"]).await;
    let mut alice = Session::online(&t, "alice", "a").await;
    let mut bob = Session::online(&t, "bob", "b").await;

    alice
        .send("<presence id='p1' type='foo' to='bob@localhost'/>")
        .await;
    assert_error(
        &next_presence_error(&mut alice).await,
        "presence",
        "p1",
        "bad-request",
        "modify",
    );
    alice.send("<presence id='p2' type='foo'/>").await;
    assert_error(
        &next_presence_error(&mut alice).await,
        "presence",
        "p2",
        "bad-request",
        "modify",
    );
    let marker = Session::marker();
    alice.send_marker("bob@localhost/b", &marker).await;
    let seen = bob.until_marker(&marker).await;
    assert!(
        seen.iter().all(|el| el.attr("type") != Some("foo")),
        "{seen:?}"
    );

    // `type='available'` is what no type means: some libraries write it, and it is taken as
    // an ordinary directed presence, delivered without the attribute.
    alice
        .send("<presence id='p3' type='available' to='bob@localhost/b'><status>here</status></presence>")
        .await;
    let got = bob
        .expect(|el| el.name() == "presence" && el.attr("id") == Some("p3"))
        .await;
    assert_eq!(got.attr("type"), None, "{got:?}");
}

async fn next_presence_error(s: &mut Session) -> Element {
    s.expect(|el| el.name() == "presence" && el.attr("type") == Some("error"))
        .await
}

#[tokio::test]
async fn message_with_an_unknown_type_is_handled_as_normal() {
    let t = TestServer::start().await;
    users(&t, &["alice", "bob"]).await;
    let mut alice = Session::login(&t, "alice", "a").await;
    // Bob is offline: a normal message is kept for him (XEP-0160), whatever `foo` meant.
    alice
        .send("<message id='m1' type='foo' to='bob@localhost'><body>odd type</body></message>")
        .await;
    let marker = Session::marker();
    alice.send_marker("alice@localhost/a", &marker).await;
    let seen = alice.until_marker(&marker).await;
    assert!(seen.is_empty(), "no error for an unknown type: {seen:?}");

    // Not `Session::online`: it skips what arrives before its presence echo.
    let mut bob = Session::login(&t, "bob", "b").await;
    bob.send("<presence/>").await;
    let got = bob
        .expect(|el| el.name() == "message" && el.attr("id") == Some("m1"))
        .await;
    assert_eq!(got.attr("type"), Some("normal"), "{got:?}");
    assert_eq!(
        got.get_child("body", "jabber:client").map(|b| b.text()),
        Some("odd type".to_string())
    );
}

#[tokio::test]
async fn domain_with_a_zero_width_space_is_jid_malformed() {
    let t = TestServer::start().await;
    users(&t, &["alice", "bob"]).await;
    let mut alice = Session::login(&t, "alice", "a").await;
    for (id, to) in [
        ("z1", "bob@localhost&#x200B;"),
        ("z2", "bob@local&#xFEFF;host"),
        ("z3", "bob@localhost&#x200B;/b"),
        ("z4", "bob@localhost&#xAD;"),
    ] {
        alice
            .send(&format!(
                "<message id='{id}' type='chat' to='{to}'><body>zw</body></message>"
            ))
            .await;
        let error = next_non_presence(&mut alice).await;
        assert_error(&error, "message", id, "jid-malformed", "modify");
        assert_eq!(error.attr("from"), Some("localhost"), "{error:?}");
    }
    alice
        .send("<iq id='z5' type='get' to='localhost&#x200B;'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_error(&alice.next().await, "iq", "z5", "jid-malformed", "modify");
    alice
        .send("<presence id='z6' type='subscribe' to='bob@localhost&#x200B;'/>")
        .await;
    assert_error(
        &next_presence_error(&mut alice).await,
        "presence",
        "z6",
        "jid-malformed",
        "modify",
    );
    // Nothing was stored for bob under the mangled address.
    let mut bob = Session::online(&t, "bob", "b").await;
    let seen = bob.drain().await;
    assert!(
        seen.iter().all(|el| el.name() != "message"),
        "offline messages: {seen:?}"
    );
}

#[tokio::test]
async fn from_with_a_zero_width_space_is_not_the_sessions_address() {
    let t = TestServer::start().await;
    users(&t, &["alice"]).await;
    let mut alice = Session::login(&t, "alice", "a").await;
    alice
        .send("<message from='alice@localhost&#x200B;/a' to='alice@localhost' type='chat'><body>x</body></message>")
        .await;
    assert_eq!(alice.raw.stream_error().await, "invalid-from");
}

#[tokio::test]
async fn trailing_dot_in_the_domain_is_stripped_before_routing() {
    let t = TestServer::start().await;
    users(&t, &["alice", "bob"]).await;
    let mut alice = Session::online(&t, "alice", "a").await;
    let mut bob = Session::online(&t, "bob", "b").await;
    alice
        .send("<message id='d1' type='chat' to='bob@localhost.'><body>dot</body></message>")
        .await;
    let got = bob
        .expect(|el| el.name() == "message" && el.attr("id") == Some("d1"))
        .await;
    assert_eq!(got.attr("to"), Some("bob@localhost"), "{got:?}");
    alice
        .send("<iq id='d2' type='get' to='localhost.'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let pong = alice.expect(|el| el.attr("id") == Some("d2")).await;
    assert_eq!(pong.attr("type"), Some("result"), "{pong:?}");
}

#[tokio::test]
async fn stream_header_to_with_a_trailing_dot_is_this_server() {
    let t = TestServer::start().await;
    let mut raw = Raw::connect(t.c2s()).await;
    raw.write(&OPEN.replace("to='localhost'", "to='localhost.'"))
        .await;
    let features = raw.element().await;
    assert_eq!(features.name(), "features", "{features:?}");
}

/// STARTTLS and PLAIN without binding: ready for a bind request.
async fn authenticated(t: &TestServer, user: &str) -> Raw {
    Raw::authenticated(t.c2s(), t.tls_config(), user).await.0
}

fn bind_request(id: &str, resource: &str) -> String {
    format!(
        "<iq type='set' id='{id}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
         <resource>{resource}</resource></bind></iq>"
    )
}

#[tokio::test]
async fn typeless_iq_before_binding_gets_bad_request_and_binding_still_works() {
    let t = TestServer::start().await;
    users(&t, &["alice"]).await;
    let mut raw = authenticated(&t, "alice").await;
    raw.write("<iq id='b0'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        .await;
    assert_error(&raw.element().await, "iq", "b0", "bad-request", "modify");
    raw.write("<iq id='b1' type='get'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        .await;
    assert_error(&raw.element().await, "iq", "b1", "bad-request", "modify");
    raw.write(&bind_request("b2", "r")).await;
    let bound = raw.element().await;
    assert_eq!(bound.attr("type"), Some("result"), "{bound:?}");
}

async fn bind(t: &TestServer, user: &str, resource: &str) -> (Raw, Element) {
    let mut raw = authenticated(t, user).await;
    raw.write(&bind_request("bind", resource)).await;
    let answer = raw.element().await;
    (raw, answer)
}

#[tokio::test]
async fn resources_per_account_are_capped() {
    let t = TestServer::start_with(|c| c.limits.max_resources_per_account = 3).await;
    users(&t, &["alice"]).await;
    let mut kept = Vec::new();
    for n in 0..3 {
        let (raw, answer) = bind(&t, "alice", &format!("r{n}")).await;
        assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
        kept.push(raw);
    }
    let (_raw, refused) = bind(&t, "alice", "r3").await;
    assert_error(&refused, "iq", "bind", "resource-constraint", "wait");

    // Taking over a bound resource replaces a session: no extra resource.
    let (raw, answer) = bind(&t, "alice", "r1").await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    assert_eq!(kept[1].stream_error().await, "conflict");
    kept[1] = raw;

    // Bind2 inside SASL2 refuses as well, with a SASL2 failure that says why.
    let mut raw = Raw::connect(t.c2s()).await.starttls(t.tls_config()).await;
    raw.write(OPEN).await;
    let _ = raw.element().await;
    use base64::Engine;
    let initial = base64::engine::general_purpose::STANDARD.encode(format!("\0alice\0{PASSWORD}"));
    raw.write(&format!(
        "<authenticate xmlns='{SASL2}' mechanism='PLAIN'><initial-response>{initial}</initial-response>\
         <bind xmlns='{BIND2}'><tag>Test</tag></bind></authenticate>"
    ))
    .await;
    let failure = raw.element().await;
    assert!(failure.is("failure", SASL2), "{failure:?}");
    assert!(
        failure.has_child("resource-constraint", STANZAS),
        "{failure:?}"
    );
    assert!(failure.has_child("text", SASL2), "{failure:?}");

    // Another account is not affected.
    users(&t, &["bob"]).await;
    let (_bob, answer) = bind(&t, "bob", "r0").await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");

    // A closed session frees its place.
    let mut gone = kept.pop().expect("a session");
    gone.write("</stream:stream>").await;
    assert!(gone.closed().await);
    let mut freed = false;
    for _ in 0..200 {
        let (raw, answer) = bind(&t, "alice", "r9").await;
        if answer.attr("type") == Some("result") {
            kept.push(raw);
            freed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(freed, "the closed session's place was never freed");
}

#[tokio::test]
async fn default_cap_is_ten_resources() {
    let t = TestServer::start().await;
    assert_eq!(t.config().limits.max_resources_per_account, 10);
    users(&t, &["alice"]).await;
    let mut kept = Vec::new();
    for n in 0..10 {
        let (raw, answer) = bind(&t, "alice", &format!("r{n}")).await;
        assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
        kept.push(raw);
    }
    let (_raw, refused) = bind(&t, "alice", "r10").await;
    assert_error(&refused, "iq", "bind", "resource-constraint", "wait");
}

#[tokio::test]
async fn resuming_a_detached_session_at_the_cap_is_not_an_extra_resource() {
    let t = TestServer::start_with(|c| c.limits.max_resources_per_account = 2).await;
    users(&t, &["alice"]).await;
    let (_first, answer) = bind(&t, "alice", "r0").await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    let (mut second, answer) = bind(&t, "alice", "r1").await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    let previd = second.enable_resumption().await;
    drop(second);
    t.until_detached("alice@localhost/r1").await;

    // The detached session still holds its place...
    let (_raw, refused) = bind(&t, "alice", "r2").await;
    assert_error(&refused, "iq", "bind", "resource-constraint", "wait");
    // ...and resuming it takes nothing more.
    let mut raw = authenticated(&t, "alice").await;
    let resumed = raw.resume(&previd, 0).await;
    assert!(resumed.is("resumed", SM), "{resumed:?}");
}
