//! XEP-0357 Push Notifications over real sockets, with an in-test app server: a component at
//! `push.localhost` that records every notification it receives and answers it.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use common::xmpp::{error_condition, Session};
use common::{account, TestServer, WAIT};
use corvid::router::{Component, Module, Registry, Router};
use corvid::stanza::{self, Kind, StanzaError};
use jid::Jid;
use minidom::Element;
use tokio::sync::{mpsc, Mutex};

const APP_SERVER: &str = "push.localhost";
const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const DATA_FORMS: &str = "jabber:x:data";
/// Nodes the fake app server says no longer exist.
const DEAD_NODE: &str = "dead-node";

/// Stands in for a mobile client's app server (Conversations' p2.siacs.eu, say).
struct FakeAppServer {
    received: mpsc::UnboundedSender<Element>,
}

impl Module for FakeAppServer {
    fn name(&self) -> &'static str {
        "fake-app-server"
    }

    fn register(self: Arc<Self>, registry: &mut Registry) {
        registry.component(APP_SERVER.to_owned(), self);
    }
}

#[async_trait]
impl Component for FakeAppServer {
    async fn handle(&self, router: &Arc<Router>, kind: Kind, _to: Jid, iq: Element) {
        if kind != Kind::Iq || iq.attr("type") != Some("set") {
            return;
        }
        let node = publish(&iq)
            .and_then(|p| p.attr("node"))
            .unwrap_or_default();
        let answer = if node == DEAD_NODE {
            stanza::error_reply(&iq, &StanzaError::item_not_found(), APP_SERVER)
        } else {
            stanza::iq_result(&iq, None, APP_SERVER)
        };
        let _ = self.received.send(iq);
        let Some(to) = answer.attr("to").and_then(|t| Jid::new(t).ok()) else {
            return;
        };
        router.route(Kind::Iq, to, answer).await;
    }
}

struct Notifications(Mutex<mpsc::UnboundedReceiver<Element>>);

impl Notifications {
    async fn next(&self) -> Element {
        tokio::time::timeout(WAIT, self.0.lock().await.recv())
            .await
            .expect("a notification within the wait")
            .expect("app server alive")
    }
}

async fn start(adjust: impl FnOnce(&mut corvid::config::Config)) -> (TestServer, Notifications) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Arc::new(FakeAppServer { received: tx });
    let server = TestServer::start_full(adjust, |s| s, vec![app as Arc<dyn Module>]).await;
    server.add_user("alice").await;
    server.add_user("bob").await;
    (server, Notifications(Mutex::new(rx)))
}

fn publish(iq: &Element) -> Option<&Element> {
    iq.get_child("pubsub", PUBSUB)?.get_child("publish", PUBSUB)
}

/// Field values of the notification's summary form.
fn summary(iq: &Element) -> Vec<(String, String)> {
    publish(iq)
        .and_then(|p| p.get_child("item", PUBSUB))
        .and_then(|i| i.get_child("notification", "urn:xmpp:push:0"))
        .and_then(|n| n.get_child("x", DATA_FORMS))
        .map(|form| {
            form.children()
                .filter_map(|f| {
                    let value = f.get_child("value", DATA_FORMS)?.text();
                    Some((f.attr("var")?.to_owned(), value))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn field<'a>(fields: &'a [(String, String)], var: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(v, _)| v == var)
        .map(|(_, value)| value.as_str())
}

async fn enable(session: &mut Session, node: &str) {
    let answer = session
        .iq(&format!(
            "<iq type='set'><enable xmlns='urn:xmpp:push:0' jid='{APP_SERVER}' node='{node}'>\
             <x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
             <field var='secret'><value>s3cret-{node}</value></field></x></enable></iq>"
        ))
        .await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
}

/// Logs alice in, registers `node`, and logs her out again.
async fn register_and_leave(server: &TestServer, node: &str) {
    let mut alice = Session::login(server, "alice", "phone").await;
    enable(&mut alice, node).await;
    alice.send("</stream:stream>").await;
    let jid: jid::FullJid = "alice@localhost/phone".parse().unwrap();
    for _ in 0..500 {
        if !server.server.ctx.router.is_bound(&jid) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("alice's session did not end");
}

#[tokio::test]
async fn a_message_for_an_offline_user_is_pushed_to_the_app_server() {
    let (server, notifications) = start(|_| {}).await;
    register_and_leave(&server, "node-1").await;
    let mut bob = Session::online(&server, "bob", "pc").await;
    bob.send("<message to='alice@localhost' type='chat'><body>wake up</body></message>")
        .await;
    let iq = notifications.next().await;
    assert_eq!(iq.attr("from"), Some("alice@localhost"));
    assert_eq!(iq.attr("to"), Some(APP_SERVER));
    assert_eq!(publish(&iq).and_then(|p| p.attr("node")), Some("node-1"));
    let fields = summary(&iq);
    assert_eq!(field(&fields, "FORM_TYPE"), Some("urn:xmpp:push:summary"));
    assert_eq!(field(&fields, "message-count"), Some("1"));
    // Neither who wrote nor what, unless configured.
    assert_eq!(field(&fields, "last-message-sender"), None);
    assert_eq!(field(&fields, "last-message-body"), None);
    // The client's publish-options (its secret) come back with the notification.
    let options = iq
        .get_child("pubsub", PUBSUB)
        .and_then(|p| p.get_child("publish-options", PUBSUB))
        .and_then(|o| o.get_child("x", DATA_FORMS))
        .expect("publish-options");
    assert!(options.children().any(|f| f.attr("var") == Some("secret")
        && f.get_child("value", DATA_FORMS)
            .map(|v| v.text())
            .as_deref()
            == Some("s3cret-node-1")));
    // And the message itself is waiting offline.
    let mut alice = Session::login(&server, "alice", "phone").await;
    alice.send("<presence/>").await;
    alice
        .expect(|el| {
            el.get_child("body", "jabber:client")
                .is_some_and(|b| b.text() == "wake up")
        })
        .await;
}

#[tokio::test]
async fn only_messages_worth_waking_for_are_pushed_and_only_when_nobody_is_online() {
    let (server, notifications) = start(|c| {
        c.push.include_sender = true;
        c.push.include_body = true;
    })
    .await;
    let mut alice = Session::online(&server, "alice", "phone").await;
    enable(&mut alice, "node-1").await;
    let mut bob = Session::online(&server, "bob", "pc").await;
    bob.send("<message to='alice@localhost' type='chat'><body>while online</body></message>")
        .await;
    alice
        .expect(|el| el.get_child("body", "jabber:client").is_some())
        .await;
    alice.send("</stream:stream>").await;
    let jid: jid::FullJid = "alice@localhost/phone".parse().unwrap();
    while server.server.ctx.router.is_bound(&jid) {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // A chat state alone does not wake a phone.
    bob.send("<message to='alice@localhost' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
        .await;
    bob.send("<message to='alice@localhost' type='chat'><body>now offline</body></message>")
        .await;
    let iq = notifications.next().await;
    let fields = summary(&iq);
    assert_eq!(field(&fields, "last-message-body"), Some("now offline"));
    assert_eq!(
        field(&fields, "last-message-sender"),
        Some("bob@localhost/pc")
    );
}

#[tokio::test]
async fn disable_stops_notifications() {
    let (server, notifications) = start(|c| c.push.include_body = true).await;
    let mut alice = Session::login(&server, "alice", "phone").await;
    enable(&mut alice, "old").await;
    enable(&mut alice, "new").await;
    let answer = alice
        .iq(&format!(
            "<iq type='set'><disable xmlns='urn:xmpp:push:0' jid='{APP_SERVER}' node='old'/></iq>"
        ))
        .await;
    assert_eq!(answer.attr("type"), Some("result"));
    alice.send("</stream:stream>").await;
    drop(alice);
    register_and_leave(&server, "new").await;
    let mut bob = Session::online(&server, "bob", "pc").await;
    bob.send("<message to='alice@localhost' type='chat'><body>one</body></message>")
        .await;
    let iq = notifications.next().await;
    assert_eq!(publish(&iq).and_then(|p| p.attr("node")), Some("new"));
    let regs = server
        .storage()
        .push
        .push_registrations(&account("alice"))
        .await
        .unwrap();
    assert_eq!(regs.len(), 1, "{regs:?}");

    // Disabling the whole service (no node) removes the rest.
    let mut alice = Session::login(&server, "alice", "phone").await;
    let answer = alice
        .iq(&format!(
            "<iq type='set'><disable xmlns='urn:xmpp:push:0' jid='{APP_SERVER}'/></iq>"
        ))
        .await;
    assert_eq!(answer.attr("type"), Some("result"));
    assert!(server
        .storage()
        .push
        .push_registrations(&account("alice"))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn an_app_server_that_refuses_gets_no_more_notifications() {
    let (server, notifications) = start(|_| {}).await;
    register_and_leave(&server, DEAD_NODE).await;
    let mut bob = Session::online(&server, "bob", "pc").await;
    bob.send("<message to='alice@localhost' type='chat'><body>x</body></message>")
        .await;
    let iq = notifications.next().await;
    assert_eq!(publish(&iq).and_then(|p| p.attr("node")), Some(DEAD_NODE));
    // The error answer disables the registration.
    for _ in 0..500 {
        let regs = server
            .storage()
            .push
            .push_registrations(&account("alice"))
            .await
            .unwrap();
        if regs.is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the refused registration was kept");
}

#[tokio::test]
async fn enable_requests_are_checked() {
    let (server, _notifications) = start(|c| c.push.max_registrations_per_user = 2).await;
    let mut alice = Session::login(&server, "alice", "phone").await;
    let mut bob = Session::login(&server, "bob", "pc").await;
    let answer = bob
        .iq(&format!(
            "<iq type='set' to='alice@localhost'><enable xmlns='urn:xmpp:push:0' jid='{APP_SERVER}' node='n'/></iq>"
        ))
        .await;
    assert_eq!(error_condition(&answer).as_deref(), Some("forbidden"));
    let answer = alice
        .iq(&format!(
            "<iq type='set'><enable xmlns='urn:xmpp:push:0' jid='{APP_SERVER}'/></iq>"
        ))
        .await;
    assert_eq!(error_condition(&answer).as_deref(), Some("bad-request"));
    let answer = alice
        .iq("<iq type='set'><enable xmlns='urn:xmpp:push:0' jid='@@' node='n'/></iq>")
        .await;
    assert_eq!(error_condition(&answer).as_deref(), Some("bad-request"));
    // Past the cap, the oldest registration goes.
    for node in ["a", "b", "c"] {
        enable(&mut alice, node).await;
    }
    let nodes: Vec<String> = server
        .storage()
        .push
        .push_registrations(&account("alice"))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.node)
        .collect();
    assert_eq!(nodes, ["b", "c"]);
    let info = alice
        .iq("<iq type='get' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    let query = info
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .expect("disco#info");
    assert!(query
        .children()
        .any(|f| f.attr("var") == Some("urn:xmpp:push:0")));
}

#[tokio::test]
async fn a_message_for_a_session_detached_by_stream_management_is_pushed() {
    let (server, notifications) = start(|c| c.push.include_body = true).await;
    let mut alice = Session::login(&server, "alice", "phone").await;
    enable(&mut alice, "node-1").await;
    alice
        .send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        .await;
    alice.expect(|el| el.is("enabled", "urn:xmpp:sm:3")).await;
    let mut bob = Session::online(&server, "bob", "pc").await;
    // Online and attached: no notification (shown by the one below being the first).
    bob.send("<message to='alice@localhost/phone' type='chat'><body>attached</body></message>")
        .await;
    alice
        .expect(|el| el.get_child("body", "jabber:client").is_some())
        .await;
    // The connection dies; the session waits to be resumed.
    drop(alice);
    let jid: jid::FullJid = "alice@localhost/phone".parse().unwrap();
    for _ in 0..500 {
        if server.server.ctx.router.is_detached(&jid) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(server.server.ctx.router.is_detached(&jid));
    bob.send("<message to='alice@localhost/phone' type='chat'><body>detached</body></message>")
        .await;
    let iq = notifications.next().await;
    assert_eq!(field(&summary(&iq), "last-message-body"), Some("detached"));
}

#[tokio::test]
async fn a_call_proposal_wakes_the_phone_with_a_high_priority_notification() {
    let (server, notifications) = start(|c| c.push.include_sender = true).await;
    register_and_leave(&server, "node-call").await;
    let mut bob = Session::online(&server, "bob", "pc").await;
    // XEP-0353 §3.1: a call proposal has no body, but it is what must make the phone ring.
    bob.send(
        "<message to='alice@localhost' type='chat'>\
         <propose xmlns='urn:xmpp:jingle-message:0' id='call-1'>\
         <description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose>\
         <store xmlns='urn:xmpp:hints'/></message>",
    )
    .await;
    let iq = notifications.next().await;
    assert_eq!(publish(&iq).and_then(|p| p.attr("node")), Some("node-call"));
    let fields = summary(&iq);
    assert_eq!(
        field(&fields, "last-message-sender"),
        Some("bob@localhost/pc")
    );
    let priority = publish(&iq)
        .and_then(|p| p.get_child("item", PUBSUB))
        .and_then(|i| i.get_child("notification", "urn:xmpp:push:0"))
        .and_then(|n| n.get_child("priority", "tigase:push:priority:0"))
        .map(|p| p.text());
    assert_eq!(priority.as_deref(), Some("high"), "{iq:?}");
}
