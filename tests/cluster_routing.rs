//! RFC 6121 §8 delivery with the resources spread over a cluster of three nodes (in this
//! process, sharing PostgreSQL and Redis, see `common::cluster`): the same results as on one
//! node (tests/routing.rs, tests/carbons.rs, tests/blocking.rs), over real sockets.
//!
//! Skipped without `CORVID_TEST_POSTGRES`; Redis is `CORVID_TEST_REDIS` or 127.0.0.1:6379.

mod common;

use common::cluster::{expect, TestCluster};
use common::xmpp::{error_condition, Session};
use corvid::router::Location;
use minidom::Element;

const ALICE: &str = "alice@localhost";
const BOB: &str = "bob@localhost";
const CARBONS: &str = "urn:xmpp:carbons:2";
const FORWARD: &str = "urn:xmpp:forward:0";

fn body(el: &Element) -> Option<String> {
    el.get_child("body", "jabber:client").map(|b| b.text())
}

fn has_body(el: &Element) -> bool {
    el.name() == "message" && body(el).is_some()
}

fn body_is(text: &str) -> impl Fn(&Element) -> bool + '_ {
    move |el| el.name() == "message" && body(el).as_deref() == Some(text)
}

fn is_own_presence(jid: &str) -> impl Fn(&Element) -> bool + '_ {
    move |el| el.name() == "presence" && el.attr("from") == Some(jid) && el.attr("type").is_none()
}

/// Sends presence with `priority` and waits for it to come back.
async fn set_priority(session: &mut Session, priority: i8) {
    session
        .send(&format!(
            "<presence><priority>{priority}</priority></presence>"
        ))
        .await;
    let jid = session.jid.clone();
    expect(session, is_own_presence(&jid)).await;
}

async fn chat(from: &mut Session, to: &str, text: &str) {
    from.send(&format!(
        "<message to='{to}' type='chat'><body>{text}</body></message>"
    ))
    .await;
}

/// Sends `from` an IQ ping to itself and waits for the answer: everything `from` sent before
/// has been routed by its node (a sync point on the sending side only).
async fn sync(from: &mut Session) {
    let answer = from
        .iq("<iq type='get' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(answer.attr("type"), Some("result"));
}

#[tokio::test]
async fn chat_to_a_full_jid_on_another_node_both_ways_and_in_order() {
    let Some(cluster) = TestCluster::start(3).await else {
        return;
    };
    cluster.add_users(&["alice", "bob"]).await;
    let mut alice = cluster.online(1, "alice", "a").await;
    let mut bob = cluster.online(2, "bob", "b").await;
    cluster.until_visible(1, &bob.jid).await;
    cluster.until_visible(2, &alice.jid).await;
    assert!(matches!(
        cluster.locate(1, &bob.jid),
        Location::OtherNode(_)
    ));
    assert_eq!(cluster.locate(2, &bob.jid), Location::Local);

    alice
        .send("<message to='bob@localhost/b' type='chat' id='x1'><body>hi bob</body></message>")
        .await;
    let got = expect(&mut bob, has_body).await;
    assert_eq!(
        got.attr("from"),
        Some("alice@localhost/a"),
        "server stamps from"
    );
    assert_eq!(got.attr("to"), Some("bob@localhost/b"));
    assert_eq!(got.attr("id"), Some("x1"));
    assert_eq!(got.attr("type"), Some("chat"));
    assert_eq!(body(&got).as_deref(), Some("hi bob"));

    bob.send("<message to='alice@localhost/a' type='chat' id='x2'><body>hi alice</body></message>")
        .await;
    let got = expect(&mut alice, has_body).await;
    assert_eq!(got.attr("from"), Some("bob@localhost/b"));
    assert_eq!(body(&got).as_deref(), Some("hi alice"));

    // 200 messages from one sender arrive in the order sent (in a few large writes, so that
    // the node routes many at once).
    for batch in 0..4 {
        let mut xml = String::new();
        for k in batch * 50..(batch + 1) * 50 {
            xml.push_str(&format!(
                "<message to='bob@localhost/b' type='chat' id='s{k}'><body>seq {k}</body></message>"
            ));
        }
        alice.send(&xml).await;
    }
    for k in 0..200 {
        let got = expect(&mut bob, has_body).await;
        assert_eq!(body(&got), Some(format!("seq {k}")), "message {k}");
        assert_eq!(got.attr("from"), Some("alice@localhost/a"));
    }
    // and the other way
    let mut xml = String::new();
    for k in 0..200 {
        xml.push_str(&format!(
            "<message to='alice@localhost/a' type='chat'><body>back {k}</body></message>"
        ));
    }
    bob.send(&xml).await;
    for k in 0..200 {
        let got = expect(&mut alice, has_body).await;
        assert_eq!(body(&got), Some(format!("back {k}")), "message {k}");
    }
    cluster.finish().await;
}

/// corvid's choice under RFC 6121 §8.5.2.1.1 (as tests/routing.rs asserts on one node): a
/// message to the bare JID goes to every available resource with a non-negative priority,
/// not only the highest; a negative priority takes only messages to its full JID.
#[tokio::test]
async fn bare_jid_reaches_every_non_negative_resource_on_every_node() {
    let Some(cluster) = TestCluster::start(3).await else {
        return;
    };
    cluster.add_users(&["alice", "bob"]).await;
    let mut phone = cluster.login(1, "bob", "phone").await;
    let mut laptop = cluster.login(2, "bob", "laptop").await;
    let mut bot = cluster.login(3, "bob", "bot").await;
    set_priority(&mut phone, 5).await;
    set_priority(&mut laptop, 1).await;
    set_priority(&mut bot, -1).await;
    let mut alice = cluster.online(2, "alice", "a").await;
    cluster.until_available_everywhere(&phone.jid, 5).await;
    cluster.until_available_everywhere(&laptop.jid, 1).await;
    cluster.until_available_everywhere(&bot.jid, -1).await;

    alice
        .send("<message to='bob@localhost' type='chat' id='c1'><body>to bare</body></message>")
        .await;
    for session in [&mut phone, &mut laptop] {
        let got = expect(session, has_body).await;
        assert_eq!(body(&got).as_deref(), Some("to bare"), "{}", session.jid);
        assert_eq!(got.attr("from"), Some("alice@localhost/a"));
    }
    // The negative-priority resource gets only messages to its full JID: the first message it
    // sees is the one sent to it after the bare one.
    alice
        .send("<message to='bob@localhost/bot' type='chat' id='c2'><body>to bot</body></message>")
        .await;
    let got = expect(&mut bot, has_body).await;
    assert_eq!(body(&got).as_deref(), Some("to bot"));
    assert_eq!(cluster.offline_count("bob").await, 0);
    cluster.finish().await;
}

#[tokio::test]
async fn bare_jid_with_equal_priorities_reaches_each_resource_once() {
    let Some(cluster) = TestCluster::start(3).await else {
        return;
    };
    cluster.add_users(&["alice", "bob"]).await;
    let mut bobs = Vec::new();
    for i in 1..=3 {
        let mut session = cluster.login(i, "bob", &format!("r{i}")).await;
        set_priority(&mut session, 0).await;
        bobs.push(session);
    }
    for session in &bobs {
        cluster.until_available_everywhere(&session.jid, 0).await;
    }
    let mut alice = cluster.online(1, "alice", "a").await;
    chat(&mut alice, BOB, "to all").await;
    let marker = Session::marker();
    alice.send_marker(BOB, &marker).await;
    for session in &mut bobs {
        let seen = session.until_marker(&marker).await;
        let copies = seen.iter().filter(|el| body_is("to all")(el)).count();
        assert_eq!(copies, 1, "{}: {seen:?}", session.jid);
    }
    cluster.finish().await;
}

#[tokio::test]
async fn no_available_resource_stores_offline_and_any_node_delivers_it() {
    let Some(cluster) = TestCluster::start(3).await else {
        return;
    };
    cluster.add_users(&["alice", "bob"]).await;
    let mut alice = cluster.online(1, "alice", "a").await;

    // Nobody there.
    chat(&mut alice, BOB, "one").await;
    cluster.until_offline("bob", 1).await;

    // Only a negative priority on node 2: still stored (RFC 6121 §8.5.2.1.1).
    let mut hidden = cluster.login(2, "bob", "hidden").await;
    set_priority(&mut hidden, -1).await;
    cluster.until_available_everywhere(&hidden.jid, -1).await;
    chat(&mut alice, BOB, "two").await;
    cluster.until_offline("bob", 2).await;

    // Bob comes online on node 3: both arrive there, in order, with delay stamps.
    let mut bob = cluster.login(3, "bob", "r").await;
    bob.send("<presence/>").await;
    for text in ["one", "two"] {
        let got = expect(&mut bob, has_body).await;
        assert_eq!(body(&got).as_deref(), Some(text));
        assert_eq!(got.attr("from"), Some("alice@localhost/a"));
        let delay = got
            .get_child("delay", "urn:xmpp:delay")
            .expect("XEP-0203 delay");
        assert_eq!(delay.attr("from"), Some("localhost"));
    }
    cluster.until_offline("bob", 0).await;
    // The hidden resource got neither.
    let seen = hidden.drain().await;
    assert!(!seen.iter().any(has_body), "{seen:?}");
    cluster.finish().await;
}

/// RFC 6121 §8.5.3.2 as tests/routing.rs asserts it on one node, with the account's
/// resources elsewhere: a chat message to a resource that is not there goes to the bare JID;
/// an IQ or a groupchat message is answered with `<service-unavailable/>`; a headline
/// vanishes. Also for a resource that was on another node and has gone.
#[tokio::test]
async fn full_jid_of_an_absent_resource_across_nodes() {
    let Some(cluster) = TestCluster::start(3).await else {
        return;
    };
    cluster.add_users(&["alice", "bob"]).await;
    let mut alice = cluster.online(1, "alice", "a").await;

    // Bob nowhere: a chat to a full JID is stored like one to the bare JID.
    alice
        .send("<message to='bob@localhost/gone' type='chat' id='x1'><body>later</body></message>")
        .await;
    cluster.until_offline("bob", 1).await;

    let mut bob = cluster.login(2, "bob", "r").await;
    bob.send("<presence/>").await;
    let got = expect(&mut bob, body_is("later")).await;
    assert_eq!(got.attr("from"), Some("alice@localhost/a"));
    cluster.until_available_everywhere(&bob.jid, 0).await;

    // Bob on node 2: a chat to another resource of his reaches the one he has.
    alice
        .send("<message to='bob@localhost/gone' type='chat' id='x2'><body>redirected</body></message>")
        .await;
    let got = expect(&mut bob, body_is("redirected")).await;
    assert_eq!(got.attr("from"), Some("alice@localhost/a"));

    let error = alice
        .iq("<iq to='bob@localhost/nowhere' type='get'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(error.attr("type"), Some("error"));
    assert_eq!(
        error_condition(&error).as_deref(),
        Some("service-unavailable")
    );

    alice
        .send("<message to='bob@localhost/gone' type='groupchat' id='gc1'><body>x</body></message>")
        .await;
    let error = expect(&mut alice, |el| el.attr("id") == Some("gc1")).await;
    assert_eq!(error.attr("type"), Some("error"));
    assert_eq!(
        error_condition(&error).as_deref(),
        Some("service-unavailable")
    );
    alice
        .send("<message to='bob@localhost/gone' type='headline'><body>vanishes</body></message>")
        .await;
    let marker = Session::marker();
    alice.send_marker(&bob.jid.clone(), &marker).await;
    let seen = bob.until_marker(&marker).await;
    assert!(!seen.iter().any(body_is("vanishes")), "{seen:?}");

    // A resource on node 3 that logs out: once every node has seen it go, an IQ to it is
    // refused and a chat to it reaches the resource on node 2.
    let mut left = cluster.online(3, "bob", "left").await;
    cluster.until_visible(1, &left.jid).await;
    let left_jid = left.jid.clone();
    left.send("</stream:stream>").await;
    assert!(left.raw.closed().await);
    cluster.until_gone_everywhere(&left_jid).await;
    let error = alice
        .iq(&format!(
            "<iq to='{left_jid}' type='get'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await;
    assert_eq!(
        error_condition(&error).as_deref(),
        Some("service-unavailable"),
        "{error:?}"
    );
    chat(&mut alice, &left_jid, "to the one that left").await;
    let got = expect(&mut bob, has_body).await;
    assert_eq!(body(&got).as_deref(), Some("to the one that left"));

    // A user that does not exist: refused, as on one node.
    alice
        .send("<message to='ghost@localhost' type='chat' id='g1'><body>boo</body></message>")
        .await;
    let error = expect(&mut alice, |el| el.attr("id") == Some("g1")).await;
    assert_eq!(
        error_condition(&error).as_deref(),
        Some("service-unavailable")
    );
    assert_eq!(cluster.offline_count("bob").await, 0);
    cluster.finish().await;
}

#[tokio::test]
async fn iq_to_a_full_jid_on_another_node_and_its_answer() {
    let Some(cluster) = TestCluster::start(3).await else {
        return;
    };
    cluster.add_users(&["alice", "bob"]).await;
    let mut alice = cluster.online(1, "alice", "a").await;
    let mut bob = cluster.online(3, "bob", "b").await;
    cluster.until_visible(1, &bob.jid).await;
    cluster.until_visible(3, &alice.jid).await;

    // XEP-0199 ping to the client, answered by it.
    alice
        .send("<iq to='bob@localhost/b' type='get' id='ping1'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let ping = expect(&mut bob, |el| {
        el.name() == "iq" && el.attr("id") == Some("ping1")
    })
    .await;
    assert_eq!(ping.attr("from"), Some("alice@localhost/a"));
    assert_eq!(ping.attr("type"), Some("get"));
    assert!(ping.has_child("ping", "urn:xmpp:ping"));
    bob.send("<iq to='alice@localhost/a' type='result' id='ping1'/>")
        .await;
    let pong = expect(&mut alice, |el| {
        el.name() == "iq" && el.attr("id") == Some("ping1")
    })
    .await;
    assert_eq!(pong.attr("type"), Some("result"));
    assert_eq!(pong.attr("from"), Some("bob@localhost/b"));

    // disco#info answered with a payload, from node 3 to node 1.
    alice
        .send("<iq to='bob@localhost/b' type='get' id='info1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    let asked = expect(&mut bob, |el| {
        el.name() == "iq" && el.attr("id") == Some("info1")
    })
    .await;
    assert_eq!(asked.attr("from"), Some("alice@localhost/a"));
    bob.send(
        "<iq to='alice@localhost/a' type='result' id='info1'>\
         <query xmlns='http://jabber.org/protocol/disco#info'>\
         <identity category='client' type='pc' name='test'/>\
         <feature var='urn:xmpp:ping'/></query></iq>",
    )
    .await;
    let info = expect(&mut alice, |el| {
        el.name() == "iq" && el.attr("id") == Some("info1")
    })
    .await;
    assert_eq!(info.attr("type"), Some("result"));
    let identity = info
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .and_then(|q| q.get_child("identity", "http://jabber.org/protocol/disco#info"))
        .expect("identity");
    assert_eq!(identity.attr("name"), Some("test"));

    // An error answer travels back the same way.
    bob.send(
        "<iq to='alice@localhost/a' type='get' id='v1'><query xmlns='jabber:iq:version'/></iq>",
    )
    .await;
    let asked = expect(&mut alice, |el| {
        el.name() == "iq" && el.attr("id") == Some("v1")
    })
    .await;
    assert_eq!(asked.attr("from"), Some("bob@localhost/b"));
    alice
        .send("<iq to='bob@localhost/b' type='error' id='v1'><query xmlns='jabber:iq:version'/>\
               <error type='cancel'><feature-not-implemented xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")
        .await;
    let error = expect(&mut bob, |el| {
        el.name() == "iq" && el.attr("id") == Some("v1")
    })
    .await;
    assert_eq!(error.attr("type"), Some("error"));
    assert_eq!(
        error_condition(&error).as_deref(),
        Some("feature-not-implemented")
    );
    cluster.finish().await;
}

#[tokio::test]
async fn binding_a_full_jid_held_by_another_node_replaces_it_with_conflict() {
    let Some(cluster) = TestCluster::start(3).await else {
        return;
    };
    cluster.add_users(&["alice", "bob"]).await;
    let (mut first, jid) = cluster.raw(1, "bob", "same").await;
    assert_eq!(jid, "bob@localhost/same");
    cluster.until_visible_everywhere(&jid).await;

    let (mut second, jid) = cluster.raw(2, "bob", "same").await;
    assert_eq!(jid, "bob@localhost/same");
    assert_eq!(first.stream_error().await, "conflict");
    assert!(first.closed().await);
    second
        .write("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(second.element().await.attr("type"), Some("result"));

    // Every node now sends bob/same to node 2.
    cluster
        .until("bob/same on node 2 everywhere", |c| {
            c.locate(2, &jid) == Location::Local
                && matches!(c.locate(1, &jid), Location::OtherNode(_))
                && matches!(c.locate(3, &jid), Location::OtherNode(_))
        })
        .await;
    let mut alice = cluster.online(3, "alice", "a").await;
    chat(&mut alice, &jid, "to the new one").await;
    let mut second = Session::from_raw(second, jid.clone());
    let got = expect(&mut second, has_body).await;
    assert_eq!(body(&got).as_deref(), Some("to the new one"));
    cluster.finish().await;
}

async fn enable_carbons(cluster: &TestCluster, session: &mut Session) {
    let answer = session
        .iq("<iq type='set'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
        .await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    cluster
        .until_flag_everywhere(&session.jid, corvid::modules::carbons::ENABLED)
        .await;
}

/// The message inside a `<sent/>` or `<received/>` carbon from `account`'s bare JID.
fn carbon_of<'a>(el: &'a Element, direction: &str, account: &str) -> Option<&'a Element> {
    if el.name() != "message" || el.attr("from") != Some(account) {
        return None;
    }
    el.get_child(direction, CARBONS)?
        .get_child("forwarded", FORWARD)?
        .get_child("message", "jabber:client")
}

fn is_carbon(
    direction: &'static str,
    account: &'static str,
    text: &'static str,
) -> impl Fn(&Element) -> bool {
    move |el| {
        carbon_of(el, direction, account).is_some_and(|inner| body(inner).as_deref() == Some(text))
    }
}

/// XEP-0280 with Alice on nodes 1 and 2 and Bob on nodes 3 and 1: every enabled resource
/// gets its copies wherever it is, and a message to the bare JID reaches each resource once
/// (directly, with no copy), as tests/carbons.rs asserts on one node.
#[tokio::test]
async fn carbons_reach_enabled_resources_on_other_nodes() {
    let Some(cluster) = TestCluster::start(3).await else {
        return;
    };
    cluster.add_users(&["alice", "bob"]).await;
    let mut phone = cluster.online(1, "alice", "phone").await;
    let mut laptop = cluster.online(2, "alice", "laptop").await;
    let mut pc = cluster.online(3, "bob", "pc").await;
    let mut tab = cluster.online(1, "bob", "tab").await;
    for session in [&mut phone, &mut laptop, &mut pc, &mut tab] {
        enable_carbons(&cluster, session).await;
        cluster.until_available_everywhere(&session.jid, 0).await;
    }
    // A resource of Alice on node 3 that never enabled carbons.
    let mut tablet = cluster.online(3, "alice", "tablet").await;
    cluster.until_available_everywhere(&tablet.jid, 0).await;

    // Sent from node 1 to a contact's full JID on node 3: the sender's sibling on node 2 gets
    // the sent carbon, the contact's sibling on node 1 the received one.
    phone
        .send("<message to='bob@localhost/pc' type='chat' id='m1'><body>from the phone</body></message>")
        .await;
    let got = expect(&mut pc, body_is("from the phone")).await;
    assert_eq!(got.attr("from"), Some("alice@localhost/phone"));
    let copy = expect(&mut laptop, is_carbon("sent", ALICE, "from the phone")).await;
    assert_eq!(copy.attr("to"), Some("alice@localhost/laptop"));
    let inner = carbon_of(&copy, "sent", ALICE).expect("sent carbon");
    assert_eq!(inner.attr("from"), Some("alice@localhost/phone"));
    assert_eq!(inner.attr("to"), Some("bob@localhost/pc"));
    let copy = expect(&mut tab, is_carbon("received", BOB, "from the phone")).await;
    assert_eq!(copy.attr("to"), Some("bob@localhost/tab"));
    let inner = carbon_of(&copy, "received", BOB).expect("received carbon");
    assert_eq!(inner.attr("from"), Some("alice@localhost/phone"));
    assert_eq!(inner.attr("to"), Some("bob@localhost/pc"));

    // To the contact's bare JID: both of Bob's resources get the message itself, no copy;
    // Alice's laptop gets the sent carbon.
    chat(&mut phone, BOB, "to bob's bare jid").await;
    let copy = expect(&mut laptop, is_carbon("sent", ALICE, "to bob's bare jid")).await;
    let inner = carbon_of(&copy, "sent", ALICE).expect("sent carbon");
    assert_eq!(inner.attr("to"), Some(BOB));
    let marker = Session::marker();
    phone.send_marker(BOB, &marker).await;
    for session in [&mut pc, &mut tab] {
        let seen = session.until_marker(&marker).await;
        let direct = seen
            .iter()
            .filter(|el| body_is("to bob's bare jid")(el))
            .count();
        let copies = seen
            .iter()
            .filter(|el| carbon_of(el, "received", BOB).is_some())
            .count();
        assert_eq!((direct, copies), (1, 0), "{}: {seen:?}", session.jid);
    }

    // The reply from node 3 to the laptop on node 2: the phone on node 1 gets the received
    // carbon, Bob's tab on node 1 the sent one.
    pc.send("<message to='alice@localhost/laptop' type='chat'><body>reply</body></message>")
        .await;
    let got = expect(&mut laptop, body_is("reply")).await;
    assert_eq!(got.attr("from"), Some("bob@localhost/pc"));
    let copy = expect(&mut phone, is_carbon("received", ALICE, "reply")).await;
    assert_eq!(copy.attr("to"), Some("alice@localhost/phone"));
    expect(&mut tab, is_carbon("sent", BOB, "reply")).await;

    // The sender itself gets no copy of what it sent.
    let seen = phone.drain().await;
    assert!(
        seen.iter().all(|el| carbon_of(el, "sent", ALICE).is_none()),
        "{seen:?}"
    );
    // The tablet without carbons got no copy of anything.
    let marker = Session::marker();
    pc.send_marker(&tablet.jid.clone(), &marker).await;
    let seen = tablet.until_marker(&marker).await;
    assert!(
        seen.iter()
            .all(|el| el.name() != "message" || el.attr("from") != Some(ALICE)),
        "{seen:?}"
    );
    cluster.finish().await;
}

/// XEP-0191 across nodes: the blocking user on node 1, the blocked contact on node 2. The
/// contact wrote before the block, so node 2 has already looked at the blocking user's
/// list once: a block made on node 1 must hold on node 2 at once.
#[tokio::test]
async fn a_block_made_on_one_node_holds_on_the_others() {
    let Some(cluster) = TestCluster::start(3).await else {
        return;
    };
    cluster.add_users(&["alice", "bob"]).await;
    let mut alice = cluster.online(1, "alice", "a").await;
    let mut bob = cluster.online(2, "bob", "b").await;
    cluster.until_available_everywhere(&alice.jid, 0).await;
    cluster.until_available_everywhere(&bob.jid, 0).await;

    chat(&mut bob, ALICE, "before").await;
    expect(&mut alice, body_is("before")).await;
    chat(&mut alice, BOB, "before too").await;
    expect(&mut bob, body_is("before too")).await;

    let answer = alice
        .iq("<iq type='set'><block xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></block></iq>")
        .await;
    assert_eq!(answer.attr("type"), Some("result"));

    // Inbound: the blocked contact is told the user is not there.
    bob.send("<message to='alice@localhost/a' type='chat' id='m1'><body>hello?</body></message>")
        .await;
    let error = expect(&mut bob, |el| el.attr("id") == Some("m1")).await;
    assert_eq!(error.attr("type"), Some("error"), "{error:?}");
    assert_eq!(
        error_condition(&error).as_deref(),
        Some("service-unavailable")
    );
    bob.send(
        "<message to='alice@localhost' type='chat' id='m2'><body>hello bare?</body></message>",
    )
    .await;
    let error = expect(&mut bob, |el| el.attr("id") == Some("m2")).await;
    assert_eq!(error.attr("type"), Some("error"), "{error:?}");
    let error = bob
        .iq("<iq to='alice@localhost/a' type='get'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(
        error_condition(&error).as_deref(),
        Some("service-unavailable")
    );

    // Outbound: the user is told the contact is blocked.
    alice
        .send("<message to='bob@localhost/b' type='chat' id='m3'><body>psst</body></message>")
        .await;
    let error = expect(&mut alice, |el| el.attr("id") == Some("m3")).await;
    assert_eq!(error_condition(&error).as_deref(), Some("not-acceptable"));
    assert!(error
        .get_child("error", "jabber:client")
        .and_then(|e| e.get_child("blocked", "urn:xmpp:blocking:errors"))
        .is_some());

    // Unblocking on node 1 lets bob through on node 2 again; nothing of the blocked time
    // arrives.
    let answer = alice
        .iq("<iq type='set'><unblock xmlns='urn:xmpp:blocking'/></iq>")
        .await;
    assert_eq!(answer.attr("type"), Some("result"));
    chat(&mut bob, ALICE, "after").await;
    let got = expect(&mut alice, has_body).await;
    assert_eq!(body(&got).as_deref(), Some("after"));
    chat(&mut alice, BOB, "back").await;
    let got = expect(&mut bob, has_body).await;
    assert_eq!(body(&got).as_deref(), Some("back"));
    sync(&mut alice).await;
    assert_eq!(cluster.offline_count("alice").await, 0);
    cluster.finish().await;
}
