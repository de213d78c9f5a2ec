//! XEP-0280 Message Carbons over real sockets: two resources of one account see each other's
//! sent and received messages; what is not eligible is not copied.

mod common;

use common::xmpp::{error_condition, Session};
use common::TestServer;
use minidom::Element;

const CARBONS: &str = "urn:xmpp:carbons:2";
const FORWARD: &str = "urn:xmpp:forward:0";

async fn enable_carbons(session: &mut Session) {
    let answer = session
        .iq("<iq type='set'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
        .await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
}

/// The message inside a `<sent/>` or `<received/>` carbon, checking the wrapper as XEP-0280
/// §7 asks clients to: from the account's own bare JID.
fn carbon_of<'a>(el: &'a Element, direction: &str, account: &str) -> Option<&'a Element> {
    if el.name() != "message" || el.attr("from") != Some(account) {
        return None;
    }
    el.get_child(direction, CARBONS)?
        .get_child("forwarded", FORWARD)?
        .get_child("message", "jabber:client")
}

fn body(el: &Element) -> Option<String> {
    el.get_child("body", "jabber:client").map(|b| b.text())
}

async fn three_sessions(server: &TestServer) -> (Session, Session, Session) {
    server.add_user("alice").await;
    server.add_user("bob").await;
    let mut phone = Session::online(server, "alice", "phone").await;
    let mut laptop = Session::online(server, "alice", "laptop").await;
    let bob = Session::online(server, "bob", "pc").await;
    enable_carbons(&mut phone).await;
    enable_carbons(&mut laptop).await;
    phone.drain().await;
    laptop.drain().await;
    (phone, laptop, bob)
}

#[tokio::test]
async fn resources_see_each_others_sent_and_received_messages() {
    let server = TestServer::start().await;
    let (mut phone, mut laptop, mut bob) = three_sessions(&server).await;

    bob.send("<message to='alice@localhost/phone' type='chat' id='m1'><body>to the phone</body></message>")
        .await;
    let direct = phone
        .expect(|el| body(el).as_deref() == Some("to the phone"))
        .await;
    assert_eq!(direct.attr("from"), Some("bob@localhost/pc"));
    let copy = laptop
        .expect(|el| carbon_of(el, "received", "alice@localhost").is_some())
        .await;
    let inner = carbon_of(&copy, "received", "alice@localhost").unwrap();
    assert_eq!(body(inner).as_deref(), Some("to the phone"));
    assert_eq!(inner.attr("from"), Some("bob@localhost/pc"));
    assert_eq!(inner.attr("to"), Some("alice@localhost/phone"));
    assert_eq!(copy.attr("to"), Some("alice@localhost/laptop"));
    assert_eq!(copy.attr("type"), Some("chat"));

    phone
        .send(
            "<message to='bob@localhost' type='chat' id='m2'><body>from the phone</body></message>",
        )
        .await;
    let got = bob
        .expect(|el| body(el).as_deref() == Some("from the phone"))
        .await;
    assert_eq!(got.attr("from"), Some("alice@localhost/phone"));
    let copy = laptop
        .expect(|el| carbon_of(el, "sent", "alice@localhost").is_some())
        .await;
    let inner = carbon_of(&copy, "sent", "alice@localhost").unwrap();
    assert_eq!(body(inner).as_deref(), Some("from the phone"));
    assert_eq!(inner.attr("from"), Some("alice@localhost/phone"));
    assert_eq!(inner.attr("to"), Some("bob@localhost"));

    // The sender itself gets no copy of what it sent.
    let before_marker = phone.drain().await;
    assert!(
        before_marker
            .iter()
            .all(|el| carbon_of(el, "sent", "alice@localhost").is_none()),
        "{before_marker:?}"
    );
}

#[tokio::test]
async fn a_message_to_the_bare_jid_is_not_copied_to_resources_that_got_it() {
    let server = TestServer::start().await;
    let (mut phone, mut laptop, mut bob) = three_sessions(&server).await;
    bob.send("<message to='alice@localhost' type='chat'><body>to both</body></message>")
        .await;
    let marker = Session::marker();
    bob.send_marker("alice@localhost", &marker).await;
    for session in [&mut phone, &mut laptop] {
        let seen = session.until_marker(&marker).await;
        let direct = seen
            .iter()
            .filter(|el| body(el).as_deref() == Some("to both"))
            .count();
        let copies = seen
            .iter()
            .filter(|el| carbon_of(el, "received", "alice@localhost").is_some())
            .count();
        assert_eq!((direct, copies), (1, 0), "{seen:?}");
    }
}

#[tokio::test]
async fn a_session_without_carbons_gets_no_copies_and_disable_stops_them() {
    let server = TestServer::start().await;
    let (mut phone, mut laptop, mut bob) = three_sessions(&server).await;
    let mut tablet = Session::online(&server, "alice", "tablet").await;

    let answer = laptop
        .iq("<iq type='set'><disable xmlns='urn:xmpp:carbons:2'/></iq>")
        .await;
    assert_eq!(answer.attr("type"), Some("result"));

    bob.send("<message to='alice@localhost/phone' type='chat'><body>hi phone</body></message>")
        .await;
    phone
        .expect(|el| body(el).as_deref() == Some("hi phone"))
        .await;
    let marker = Session::marker();
    bob.send_marker("alice@localhost/phone", &marker).await;
    // The marker goes to the phone only; the other two see whatever came before it via
    // a marker of their own from bob, sent after.
    for session in [&mut laptop, &mut tablet] {
        let own = Session::marker();
        let jid = session.jid.clone();
        bob.send_marker(&jid, &own).await;
        let seen = session.until_marker(&own).await;
        assert!(
            seen.iter()
                .all(|el| carbon_of(el, "received", "alice@localhost").is_none()),
            "{seen:?}"
        );
    }
}

#[tokio::test]
async fn private_no_copy_and_carbons_of_carbons_are_not_copied() {
    let server = TestServer::start().await;
    let (mut phone, mut laptop, mut bob) = three_sessions(&server).await;
    let ineligible = [
        "<message to='alice@localhost/phone' type='chat'><body>p</body><private xmlns='urn:xmpp:carbons:2'/></message>",
        "<message to='alice@localhost/phone' type='chat'><body>n</body><no-copy xmlns='urn:xmpp:hints'/></message>",
        // A normal message with nothing a chat client shows.
        "<message to='alice@localhost/phone' type='normal'><x xmlns='jabber:x:oob'><url>http://x</url></x></message>",
        // A private message from a MUC occupant.
        "<message to='alice@localhost/phone' type='chat'><body>pm</body><x xmlns='http://jabber.org/protocol/muc#user'/></message>",
    ];
    for xml in ineligible {
        bob.send(xml).await;
    }
    phone
        .send("<message to='bob@localhost' type='chat'><body>secret</body><private xmlns='urn:xmpp:carbons:2'/></message>")
        .await;
    let marker = Session::marker();
    bob.send_marker("alice@localhost/laptop", &marker).await;
    let seen = laptop.until_marker(&marker).await;
    assert!(
        seen.iter()
            .all(|el| el.get_child("received", CARBONS).is_none()
                && el.get_child("sent", CARBONS).is_none()),
        "{seen:?}"
    );
    // The phone did get every one of them.
    let marker = Session::marker();
    bob.send_marker("alice@localhost/phone", &marker).await;
    let seen = phone.until_marker(&marker).await;
    assert_eq!(
        seen.iter()
            .filter(|el| el.attr("from") == Some("bob@localhost/pc"))
            .count(),
        4,
        "{seen:?}"
    );
    // A forged carbon: the wrapper never leaves bob's stream (tests/router_harness.rs), so
    // the phone gets a plain chat message and the laptop's copy wraps no carbon.
    bob.send("<message to='alice@localhost/phone' type='chat'><received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' type='chat'><body>f</body></message></forwarded></received></message>").await;
    let got = phone.expect(|el| el.name() == "message").await;
    assert!(got.get_child("received", CARBONS).is_none(), "{got:?}");
    let marker = Session::marker();
    bob.send_marker("alice@localhost/laptop", &marker).await;
    let seen = laptop.until_marker(&marker).await;
    let copied_carbon = |el: &Element| {
        el.get_child("received", CARBONS)
            .and_then(|c| c.get_child("forwarded", FORWARD))
            .and_then(|f| f.get_child("message", "jabber:client"))
            .is_some_and(|m| m.has_child("received", CARBONS))
    };
    assert!(!seen.iter().any(copied_carbon), "{seen:?}");
}

#[tokio::test]
async fn only_the_account_itself_switches_its_carbons() {
    let server = TestServer::start().await;
    let (_phone, _laptop, mut bob) = three_sessions(&server).await;
    let answer = bob
        .iq("<iq type='set' to='alice@localhost'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
        .await;
    assert_eq!(answer.attr("type"), Some("error"));
    assert_eq!(error_condition(&answer).as_deref(), Some("forbidden"));
}

#[tokio::test]
async fn the_server_advertises_carbons() {
    let server = TestServer::start().await;
    server.add_user("alice").await;
    let mut alice = Session::login(&server, "alice", "r").await;
    let info = alice
        .iq("<iq type='get' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    let query = info
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .expect("disco#info");
    assert!(query
        .children()
        .any(|f| f.name() == "feature" && f.attr("var") == Some(CARBONS)));
}
