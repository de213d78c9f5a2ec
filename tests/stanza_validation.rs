//! Stanzas that break RFC 6120 / 6121 / 7622 rules get the error the RFCs call for (never
//! silence, never an error answering an error), and the per-account resource cap, over real
//! sockets. Raw sockets throughout: a client library would refuse to send most of this.

mod common;

use common::xmpp::{error_condition, Session};
use common::*;
use minidom::Element;

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

async fn next_presence_error(s: &mut Session) -> Element {
    s.expect(|el| el.name() == "presence" && el.attr("type") == Some("error"))
        .await
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
        assert_error(
            &next_non_presence(&mut alice).await,
            "message",
            id,
            "jid-malformed",
            "modify",
        );
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
