//! XEP-0352 Client State Indication over real sockets: an inactive client gets presence
//! (only the latest per contact) and chat states held back, messages with a body at once
//! (after what was held, to keep the order), and everything held on `<active/>`.
//! Stream Management's `<r/>`/`<a/>` is the barrier: the server answers it directly, so
//! whatever it wrote before the `<a/>` is all it wrote.

mod common;

use common::xmpp::Session;
use common::*;
use minidom::Element;

const SM: &str = "urn:xmpp:sm:3";
const CSI: &str = "urn:xmpp:csi:0";
const CHATSTATES: &str = "http://jabber.org/protocol/chatstates";

/// Sends `<r/>`; returns what arrived before the `<a/>`.
async fn before_ack(raw: &mut Raw) -> Vec<Element> {
    raw.write(&format!("<r xmlns='{SM}'/>")).await;
    let mut seen = Vec::new();
    loop {
        let el = raw.element().await;
        if el.is("a", SM) {
            return seen;
        }
        seen.push(el);
    }
}

/// Everything up to the message with `body`.
async fn until_body(raw: &mut Raw, body_text: &str) -> Vec<Element> {
    let mut seen = Vec::new();
    loop {
        let el = raw.element().await;
        if el.name() == "message" && body(&el) == body_text {
            return seen;
        }
        seen.push(el);
    }
}

/// A short description of what arrived from bob: `status:N` for presence, the chat state's
/// name for chat-state messages.
fn from_bob(els: &[Element]) -> Vec<String> {
    els.iter()
        .filter(|e| e.attr("from") == Some("bob@localhost/desk"))
        .map(|e| match e.name() {
            "presence" => format!(
                "status:{}",
                e.get_child("status", "jabber:client")
                    .map(|s| s.text())
                    .unwrap_or_default()
            ),
            _ => e
                .children()
                .find(|c| c.ns() == CHATSTATES)
                .map(|c| c.name().to_owned())
                .unwrap_or_else(|| format!("body:{}", body(e))),
        })
        .collect()
}

#[tokio::test]
async fn inactive_client_gets_presence_deduplicated_and_chat_states_held_until_active() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    t.add_user("bob").await;
    t.make_mutual("alice", "bob").await;
    let mut bob = Session::online(&t, "bob", "desk").await;
    let (mut alice, jid) = Raw::login(t.c2s(), t.tls_config(), "alice", "phone").await;
    alice.write(&format!("<enable xmlns='{SM}'/>")).await;
    assert!(alice.element().await.is("enabled", SM));
    alice.write("<presence/>").await;
    bob.expect(|el| el.name() == "presence" && el.attr("from") == Some(jid.as_str()))
        .await;
    // Alice goes inactive; her own marker shows the server has read that.
    alice.write(&format!("<inactive xmlns='{CSI}'/>")).await;
    alice
        .write(&format!(
            "<message to='{jid}' type='chat'><body>settled</body></message>"
        ))
        .await;
    until_body(&mut alice, "settled").await;

    for status in 1..=3 {
        bob.send(&format!("<presence><status>{status}</status></presence>"))
            .await;
    }
    bob.send(&format!(
        "<message to='{jid}' type='chat'><composing xmlns='{CHATSTATES}'/></message>"
    ))
    .await;
    bob.send_marker(&jid, "hello").await;
    // The message with a body comes at once, after what was held: only the latest presence.
    let got = until_body(&mut alice, "hello").await;
    assert_eq!(from_bob(&got), ["status:3", "composing"], "{got:?}");

    for status in 4..=5 {
        bob.send(&format!("<presence><status>{status}</status></presence>"))
            .await;
    }
    bob.send(&format!(
        "<message to='{jid}' type='chat'><paused xmlns='{CHATSTATES}'/></message>"
    ))
    .await;
    bob.drain().await;
    let held = before_ack(&mut alice).await;
    assert!(from_bob(&held).is_empty(), "still held: {held:?}");

    alice.write(&format!("<active xmlns='{CSI}'/>")).await;
    let flushed = before_ack(&mut alice).await;
    assert_eq!(from_bob(&flushed), ["status:5", "paused"], "{flushed:?}");

    // Active again: presence flows at once.
    bob.send("<presence><status>6</status></presence>").await;
    let seen = until_presence(&mut alice).await;
    assert_eq!(from_bob(&seen), ["status:6"]);
}

async fn until_presence(raw: &mut Raw) -> Vec<Element> {
    loop {
        let el = raw.element().await;
        if el.name() == "presence" {
            return vec![el];
        }
    }
}

#[tokio::test]
async fn held_stanzas_stay_with_a_resumed_session() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    t.add_user("bob").await;
    t.make_mutual("alice", "bob").await;
    let mut bob = Session::online(&t, "bob", "desk").await;
    let (mut alice, jid) = Raw::login(t.c2s(), t.tls_config(), "alice", "phone").await;
    alice
        .write(&format!("<enable xmlns='{SM}' resume='true'/>"))
        .await;
    let enabled = alice.element().await;
    let previd = enabled.attr("id").expect("id").to_owned();
    alice.write("<presence/>").await;
    bob.expect(|el| el.name() == "presence" && el.attr("from") == Some(jid.as_str()))
        .await;
    // Alice's own presence and bob's come back; every stanza counts for h.
    let mut h = 0;
    let (mut own, mut bobs) = (false, false);
    while !(own && bobs) {
        let el = alice.element().await;
        h += 1;
        own |= el.name() == "presence" && el.attr("from") == Some(jid.as_str());
        bobs |= el.name() == "presence" && el.attr("from") == Some("bob@localhost/desk");
    }
    alice.write(&format!("<inactive xmlns='{CSI}'/>")).await;
    h += before_ack(&mut alice).await.len();
    bob.send("<presence><status>held</status></presence>").await;
    bob.drain().await;
    alice.write(&format!("<a xmlns='{SM}' h='{h}'/>")).await;
    let before = before_ack(&mut alice).await;
    assert!(from_bob(&before).is_empty(), "{before:?}");
    drop(alice);

    let full = jid::FullJid::new(&jid).unwrap();
    for _ in 0..1000 {
        if t.server.ctx.router.is_detached(&full) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let mut raw = Raw::connect(t.c2s()).await.starttls(t.tls_config()).await;
    raw.write(OPEN).await;
    raw.element().await;
    raw.auth_plain("alice", PASSWORD).await;
    assert_eq!(raw.element().await.name(), "success");
    raw.reset_parser();
    raw.write(OPEN).await;
    raw.element().await;
    raw.write(&format!("<resume xmlns='{SM}' previd='{previd}' h='{h}'/>"))
        .await;
    assert!(raw.element().await.is("resumed", SM));
    // Still inactive after resuming: the presence is still held until <active/>.
    let before = before_ack(&mut raw).await;
    assert!(from_bob(&before).is_empty(), "{before:?}");
    raw.write(&format!("<active xmlns='{CSI}'/>")).await;
    let flushed = before_ack(&mut raw).await;
    assert_eq!(from_bob(&flushed), ["status:held"], "{flushed:?}");
}
