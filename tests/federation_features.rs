//! The user-facing features across federation: two corvid servers (`a.test` and `b.test`,
//! see tests/common/federation.rs) and users of each talking to the other's: one-to-one chat
//! with its archive, carbons and offline storage; subscriptions and presence (RFC 6121);
//! PEP notifications (XEP-0163) with caps learned over s2s; IQs answered by the other server
//! (vCard, ping, disco, version, last activity); MUC rooms with occupants from the other
//! domain; push notifications to an app server on the other domain; and blocking.

mod common;

use base64::Engine;
use common::federation::{Federation, Trust, A, B};
use common::xmpp::{error_condition, is_presence, is_roster_push, pushed_item, Session};
use common::TestServer;
use corvid::storage::{RosterItem, Subscription};
use minidom::Element;
use sha1::Digest;

const CLIENT: &str = "jabber:client";
const MAM: &str = "urn:xmpp:mam:2";
const FORWARD: &str = "urn:xmpp:forward:0";
const CARBONS: &str = "urn:xmpp:carbons:2";
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
const AVATAR_META: &str = "urn:xmpp:avatar:metadata";
const MUC: &str = "http://jabber.org/protocol/muc";
const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const OCCUPANT_ID: &str = "urn:xmpp:occupant-id:0";
const CAPS_NODE: &str = "https://corvid.example/test-client";

// ---------------------------------------------------------------------------------------------
// Helpers.

async fn federation() -> Federation {
    Federation::start(Trust::TestCa).await
}

fn body(el: &Element) -> Option<String> {
    el.get_child("body", CLIENT).map(Element::text)
}

fn has_body(text: &str) -> impl Fn(&Element) -> bool + '_ {
    move |el| el.name() == "message" && body(el).as_deref() == Some(text)
}

/// A roster item stored straight into `server`'s storage for `user`.
async fn put_item(server: &TestServer, user: &str, contact: &str, subscription: Subscription) {
    let mut item = RosterItem::new(contact);
    item.subscription = subscription;
    server
        .storage()
        .roster
        .put_roster_item(user, &item, 100)
        .await
        .expect("roster item");
}

/// `a_user` on a.test and `b_user` on b.test subscribed both ways, on both servers.
async fn mutual(f: &Federation, a_user: &str, b_user: &str) {
    put_item(&f.a, a_user, b_user, Subscription::Both).await;
    put_item(&f.b, b_user, a_user, Subscription::Both).await;
}

async fn roster_item(server: &TestServer, user: &str, contact: &str) -> Option<RosterItem> {
    server
        .storage()
        .roster
        .roster_item(user, contact)
        .await
        .expect("roster read")
}

/// Every message in `session`'s archive (its bodies, with the archived `from` and `to`).
/// The markers `Session::drain` sends itself are left out.
async fn archive(session: &mut Session) -> Vec<(String, String, String)> {
    let id = Session::marker();
    session
        .send(&format!(
            "<iq type='set' id='{id}'><query xmlns='{MAM}' queryid='{id}'/></iq>"
        ))
        .await;
    let mut found = Vec::new();
    loop {
        let el = session.next().await;
        if el.name() == "iq" && el.attr("id") == Some(id.as_str()) {
            assert_eq!(el.attr("type"), Some("result"), "{el:?}");
            return found;
        }
        let Some(message) = el
            .get_child("result", MAM)
            .and_then(|r| r.get_child("forwarded", FORWARD))
            .and_then(|f| f.get_child("message", CLIENT))
        else {
            continue;
        };
        if body(message).is_some_and(|b| b.starts_with("marker-")) {
            continue;
        }
        found.push((
            message.attr("from").unwrap_or_default().to_owned(),
            message.attr("to").unwrap_or_default().to_owned(),
            body(message).unwrap_or_default(),
        ));
    }
}

async fn enable_carbons(session: &mut Session) {
    let answer = session
        .iq(&format!("<iq type='set'><enable xmlns='{CARBONS}'/></iq>"))
        .await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
}

/// The message inside a carbon (`sent` or `received`) from `account`.
fn carbon_of<'a>(el: &'a Element, direction: &str, account: &str) -> Option<&'a Element> {
    if el.name() != "message" || el.attr("from") != Some(account) {
        return None;
    }
    el.get_child(direction, CARBONS)?
        .get_child("forwarded", FORWARD)?
        .get_child("message", CLIENT)
}

/// Waits (without asserting anything about time) until `jid` is no longer bound on `server`.
async fn until_gone(server: &TestServer, jid: &str) {
    let jid: jid::FullJid = jid.parse().expect("full jid");
    for _ in 0..1000 {
        if !server.server.ctx.router.is_bound(&jid) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{jid} is still bound");
}

/// Ends `session`'s stream and waits until the server has let it go.
async fn log_out(server: &TestServer, mut session: Session) {
    session.send("<presence type='unavailable'/>").await;
    session.send("</stream:stream>").await;
    until_gone(server, &session.jid.clone()).await;
}

/// Sends an IQ to the other server's side and returns the answer; for the answer to arrive the
/// request crossed both ways.
async fn iq_to(session: &mut Session, to: &str, payload: &str, iq_type: &str) -> Element {
    session
        .iq(&format!("<iq type='{iq_type}' to='{to}'>{payload}</iq>"))
        .await
}

// ---------------------------------------------------------------------------------------------
// 1. One-to-one chat: archive, carbons, offline storage.

#[tokio::test]
async fn chat_both_ways_is_archived_on_both_sides_and_carbon_copied() {
    let f = federation().await;
    f.a.add_user("alice@a.test").await;
    f.b.add_user("bob@b.test").await;
    let mut pc = Session::online_on(&f.a, A, "alice", "pc").await;
    let mut phone = Session::online_on(&f.a, A, "alice", "phone").await;
    let mut bob = Session::online_on(&f.b, B, "bob", "phone").await;
    enable_carbons(&mut pc).await;
    enable_carbons(&mut phone).await;
    phone.drain().await;

    pc.send("<message to='bob@b.test' type='chat' id='out'><body>from alice</body></message>")
        .await;
    let got = bob.expect(has_body("from alice")).await;
    assert_eq!(got.attr("from"), Some("alice@a.test/pc"));
    // The server of the recipient put its own archive id on it.
    assert!(
        got.children()
            .any(|c| c.is("stanza-id", "urn:xmpp:sid:0") && c.attr("by") == Some("bob@b.test")),
        "{got:?}"
    );
    let sent = phone
        .expect(|el| carbon_of(el, "sent", "alice@a.test").is_some())
        .await;
    let sent = carbon_of(&sent, "sent", "alice@a.test").expect("sent carbon");
    assert_eq!(sent.attr("to"), Some("bob@b.test"));
    assert_eq!(body(sent).as_deref(), Some("from alice"));

    bob.send("<message to='alice@a.test/pc' type='chat' id='in'><body>from bob</body></message>")
        .await;
    let got = pc.expect(has_body("from bob")).await;
    assert_eq!(got.attr("from"), Some("bob@b.test/phone"));
    let received = phone
        .expect(|el| carbon_of(el, "received", "alice@a.test").is_some())
        .await;
    let received = carbon_of(&received, "received", "alice@a.test").expect("received carbon");
    assert_eq!(received.attr("from"), Some("bob@b.test/phone"));
    assert_eq!(body(received).as_deref(), Some("from bob"));

    let expected = |alice: &str, bob: &str| {
        vec![
            (
                alice.to_owned(),
                "bob@b.test".to_owned(),
                "from alice".to_owned(),
            ),
            (bob.to_owned(), alice.to_owned(), "from bob".to_owned()),
        ]
    };
    // Archiving is asynchronous: a query may come before the writer's commit. Asking again
    // until both are there is not a timing assertion (the wait bound is the harness's).
    let mut alice_archive = Vec::new();
    let mut bob_archive = Vec::new();
    for _ in 0..100 {
        alice_archive = archive(&mut pc).await;
        bob_archive = archive(&mut bob).await;
        if alice_archive.len() >= 2 && bob_archive.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        alice_archive,
        expected("alice@a.test/pc", "bob@b.test/phone")
    );
    assert_eq!(bob_archive, expected("alice@a.test/pc", "bob@b.test/phone"));
}

#[tokio::test]
async fn a_message_for_an_offline_remote_user_waits_for_the_next_login() {
    let f = federation().await;
    f.a.add_user("alice@a.test").await;
    f.b.add_user("bob@b.test").await;
    let mut alice = Session::online_on(&f.a, A, "alice", "pc").await;
    alice
        .send(
            "<message to='bob@b.test' type='chat' id='w'><body>while you were out</body></message>",
        )
        .await;
    // No error comes back: the message was stored. A ping through the same link, answered,
    // is a barrier: anything the message caused came back before it.
    let pong = iq_to(&mut alice, B, "<ping xmlns='urn:xmpp:ping'/>", "get").await;
    assert_eq!(pong.attr("type"), Some("result"), "{pong:?}");
    let before = alice.drain().await;
    assert!(
        !before.iter().any(|el| el.attr("type") == Some("error")),
        "{before:?}"
    );
    let mut bob = Session::login_on(&f.b, B, "bob", "phone").await;
    bob.roster_get().await;
    bob.send("<presence/>").await;
    let stored = bob.expect(has_body("while you were out")).await;
    assert_eq!(stored.attr("from"), Some("alice@a.test/pc"));
    let delay = stored
        .get_child("delay", "urn:xmpp:delay")
        .expect("offline messages carry a delay");
    assert_eq!(delay.attr("from"), Some(B));
}

// ---------------------------------------------------------------------------------------------
// 2. Subscriptions (RFC 6121 §3) with a contact on the other server.

fn push_for<'a>(el: &'a Element, contact: &str) -> Option<&'a Element> {
    if !is_roster_push(el) {
        return None;
    }
    pushed_item(el).filter(|item| item.attr("jid") == Some(contact))
}

/// The next roster push about `contact`: its (subscription, ask).
async fn next_push(session: &mut Session, contact: &str) -> (String, Option<String>) {
    let push = session.expect(|el| push_for(el, contact).is_some()).await;
    let item = push_for(&push, contact).expect("item");
    (
        item.attr("subscription").unwrap_or("none").to_owned(),
        item.attr("ask").map(str::to_owned),
    )
}

#[tokio::test]
async fn subscribing_to_a_remote_contact_reaches_both_on_both_sides() {
    let f = federation().await;
    f.a.add_user("alice@a.test").await;
    f.b.add_user("bob@b.test").await;
    let mut alice = Session::online_on(&f.a, A, "alice", "pc").await;
    let mut bob = Session::online_on(&f.b, B, "bob", "phone").await;

    alice
        .send("<presence to='bob@b.test' type='subscribe'/>")
        .await;
    assert_eq!(
        next_push(&mut alice, "bob@b.test").await,
        ("none".into(), Some("subscribe".into()))
    );
    let request = bob
        .expect(|el| is_presence(el, Some("subscribe"), "alice@a.test"))
        .await;
    assert_eq!(request.attr("to"), Some("bob@b.test"));

    bob.send("<presence to='alice@a.test' type='subscribed'/>")
        .await;
    assert_eq!(
        next_push(&mut bob, "alice@a.test").await,
        ("from".into(), None)
    );
    assert_eq!(
        next_push(&mut alice, "bob@b.test").await,
        ("to".into(), None)
    );
    alice
        .expect(|el| is_presence(el, Some("subscribed"), "bob@b.test"))
        .await;
    // §3.1.5: once approved, bob's server sends his current presence.
    alice
        .expect(|el| is_presence(el, None, "bob@b.test/phone"))
        .await;

    bob.send("<presence to='alice@a.test' type='subscribe'/>")
        .await;
    assert_eq!(
        next_push(&mut bob, "alice@a.test").await,
        ("from".into(), Some("subscribe".into()))
    );
    alice
        .expect(|el| is_presence(el, Some("subscribe"), "bob@b.test"))
        .await;
    alice
        .send("<presence to='bob@b.test' type='subscribed'/>")
        .await;
    assert_eq!(
        next_push(&mut alice, "bob@b.test").await,
        ("both".into(), None)
    );
    assert_eq!(
        next_push(&mut bob, "alice@a.test").await,
        ("both".into(), None)
    );
    bob.expect(|el| is_presence(el, None, "alice@a.test/pc"))
        .await;

    let alice_item = roster_item(&f.a, "alice@a.test", "bob@b.test")
        .await
        .expect("alice has bob");
    assert_eq!(
        (alice_item.subscription, alice_item.ask),
        (Subscription::Both, false)
    );
    let bob_item = roster_item(&f.b, "bob@b.test", "alice@a.test")
        .await
        .expect("bob has alice");
    assert_eq!(
        (bob_item.subscription, bob_item.ask),
        (Subscription::Both, false)
    );
}

#[tokio::test]
async fn a_pre_approval_answers_the_remote_request_at_once() {
    let f = federation().await;
    f.a.add_user("alice@a.test").await;
    f.b.add_user("bob@b.test").await;
    let mut alice = Session::online_on(&f.a, A, "alice", "pc").await;
    let mut bob = Session::online_on(&f.b, B, "bob", "phone").await;

    // §3.4: bob approves before alice asks.
    bob.send("<presence to='alice@a.test' type='subscribed'/>")
        .await;
    let push = bob
        .expect(|el| push_for(el, "alice@a.test").is_some())
        .await;
    let item = push_for(&push, "alice@a.test").expect("item");
    assert_eq!(item.attr("approved"), Some("true"), "{push:?}");
    assert_eq!(item.attr("subscription"), Some("none"));

    alice
        .send("<presence to='bob@b.test' type='subscribe'/>")
        .await;
    assert_eq!(
        next_push(&mut alice, "bob@b.test").await,
        ("none".into(), Some("subscribe".into()))
    );
    // Approved by bob's server without asking bob: alice's roster first, then the
    // `subscribed` itself (§3.1.6).
    assert_eq!(
        next_push(&mut alice, "bob@b.test").await,
        ("to".into(), None)
    );
    alice
        .expect(|el| is_presence(el, Some("subscribed"), "bob@b.test"))
        .await;
    let marker = Session::marker();
    alice.send_marker("bob@b.test/phone", &marker).await;
    let seen = bob.until_marker(&marker).await;
    assert!(
        !seen
            .iter()
            .any(|el| el.name() == "presence" && el.attr("type") == Some("subscribe")),
        "bob is not asked: {seen:?}"
    );
    assert!(
        seen.iter().any(|el| push_for(el, "alice@a.test")
            .is_some_and(|i| i.attr("subscription") == Some("from"))),
        "bob's roster says from: {seen:?}"
    );
}

#[tokio::test]
async fn a_request_to_an_offline_remote_contact_waits_for_the_next_login() {
    let f = federation().await;
    f.a.add_user("alice@a.test").await;
    f.b.add_user("bob@b.test").await;
    let mut alice = Session::online_on(&f.a, A, "alice", "pc").await;
    alice
        .send("<presence to='bob@b.test' type='subscribe'/>")
        .await;
    next_push(&mut alice, "bob@b.test").await;
    // Bob's server has recorded it once a later stanza on the same link was handled.
    let pong = iq_to(
        &mut alice,
        "bob@b.test",
        "<ping xmlns='urn:xmpp:ping'/>",
        "get",
    )
    .await;
    assert_eq!(pong.attr("type"), Some("result"), "{pong:?}");
    assert!(f
        .b
        .storage()
        .roster
        .has_pending_in("bob@b.test", "alice@a.test")
        .await
        .expect("pending read"));

    // §3.1.3: the request is handed to bob when he next sends initial presence.
    let mut bob = Session::login_on(&f.b, B, "bob", "phone").await;
    bob.roster_get().await;
    bob.send("<presence/>").await;
    bob.expect(|el| is_presence(el, Some("subscribe"), "alice@a.test"))
        .await;
    bob.send("<presence to='alice@a.test' type='subscribed'/>")
        .await;
    assert_eq!(
        next_push(&mut alice, "bob@b.test").await,
        ("to".into(), None)
    );
}

/// A request waiting for an offline contact is stored, not held in memory: it survives a
/// restart of the contact's server, and the answer still reaches the requester's server.
#[tokio::test]
async fn a_pending_request_survives_a_restart_of_the_contacts_server() {
    let mut f = federation().await;
    f.a.add_user("alice@a.test").await;
    f.b.add_user("bob@b.test").await;
    let mut alice = Session::online_on(&f.a, A, "alice", "pc").await;
    alice
        .send("<presence to='bob@b.test' type='subscribe'/>")
        .await;
    next_push(&mut alice, "bob@b.test").await;
    let pong = iq_to(
        &mut alice,
        "bob@b.test",
        "<ping xmlns='urn:xmpp:ping'/>",
        "get",
    )
    .await;
    assert_eq!(pong.attr("type"), Some("result"), "{pong:?}");

    let placeholder = common::TestServer::start().await;
    let b = std::mem::replace(&mut f.b, placeholder);
    f.b = common::federation::restarted(b).await;

    let mut bob = Session::login_on(&f.b, B, "bob", "phone").await;
    bob.roster_get().await;
    bob.send("<presence/>").await;
    bob.expect(|el| is_presence(el, Some("subscribe"), "alice@a.test"))
        .await;
    bob.send("<presence to='alice@a.test' type='subscribed'/>")
        .await;
    assert_eq!(
        next_push(&mut alice, "bob@b.test").await,
        ("to".into(), None)
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Presence.

#[tokio::test]
async fn presence_reaches_remote_contacts_and_probes_are_answered() {
    let f = federation().await;
    f.a.add_user("alice@a.test").await;
    f.b.add_user("bob@b.test").await;
    mutual(&f, "alice@a.test", "bob@b.test").await;
    let mut alice = Session::online_on(&f.a, A, "alice", "pc").await;
    // Bob comes second: his initial presence reaches alice, and his probe to a.test is
    // answered with hers.
    let mut bob = Session::login_on(&f.b, B, "bob", "phone").await;
    bob.roster_get().await;
    bob.send("<presence><show>dnd</show></presence>").await;
    let seen = bob
        .expect(|el| is_presence(el, None, "alice@a.test/pc"))
        .await;
    assert_eq!(seen.attr("to"), Some("bob@b.test/phone"));
    let bobs = alice
        .expect(|el| is_presence(el, None, "bob@b.test/phone"))
        .await;
    assert_eq!(
        bobs.get_child("show", CLIENT).map(Element::text).as_deref(),
        Some("dnd")
    );

    // Alice changes her presence: bob sees it.
    alice
        .send("<presence><status>lunch</status></presence>")
        .await;
    let update = bob
        .expect(|el| is_presence(el, None, "alice@a.test/pc"))
        .await;
    assert_eq!(
        update
            .get_child("status", CLIENT)
            .map(Element::text)
            .as_deref(),
        Some("lunch")
    );

    // Bob logs out: alice hears he is gone.
    log_out(&f.b, bob).await;
    alice
        .expect(|el| is_presence(el, Some("unavailable"), "bob@b.test/phone"))
        .await;
}

#[tokio::test]
async fn a_probe_for_an_offline_remote_contact_says_unavailable_with_last_activity() {
    let f = federation().await;
    f.a.add_user("alice@a.test").await;
    f.b.add_user("bob@b.test").await;
    mutual(&f, "alice@a.test", "bob@b.test").await;
    let bob = Session::online_on(&f.b, B, "bob", "phone").await;
    log_out(&f.b, bob).await;
    let mut alice = Session::online_on(&f.a, A, "alice", "pc").await;
    let answer = alice
        .expect(|el| is_presence(el, Some("unavailable"), "bob@b.test"))
        .await;
    assert!(
        answer.has_child("query", "jabber:iq:last"),
        "XEP-0256 idle time: {answer:?}"
    );
}

#[tokio::test]
async fn directed_presence_to_a_remote_jid_and_its_unavailable() {
    let f = federation().await;
    f.a.add_user("alice@a.test").await;
    f.b.add_user("carol@b.test").await;
    let mut alice = Session::online_on(&f.a, A, "alice", "pc").await;
    let mut carol = Session::online_on(&f.b, B, "carol", "pc").await;
    alice
        .send("<presence to='carol@b.test'><status>hi there</status></presence>")
        .await;
    let directed = carol
        .expect(|el| is_presence(el, None, "alice@a.test/pc"))
        .await;
    assert_eq!(
        directed
            .get_child("status", CLIENT)
            .map(Element::text)
            .as_deref(),
        Some("hi there")
    );
    // Not a contact: carol's probe-less view ends when alice's session does (§4.6.3).
    log_out(&f.a, alice).await;
    carol
        .expect(|el| is_presence(el, Some("unavailable"), "alice@a.test/pc"))
        .await;
}

/// A server that shuts down ends its sessions first, and its links carry their unavailable
/// presence before they close (`S2s::shutdown`).
#[tokio::test]
async fn remote_contacts_go_unavailable_when_their_server_shuts_down() {
    let f = federation().await;
    f.a.add_user("alice@a.test").await;
    f.b.add_user("bob@b.test").await;
    mutual(&f, "alice@a.test", "bob@b.test").await;
    let mut alice = Session::online_on(&f.a, A, "alice", "pc").await;
    let _bob = Session::online_on(&f.b, B, "bob", "phone").await;
    alice
        .expect(|el| is_presence(el, None, "bob@b.test/phone"))
        .await;
    // A clean shutdown ends bob's session, whose unavailable presence leaves before the link.
    f.b.server.shutdown().await;
    alice
        .expect(|el| is_presence(el, Some("unavailable"), "bob@b.test/phone"))
        .await;
}

// ---------------------------------------------------------------------------------------------
// 4. PEP (XEP-0163) with a remote contact: caps learned over s2s.

fn caps_ver(features: &[String]) -> String {
    let mut sorted = features.to_vec();
    sorted.sort_unstable();
    let mut s = String::from("client/pc//corvid-test<");
    for feature in sorted {
        s.push_str(&feature);
        s.push('<');
    }
    base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(s.as_bytes()))
}

fn avatar_features() -> Vec<String> {
    vec![
        DISCO_INFO.to_owned(),
        "http://jabber.org/protocol/caps".to_owned(),
        AVATAR_META.to_owned(),
        format!("{AVATAR_META}+notify"),
    ]
}

fn is_caps_query(el: &Element) -> bool {
    el.name() == "iq" && el.attr("type") == Some("get") && el.has_child("query", DISCO_INFO)
}

/// Answers a caps disco#info query (from whichever server asks) with `features`.
async fn answer_caps_query(session: &mut Session, query: &Element, features: &[String]) {
    let node = query
        .get_child("query", DISCO_INFO)
        .and_then(|q| q.attr("node"))
        .unwrap_or_default()
        .to_owned();
    let vars: String = features
        .iter()
        .map(|f| format!("<feature var='{f}'/>"))
        .collect();
    session
        .send(&format!(
            "<iq type='result' id='{}' to='{}'><query xmlns='{DISCO_INFO}' node='{node}'>\
             <identity category='client' type='pc' name='corvid-test'/>{vars}</query></iq>",
            query.attr("id").unwrap_or_default(),
            query.attr("from").unwrap_or_default(),
        ))
        .await;
}

fn metadata_event(el: &Element) -> Option<Vec<String>> {
    let items = el
        .get_child("event", PUBSUB_EVENT)?
        .get_child("items", PUBSUB_EVENT)?;
    (items.attr("node") == Some(AVATAR_META)).then(|| {
        items
            .children()
            .filter(|c| c.name() == "item")
            .filter_map(|c| c.attr("id").map(str::to_owned))
            .collect()
    })
}

async fn publish_avatar(bob: &mut Session, id: &str) {
    let answer = bob
        .iq(&format!(
            "<iq type='set'><pubsub xmlns='{PUBSUB}'><publish node='{AVATAR_META}'>\
             <item id='{id}'><metadata xmlns='{AVATAR_META}'><info bytes='100' id='{id}' \
             height='64' width='64' type='image/png'/></metadata></item></publish></pubsub></iq>"
        ))
        .await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
}

/// Alice logs in with caps wanting avatar metadata, answers every caps query (her own
/// server's and bob's server's, which asks over s2s), until both servers asked.
async fn alice_with_avatar_caps(f: &Federation) -> (Session, Vec<Element>) {
    let mut alice = Session::login_on(&f.a, A, "alice", "pc").await;
    alice.roster_get().await;
    let features = avatar_features();
    let ver = caps_ver(&features);
    alice
        .send(&format!(
            "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' \
             node='{CAPS_NODE}' ver='{ver}'/></presence>"
        ))
        .await;
    let mut askers = Vec::new();
    let mut seen = Vec::new();
    while askers.len() < 2 {
        let el = alice.next().await;
        if is_caps_query(&el) {
            assert_eq!(
                el.get_child("query", DISCO_INFO)
                    .and_then(|q| q.attr("node")),
                Some(format!("{CAPS_NODE}#{ver}").as_str())
            );
            askers.push(el.attr("from").unwrap_or_default().to_owned());
            answer_caps_query(&mut alice, &el, &features).await;
        } else {
            seen.push(el);
        }
    }
    askers.sort();
    assert_eq!(askers, [A, B], "both servers ask about alice's caps");
    (alice, seen)
}

#[tokio::test]
async fn pep_notifications_reach_a_remote_contact_whose_caps_ask_for_them() {
    let f = federation().await;
    f.a.add_user("alice@a.test").await;
    f.b.add_user("bob@b.test").await;
    mutual(&f, "alice@a.test", "bob@b.test").await;
    let mut bob = Session::online_on(&f.b, B, "bob", "phone").await;
    publish_avatar(&mut bob, "first").await;

    // Last item on coming online (§4.3.3), sent once b.test knows what alice's caps mean.
    let (mut alice, seen) = alice_with_avatar_caps(&f).await;
    let last = match seen.iter().find_map(metadata_event) {
        Some(ids) => ids,
        None => {
            let el = alice.expect(|el| metadata_event(el).is_some()).await;
            assert_eq!(el.attr("from"), Some("bob@b.test"));
            metadata_event(&el).expect("event")
        }
    };
    assert_eq!(last, ["first"]);

    publish_avatar(&mut bob, "second").await;
    let el = alice.expect(|el| metadata_event(el).is_some()).await;
    assert_eq!(el.attr("from"), Some("bob@b.test"));
    assert_eq!(metadata_event(&el).expect("event"), ["second"]);
}

#[tokio::test]
async fn a_remote_contact_gets_the_last_item_when_subscription_is_granted() {
    let f = federation().await;
    f.a.add_user("alice@a.test").await;
    f.b.add_user("bob@b.test").await;
    // Bob already sees alice's presence (so b.test learns her caps), but she does not see his:
    // his nodes (access model presence) are not hers to read yet.
    put_item(&f.a, "alice@a.test", "bob@b.test", Subscription::From).await;
    put_item(&f.b, "bob@b.test", "alice@a.test", Subscription::To).await;
    let mut bob = Session::online_on(&f.b, B, "bob", "phone").await;
    publish_avatar(&mut bob, "av1").await;
    let (mut alice, seen) = alice_with_avatar_caps(&f).await;
    let marker = Session::marker();
    bob.send_marker("alice@a.test/pc", &marker).await;
    let mut before_grant = seen;
    before_grant.extend(alice.until_marker(&marker).await);
    assert!(
        !before_grant.iter().any(|el| metadata_event(el).is_some()),
        "nothing before the subscription: {before_grant:?}"
    );
    alice
        .send("<presence to='bob@b.test' type='subscribe'/>")
        .await;
    bob.expect(|el| is_presence(el, Some("subscribe"), "alice@a.test"))
        .await;
    bob.send("<presence to='alice@a.test' type='subscribed'/>")
        .await;
    let el = alice.expect(|el| metadata_event(el).is_some()).await;
    assert_eq!(el.attr("from"), Some("bob@b.test"));
    assert_eq!(metadata_event(&el).expect("event"), ["av1"]);
}

// ---------------------------------------------------------------------------------------------
// 5. IQs answered by the other server.

#[tokio::test]
async fn iqs_to_the_remote_server_and_its_users() {
    let f = federation().await;
    f.a.add_user("alice@a.test").await;
    f.b.add_user("bob@b.test").await;
    mutual(&f, "alice@a.test", "bob@b.test").await;
    let mut alice = Session::online_on(&f.a, A, "alice", "pc").await;
    let mut bob = Session::online_on(&f.b, B, "bob", "phone").await;

    // vCard (XEP-0054) of a remote user, from their server.
    let stored = bob
        .iq("<iq type='set'><vCard xmlns='vcard-temp'><FN>Bob Builder</FN></vCard></iq>")
        .await;
    assert_eq!(stored.attr("type"), Some("result"), "{stored:?}");
    let vcard = iq_to(
        &mut alice,
        "bob@b.test",
        "<vCard xmlns='vcard-temp'/>",
        "get",
    )
    .await;
    assert_eq!(vcard.attr("type"), Some("result"), "{vcard:?}");
    assert_eq!(vcard.attr("from"), Some("bob@b.test"));
    let full_name = vcard
        .get_child("vCard", "vcard-temp")
        .and_then(|v| v.get_child("FN", "vcard-temp"))
        .map(Element::text);
    assert_eq!(full_name.as_deref(), Some("Bob Builder"));

    // Ping (XEP-0199): the server, the account (answered by its server), a session (by bob).
    let pong = iq_to(&mut alice, B, "<ping xmlns='urn:xmpp:ping'/>", "get").await;
    assert_eq!(pong.attr("type"), Some("result"), "{pong:?}");
    assert_eq!(pong.attr("from"), Some(B));
    let pong = iq_to(
        &mut alice,
        "bob@b.test",
        "<ping xmlns='urn:xmpp:ping'/>",
        "get",
    )
    .await;
    assert_eq!(pong.attr("type"), Some("result"), "{pong:?}");
    alice
        .send(
            "<iq type='get' id='fullping' to='bob@b.test/phone'><ping xmlns='urn:xmpp:ping'/></iq>",
        )
        .await;
    let ping = bob
        .expect(|el| el.name() == "iq" && el.has_child("ping", "urn:xmpp:ping"))
        .await;
    assert_eq!(ping.attr("from"), Some("alice@a.test/pc"));
    bob.send(&format!(
        "<iq type='result' id='{}' to='alice@a.test/pc'/>",
        ping.attr("id").unwrap_or_default()
    ))
    .await;
    let pong = alice
        .expect(|el| el.name() == "iq" && el.attr("id") == Some("fullping"))
        .await;
    assert_eq!(pong.attr("type"), Some("result"));
    assert_eq!(pong.attr("from"), Some("bob@b.test/phone"));

    // disco#info (XEP-0030) of the remote server.
    let info = iq_to(
        &mut alice,
        B,
        &format!("<query xmlns='{DISCO_INFO}'/>"),
        "get",
    )
    .await;
    assert_eq!(info.attr("type"), Some("result"), "{info:?}");
    let query = info.get_child("query", DISCO_INFO).expect("disco#info");
    assert!(
        query
            .children()
            .any(|c| c.name() == "identity" && c.attr("category") == Some("server")),
        "{info:?}"
    );
    assert!(
        query
            .children()
            .any(|c| c.name() == "feature" && c.attr("var") == Some("urn:xmpp:ping")),
        "{info:?}"
    );

    // Version (XEP-0092) of the remote server.
    let version = iq_to(&mut alice, B, "<query xmlns='jabber:iq:version'/>", "get").await;
    assert_eq!(version.attr("type"), Some("result"), "{version:?}");
    let name = version
        .get_child("query", "jabber:iq:version")
        .and_then(|q| q.get_child("name", "jabber:iq:version"))
        .map(Element::text);
    assert!(name.is_some_and(|n| !n.is_empty()), "{version:?}");

    // Last activity (XEP-0012) of a remote contact who logged out, and of the server.
    log_out(&f.b, bob).await;
    let last = iq_to(
        &mut alice,
        "bob@b.test",
        "<query xmlns='jabber:iq:last'/>",
        "get",
    )
    .await;
    assert_eq!(last.attr("type"), Some("result"), "{last:?}");
    assert!(last
        .get_child("query", "jabber:iq:last")
        .and_then(|q| q.attr("seconds"))
        .is_some_and(|s| s.parse::<u64>().is_ok()));
    let uptime = iq_to(&mut alice, B, "<query xmlns='jabber:iq:last'/>", "get").await;
    assert_eq!(uptime.attr("type"), Some("result"), "{uptime:?}");
}

#[tokio::test]
async fn a_stranger_on_another_server_gets_no_last_activity() {
    let f = federation().await;
    f.a.add_user("alice@a.test").await;
    f.b.add_user("bob@b.test").await;
    let mut alice = Session::online_on(&f.a, A, "alice", "pc").await;
    let last = iq_to(
        &mut alice,
        "bob@b.test",
        "<query xmlns='jabber:iq:last'/>",
        "get",
    )
    .await;
    assert_eq!(last.attr("type"), Some("error"), "{last:?}");
    assert_eq!(error_condition(&last).as_deref(), Some("forbidden"));
}

// ---------------------------------------------------------------------------------------------
// 6. MUC with occupants from the other domain.

fn muc_codes(el: &Element) -> Vec<u16> {
    el.get_child("x", MUC_USER)
        .map(|x| {
            x.children()
                .filter(|c| c.name() == "status")
                .filter_map(|c| c.attr("code").and_then(|v| v.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

fn muc_item(el: &Element) -> Option<&Element> {
    el.get_child("x", MUC_USER)?.get_child("item", MUC_USER)
}

/// Joins `room` as `nick`; returns the own presence and all that came up to the subject.
async fn join(s: &mut Session, room: &str, nick: &str) -> (Element, Vec<Element>) {
    s.send(&format!(
        "<presence to='{room}/{nick}'><x xmlns='{MUC}'/></presence>"
    ))
    .await;
    let mut seen = Vec::new();
    let mut own = None;
    loop {
        let el = s.next().await;
        assert_ne!(el.attr("type"), Some("error"), "join of {nick}: {el:?}");
        if el.name() == "presence" && muc_codes(&el).contains(&110) {
            own = Some(el.clone());
        }
        let subject = el.name() == "message" && el.has_child("subject", CLIENT);
        seen.push(el);
        if subject {
            return (own.expect("own presence before the subject"), seen);
        }
    }
}

async fn join_error(s: &mut Session, room: &str, nick: &str) -> String {
    s.send(&format!(
        "<presence to='{room}/{nick}'><x xmlns='{MUC}'/></presence>"
    ))
    .await;
    let from = format!("{room}/{nick}");
    let error = s
        .expect(|el| el.name() == "presence" && el.attr("from") == Some(from.as_str()))
        .await;
    assert_eq!(error.attr("type"), Some("error"), "{error:?}");
    error_condition(&error).expect("a condition")
}

async fn create_instant(s: &mut Session, room: &str, nick: &str) {
    let (own, _) = join(s, room, nick).await;
    assert!(muc_codes(&own).contains(&201), "new room: {own:?}");
    let answer = s
        .iq(&format!(
            "<iq to='{room}' type='set'><query xmlns='http://jabber.org/protocol/muc#owner'>\
             <x xmlns='jabber:x:data' type='submit'/></query></iq>"
        ))
        .await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
}

async fn admin(s: &mut Session, room: &str, item: &str) -> Element {
    s.iq(&format!(
        "<iq to='{room}' type='set'><query xmlns='http://jabber.org/protocol/muc#admin'>{item}</query></iq>"
    ))
    .await
}

async fn say(s: &mut Session, room: &str, text: &str) {
    s.send(&format!(
        "<message to='{room}' type='groupchat'><body>{text}</body></message>"
    ))
    .await;
}

fn occupant_id(el: &Element) -> Option<String> {
    el.get_child("occupant-id", OCCUPANT_ID)
        .and_then(|o| o.attr("id"))
        .map(str::to_owned)
}

#[tokio::test]
async fn a_remote_user_joins_talks_reads_history_and_is_moderated() {
    let f = federation().await;
    f.a.add_user("alice@a.test").await;
    f.b.add_user("bob@b.test").await;
    f.b.add_user("carol@b.test").await;
    let room = "room@conference.a.test";
    let mut alice = Session::online_on(&f.a, A, "alice", "pc").await;
    let mut bob = Session::online_on(&f.b, B, "bob", "phone").await;
    create_instant(&mut alice, room, "Alice").await;

    let (own, _) = join(&mut bob, room, "Bob").await;
    assert_eq!(own.attr("from"), Some("room@conference.a.test/Bob"));
    let bob_occupant = occupant_id(&own).expect("occupant-id (XEP-0421) on bob's presence");
    let bob_seen = alice
        .expect(|el| {
            el.name() == "presence" && el.attr("from") == Some("room@conference.a.test/Bob")
        })
        .await;
    // The owner is a moderator: she sees bob's real JID.
    assert_eq!(
        muc_item(&bob_seen).and_then(|i| i.attr("jid")),
        Some("bob@b.test/phone")
    );
    assert_eq!(
        occupant_id(&bob_seen).as_deref(),
        Some(bob_occupant.as_str())
    );

    say(&mut alice, room, "welcome bob").await;
    let got = bob.expect(has_body("welcome bob")).await;
    assert_eq!(got.attr("from"), Some("room@conference.a.test/Alice"));
    assert_eq!(got.attr("type"), Some("groupchat"));
    say(&mut bob, room, "thanks alice").await;
    let got = alice.expect(has_body("thanks alice")).await;
    assert_eq!(got.attr("from"), Some("room@conference.a.test/Bob"));
    assert_eq!(occupant_id(&got).as_deref(), Some(bob_occupant.as_str()));
    bob.expect(has_body("thanks alice")).await;

    // IQs to an occupant: a vCard request to room/Bob is answered by bob's server (XEP-0045
    // §17.3 passes it to his account), and a private message reaches the remote occupant.
    let stored = bob
        .iq("<iq type='set'><vCard xmlns='vcard-temp'><FN>Bob of B</FN></vCard></iq>")
        .await;
    assert_eq!(stored.attr("type"), Some("result"), "{stored:?}");
    let vcard = iq_to(
        &mut alice,
        "room@conference.a.test/Bob",
        "<vCard xmlns='vcard-temp'/>",
        "get",
    )
    .await;
    assert_eq!(vcard.attr("type"), Some("result"), "{vcard:?}");
    assert_eq!(vcard.attr("from"), Some("room@conference.a.test/Bob"));
    let full_name = vcard
        .get_child("vCard", "vcard-temp")
        .and_then(|v| v.get_child("FN", "vcard-temp"))
        .map(Element::text);
    assert_eq!(full_name.as_deref(), Some("Bob of B"));
    alice
        .send("<message to='room@conference.a.test/Bob' type='chat'><body>psst</body></message>")
        .await;
    let private = bob.expect(has_body("psst")).await;
    assert_eq!(private.attr("from"), Some("room@conference.a.test/Alice"));

    // Carol (also of b.test) joins later: the history has both messages.
    let mut carol = Session::online_on(&f.b, B, "carol", "pc").await;
    let (_, seen) = join(&mut carol, room, "Carol").await;
    let history: Vec<String> = seen
        .iter()
        .filter(|el| el.has_child("delay", "urn:xmpp:delay"))
        .filter_map(body)
        .collect();
    assert_eq!(history, ["welcome bob", "thanks alice"]);

    // The room's archive, read by a remote occupant.
    let qid = Session::marker();
    bob.send(&format!(
        "<iq type='set' id='{qid}' to='{room}'><query xmlns='{MAM}' queryid='{qid}'/></iq>"
    ))
    .await;
    let mut archived = Vec::new();
    let fin = loop {
        let el = bob.next().await;
        if el.name() == "iq" && el.attr("id") == Some(qid.as_str()) {
            break el;
        }
        if let Some(message) = el
            .get_child("result", MAM)
            .and_then(|r| r.get_child("forwarded", FORWARD))
            .and_then(|f| f.get_child("message", CLIENT))
        {
            assert_eq!(el.attr("from"), Some(room));
            archived.extend(body(message));
        }
    };
    assert_eq!(fin.attr("type"), Some("result"), "{fin:?}");
    assert_eq!(archived, ["welcome bob", "thanks alice"]);

    // The owner kicks bob: he hears it (307), the others see him leave.
    let kicked = admin(&mut alice, room, "<item nick='Bob' role='none'/>").await;
    assert_eq!(kicked.attr("type"), Some("result"), "{kicked:?}");
    let gone = bob
        .expect(|el| {
            is_presence(el, Some("unavailable"), "room@conference.a.test/Bob")
                && muc_codes(el).contains(&307)
        })
        .await;
    assert!(muc_codes(&gone).contains(&110));
    carol
        .expect(|el| is_presence(el, Some("unavailable"), "room@conference.a.test/Bob"))
        .await;

    // Then bans him by his bare JID: he cannot come back.
    let banned = admin(
        &mut alice,
        room,
        "<item jid='bob@b.test' affiliation='outcast'/>",
    )
    .await;
    assert_eq!(banned.attr("type"), Some("result"), "{banned:?}");
    assert_eq!(join_error(&mut bob, room, "Bob").await, "forbidden");
    // Carol, of the same server, still can speak.
    say(&mut carol, room, "still here").await;
    alice.expect(has_body("still here")).await;
}

#[tokio::test]
async fn a_local_user_joins_a_room_on_the_remote_service() {
    let f = federation().await;
    f.a.add_user("alice@a.test").await;
    f.b.add_user("bob@b.test").await;
    let room = "lounge@conference.b.test";
    let mut alice = Session::online_on(&f.a, A, "alice", "pc").await;
    let mut bob = Session::online_on(&f.b, B, "bob", "phone").await;
    create_instant(&mut bob, room, "Bob").await;
    // Rooms are created by the service's own users only (`muc.room_creation`).
    assert_eq!(
        join_error(&mut alice, "new@conference.b.test", "Alice").await,
        "not-allowed"
    );
    let (own, _) = join(&mut alice, room, "Alice").await;
    assert!(occupant_id(&own).is_some(), "{own:?}");
    bob.expect(|el| {
        el.name() == "presence" && el.attr("from") == Some("lounge@conference.b.test/Alice")
    })
    .await;
    say(&mut alice, room, "hello lounge").await;
    bob.expect(has_body("hello lounge")).await;
    alice.expect(has_body("hello lounge")).await;
    say(&mut bob, room, "hello alice").await;
    alice.expect(has_body("hello alice")).await;
    // Leaving ends her occupancy: bob sees it.
    alice
        .send(&format!("<presence to='{room}/Alice' type='unavailable'/>"))
        .await;
    bob.expect(|el| is_presence(el, Some("unavailable"), "lounge@conference.b.test/Alice"))
        .await;
}

#[tokio::test]
async fn remote_occupants_count_towards_the_room_cap() {
    let f = Federation::start_with(Trust::TestCa, |c| c.muc.max_occupants = 2, |_| {}).await;
    f.a.add_user("alice@a.test").await;
    f.b.add_user("bob@b.test").await;
    f.b.add_user("carol@b.test").await;
    let room = "small@conference.a.test";
    let mut alice = Session::online_on(&f.a, A, "alice", "pc").await;
    create_instant(&mut alice, room, "Alice").await;
    let mut bob = Session::online_on(&f.b, B, "bob", "phone").await;
    join(&mut bob, room, "Bob").await;
    let mut carol = Session::online_on(&f.b, B, "carol", "pc").await;
    assert_eq!(
        join_error(&mut carol, room, "Carol").await,
        "service-unavailable"
    );
    // When bob leaves, there is room for carol.
    bob.send(&format!("<presence to='{room}/Bob' type='unavailable'/>"))
        .await;
    alice
        .expect(|el| is_presence(el, Some("unavailable"), "small@conference.a.test/Bob"))
        .await;
    join(&mut carol, room, "Carol").await;
}

// ---------------------------------------------------------------------------------------------
// 7. Push (XEP-0357) to an app server on the other domain.

#[tokio::test]
async fn push_notifications_go_to_an_app_server_on_the_other_domain() {
    let f = federation().await;
    f.a.add_user("alice@a.test").await;
    f.a.add_user("dave@a.test").await;
    f.b.add_user("push@b.test").await;
    // The app server is a session of push@b.test: an IQ to the bare JID would be the
    // account's own PEP service, so it registers with its full JID.
    let mut app = Session::online_on(&f.b, B, "push", "app").await;
    let mut alice = Session::login_on(&f.a, A, "alice", "phone").await;
    let answer = alice
        .iq("<iq type='set'><enable xmlns='urn:xmpp:push:0' jid='push@b.test/app' node='node-1'>\
             <x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
             <field var='secret'><value>s3cret</value></field></x></enable></iq>")
        .await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    log_out(&f.a, alice).await;

    let mut dave = Session::online_on(&f.a, A, "dave", "pc").await;
    dave.send("<message to='alice@a.test' type='chat'><body>wake up</body></message>")
        .await;
    let publish = app
        .expect(|el| el.name() == "iq" && el.has_child("pubsub", PUBSUB))
        .await;
    assert_eq!(publish.attr("type"), Some("set"));
    assert_eq!(publish.attr("from"), Some("alice@a.test"));
    let node = publish
        .get_child("pubsub", PUBSUB)
        .and_then(|p| p.get_child("publish", PUBSUB))
        .and_then(|p| p.attr("node"));
    assert_eq!(node, Some("node-1"));
    let secret = publish
        .get_child("pubsub", PUBSUB)
        .and_then(|p| p.get_child("publish-options", PUBSUB))
        .and_then(|o| o.get_child("x", "jabber:x:data"))
        .map(|x| {
            x.children()
                .filter(|f| f.attr("var") == Some("secret"))
                .filter_map(|f| f.get_child("value", "jabber:x:data").map(Element::text))
                .collect::<Vec<_>>()
        });
    assert_eq!(secret, Some(vec!["s3cret".to_owned()]));
    app.send(&format!(
        "<iq type='result' id='{}' to='alice@a.test'/>",
        publish.attr("id").unwrap_or_default()
    ))
    .await;
    // A second message is pushed too: the registration survived the answer.
    dave.send("<message to='alice@a.test' type='chat'><body>again</body></message>")
        .await;
    let again = app
        .expect(|el| el.name() == "iq" && el.has_child("pubsub", PUBSUB))
        .await;
    assert_eq!(again.attr("from"), Some("alice@a.test"));
}

// ---------------------------------------------------------------------------------------------
// 8. Blocking (XEP-0191) of a remote JID.

#[tokio::test]
async fn a_blocked_remote_user_is_refused_and_unseen() {
    let f = federation().await;
    f.a.add_user("alice@a.test").await;
    f.b.add_user("bob@b.test").await;
    mutual(&f, "alice@a.test", "bob@b.test").await;
    let mut alice = Session::online_on(&f.a, A, "alice", "pc").await;
    let mut bob = Session::online_on(&f.b, B, "bob", "phone").await;
    bob.expect(|el| is_presence(el, None, "alice@a.test/pc"))
        .await;
    alice
        .expect(|el| is_presence(el, None, "bob@b.test/phone"))
        .await;
    // What came before the block (the answer to alice's probe, say) is not in question.
    alice.drain().await;
    let blocked = alice
        .iq("<iq type='set'><block xmlns='urn:xmpp:blocking'><item jid='bob@b.test'/></block></iq>")
        .await;
    assert_eq!(blocked.attr("type"), Some("result"), "{blocked:?}");
    // §3.3: blocking sends unavailable to the blocked contact.
    bob.expect(|el| is_presence(el, Some("unavailable"), "alice@a.test/pc"))
        .await;

    bob.send("<message to='alice@a.test' type='chat' id='nope'><body>let me in</body></message>")
        .await;
    let error = bob
        .expect(|el| el.name() == "message" && el.attr("type") == Some("error"))
        .await;
    assert_eq!(error.attr("id"), Some("nope"));
    assert_eq!(error.attr("from"), Some("alice@a.test"));
    assert_eq!(
        error_condition(&error).as_deref(),
        Some("service-unavailable")
    );
    // Nor does his presence or a ping get through; alice sees nothing of him.
    bob.send("<presence><status>hello?</status></presence>")
        .await;
    let pong = iq_to(
        &mut bob,
        "alice@a.test",
        "<ping xmlns='urn:xmpp:ping'/>",
        "get",
    )
    .await;
    assert_eq!(pong.attr("type"), Some("error"), "{pong:?}");
    let seen = alice.drain().await;
    assert!(
        !seen
            .iter()
            .any(|el| el.attr("from").is_some_and(|f| f.starts_with("bob@b.test"))),
        "{seen:?}"
    );
    // Alice cannot write to him either (§3.3.2).
    let refused = alice
        .iq("<iq type='get' to='bob@b.test'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(refused.attr("type"), Some("error"));
    assert_eq!(error_condition(&refused).as_deref(), Some("not-acceptable"));
}

#[tokio::test]
async fn a_remote_occupant_whose_session_ends_leaves_the_room() {
    let f = federation().await;
    f.a.add_user("alice@a.test").await;
    f.b.add_user("bob@b.test").await;
    let room = "room@conference.a.test";
    let mut alice = Session::online_on(&f.a, A, "alice", "pc").await;
    create_instant(&mut alice, room, "Alice").await;
    let mut bob = Session::online_on(&f.b, B, "bob", "phone").await;
    join(&mut bob, room, "Bob").await;
    // No unavailable to the room: the stream just ends. Bob's server tells the room (the
    // directed presence of the session, RFC 6121 §4.6.3).
    bob.send("</stream:stream>").await;
    until_gone(&f.b, "bob@b.test/phone").await;
    alice
        .expect(|el| is_presence(el, Some("unavailable"), "room@conference.a.test/Bob"))
        .await;
}
