//! RFC 6121 §3–4 with the users on different nodes of a three-node cluster (see
//! `common::cluster`): presence to contacts and own resources, probes answered for a
//! resource that logs in on a third node, subscription requests and approvals, directed
//! presence and unavailable on logout, as tests/presence.rs asserts on one node.
//!
//! Skipped without `CORVID_TEST_POSTGRES`; Redis is `CORVID_TEST_REDIS` or 127.0.0.1:6379.

mod common;

use common::account;
use common::cluster::{expect, expect_all, TestCluster};
use common::xmpp::{is_presence, is_roster_push, pushed_item, Session};
use corvid::storage::Subscription;
use minidom::Element;

const ALICE: &str = "alice@localhost";
const BOB: &str = "bob@localhost";

fn available_from(from: &str) -> impl Fn(&Element) -> bool + '_ {
    move |el| is_presence(el, None, from)
}

fn unavailable_from(from: &str) -> impl Fn(&Element) -> bool + '_ {
    move |el| is_presence(el, Some("unavailable"), from)
}

fn show(el: &Element) -> Option<String> {
    el.get_child("show", "jabber:client").map(|s| s.text())
}

fn status(el: &Element) -> Option<String> {
    el.get_child("status", "jabber:client").map(|s| s.text())
}

#[tokio::test]
async fn contacts_on_other_nodes_see_presence_probes_and_logout() {
    let Some(cluster) = TestCluster::start(3).await else {
        return;
    };
    cluster.add_users(&["alice", "bob"]).await;
    cluster.make_mutual("alice", "bob").await;

    // Bob on node 2 first, then Alice on node 1: Bob sees her come online, and she gets his
    // presence from her probe.
    let mut laptop = cluster.online(2, "bob", "laptop").await;
    cluster.until_available_everywhere(&laptop.jid, 0).await;
    let mut alice = cluster.login_available(1, "alice", "phone").await;
    let alice_jid = alice.jid.clone();
    expect_all(
        &mut alice,
        &[&available_from(&alice_jid), &available_from(&laptop.jid)],
    )
    .await;
    expect(&mut laptop, available_from(&alice_jid)).await;
    cluster.until_available_everywhere(&alice_jid, 0).await;

    // A second resource of Bob on node 3 gets Alice's presence (from node 1) and its
    // sibling's (from node 2) through the probe; Alice sees it come online.
    let mut tablet = cluster.login_available(3, "bob", "tablet").await;
    let tablet_jid = tablet.jid.clone();
    expect_all(
        &mut tablet,
        &[
            &available_from(&tablet_jid),
            &available_from(&alice_jid),
            &available_from(&laptop.jid),
        ],
    )
    .await;
    expect(&mut alice, available_from(&tablet_jid)).await;
    expect(&mut laptop, available_from(&tablet_jid)).await;

    // A change reaches both of Bob's resources, on their two nodes (§4.4).
    alice.send("<presence><show>away</show></presence>").await;
    for session in [&mut laptop, &mut tablet] {
        let away = expect(session, available_from(&alice_jid)).await;
        assert_eq!(show(&away).as_deref(), Some("away"), "{}", session.jid);
    }

    // Bob's tablet drops off without a word: Alice and the laptop hear it is gone (§4.5).
    drop(tablet);
    expect(&mut alice, unavailable_from(&tablet_jid)).await;
    expect(&mut laptop, unavailable_from(&tablet_jid)).await;

    // Alice goes unavailable with a status, then logs out: Bob gets the status once.
    alice
        .send("<presence type='unavailable'><status>bye</status></presence>")
        .await;
    let gone = expect(&mut laptop, unavailable_from(&alice_jid)).await;
    assert_eq!(status(&gone).as_deref(), Some("bye"));
    alice.send("</stream:stream>").await;
    assert!(alice.raw.closed().await);
    cluster.until_gone_everywhere(&alice_jid).await;

    // Alice back on node 3: Bob sees her, she sees him.
    let mut again = cluster.login_available(3, "alice", "phone").await;
    expect_all(
        &mut again,
        &[&available_from(&alice_jid), &available_from(&laptop.jid)],
    )
    .await;
    expect(&mut laptop, available_from(&alice_jid)).await;

    // Bob's laptop logs out cleanly: Alice on node 3 gets unavailable.
    let laptop_jid = laptop.jid.clone();
    laptop.send("</stream:stream>").await;
    expect(&mut again, unavailable_from(&laptop_jid)).await;
    cluster.finish().await;
}

/// tests/presence.rs's `subscribe_approve_and_see_each_other` with Alice on node 1 and Bob
/// on node 2: requests, approvals, roster pushes and the presence that follows cross nodes,
/// and both rosters end `both` in the shared database.
#[tokio::test]
async fn subscription_request_and_approval_across_nodes() {
    let Some(cluster) = TestCluster::start(3).await else {
        return;
    };
    cluster.add_users(&["alice", "bob"]).await;
    let mut alice = cluster.online(1, "alice", "phone").await;

    alice
        .send(&format!("<presence type='subscribe' to='{BOB}'/>"))
        .await;
    let push = expect(&mut alice, is_roster_push).await;
    let item = pushed_item(&push).expect("item");
    assert_eq!(item.attr("jid"), Some(BOB));
    assert_eq!(item.attr("ask"), Some("subscribe"));

    // Bob was offline: the request waits and reaches him when he comes online on node 2.
    let mut bob = cluster.login_available(2, "bob", "laptop").await;
    let request = expect(&mut bob, |el| is_presence(el, Some("subscribe"), ALICE)).await;
    assert_eq!(request.attr("to"), Some(BOB));
    cluster.until_available_everywhere(&bob.jid, 0).await;

    bob.send(&format!("<presence type='subscribed' to='{ALICE}'/>"))
        .await;
    let bob_jid = bob.jid.clone();
    let is_to_push = |el: &Element| {
        is_roster_push(el) && pushed_item(el).and_then(|i| i.attr("subscription")) == Some("to")
    };
    expect_all(
        &mut alice,
        &[
            &|el: &Element| is_presence(el, Some("subscribed"), BOB),
            &is_to_push,
            // Alice sees Bob at once (§3.1.5), from his full JID.
            &available_from(&bob_jid),
        ],
    )
    .await;

    // The other way, both online on their nodes.
    bob.send(&format!("<presence type='subscribe' to='{ALICE}'/>"))
        .await;
    expect(&mut alice, |el| is_presence(el, Some("subscribe"), BOB)).await;
    alice
        .send(&format!("<presence type='subscribed' to='{BOB}'/>"))
        .await;
    let alice_jid = alice.jid.clone();
    expect_all(
        &mut bob,
        &[
            &|el: &Element| is_presence(el, Some("subscribed"), ALICE),
            &available_from(&alice_jid),
        ],
    )
    .await;
    for (user, contact) in [("alice", BOB), ("bob", ALICE)] {
        let item = cluster
            .storage()
            .roster
            .roster_item(&account(user), contact)
            .await
            .expect("read")
            .expect("item");
        assert_eq!(item.subscription, Subscription::Both, "{user}");
    }

    // Each node now broadcasts to the contact on the other: the rosters each node holds
    // (cached or not) know the new subscriptions.
    alice.send("<presence><show>dnd</show></presence>").await;
    let seen = expect(&mut bob, available_from(&alice_jid)).await;
    assert_eq!(show(&seen).as_deref(), Some("dnd"));
    bob.send("<presence><show>xa</show></presence>").await;
    let seen = expect(&mut alice, available_from(&bob_jid)).await;
    assert_eq!(show(&seen).as_deref(), Some("xa"));

    // A resource of Bob on node 3 gets Alice's presence from the probe.
    let mut desk = cluster.login_available(3, "bob", "desk").await;
    let desk_jid = desk.jid.clone();
    let found = expect_all(
        &mut desk,
        &[&available_from(&desk_jid), &available_from(&alice_jid)],
    )
    .await;
    assert_eq!(show(&found[1]).as_deref(), Some("dnd"));
    expect(&mut alice, available_from(&desk_jid)).await;

    // Alice cancels Bob's subscription to her: Bob's resources on nodes 2 and 3 get
    // unavailable from her (§3.2.2).
    alice
        .send(&format!("<presence type='unsubscribed' to='{BOB}'/>"))
        .await;
    expect_all(
        &mut bob,
        &[
            &|el: &Element| is_presence(el, Some("unsubscribed"), ALICE),
            &unavailable_from(&alice_jid),
        ],
    )
    .await;
    expect(&mut desk, unavailable_from(&alice_jid)).await;
    // From now on her broadcasts do not reach him.
    alice.send("<presence><show>chat</show></presence>").await;
    let _ = alice.drain().await;
    let marker = Session::marker();
    alice.send_marker(&bob_jid, &marker).await;
    let seen = bob.until_marker(&marker).await;
    assert!(
        !seen
            .iter()
            .any(|el| el.name() == "presence" && el.attr("from") == Some(alice_jid.as_str())),
        "{seen:?}"
    );
    cluster.finish().await;
}

#[tokio::test]
async fn directed_presence_across_nodes_ends_with_the_session() {
    let Some(cluster) = TestCluster::start(3).await else {
        return;
    };
    cluster.add_users(&["alice", "carol"]).await;
    let mut alice = cluster.online(1, "alice", "r").await;
    let mut carol = cluster.online(3, "carol", "r").await;
    cluster.until_visible(1, &carol.jid).await;
    cluster.until_visible(3, &alice.jid).await;

    alice
        .send("<presence to='carol@localhost'><status>hi carol</status></presence>")
        .await;
    let seen = expect(&mut carol, available_from(&alice.jid)).await;
    assert_eq!(status(&seen).as_deref(), Some("hi carol"));

    // A broadcast does not reach a directed-presence recipient.
    alice.send("<presence><show>dnd</show></presence>").await;
    let _ = alice.drain().await;
    let marker = Session::marker();
    alice.send_marker(&carol.jid.clone(), &marker).await;
    let seen = carol.until_marker(&marker).await;
    assert!(seen.is_empty(), "{seen:?}");

    // The session ends (abruptly) on node 1: carol on node 3 is told.
    let alice_jid = alice.jid.clone();
    drop(alice);
    expect(&mut carol, unavailable_from(&alice_jid)).await;

    // Directed presence to a full JID on another node, then explicit unavailable to it.
    let mut alice = cluster.online(2, "alice", "r2").await;
    cluster.until_visible(2, &carol.jid).await;
    let carol_jid = carol.jid.clone();
    alice.send(&format!("<presence to='{carol_jid}'/>")).await;
    expect(&mut carol, available_from(&alice.jid)).await;
    alice
        .send(&format!("<presence type='unavailable' to='{carol_jid}'/>"))
        .await;
    expect(&mut carol, unavailable_from(&alice.jid)).await;
    cluster.finish().await;
}

fn roster_items(answer: &Element) -> Vec<(String, Option<String>)> {
    answer
        .get_child("query", "jabber:iq:roster")
        .map(|q| {
            q.children()
                .filter(|c| c.name() == "item")
                .map(|c| {
                    (
                        c.attr("jid").unwrap_or_default().to_owned(),
                        c.attr("name").map(str::to_owned),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn blocklist_items(answer: &Element, payload: &str) -> Vec<String> {
    answer
        .get_child(payload, "urn:xmpp:blocking")
        .map(|b| {
            b.children()
                .filter_map(|c| c.attr("jid").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Multi-device: an account's roster and blocklist changed from a resource on one node reach
/// its resources on the others as pushes (RFC 6121 §2.1.6, XEP-0191 §3.3), and what each
/// node then answers is the new state, not one it had cached.
#[tokio::test]
async fn roster_and_blocklist_changes_reach_the_accounts_resources_on_other_nodes() {
    let Some(cluster) = TestCluster::start(3).await else {
        return;
    };
    cluster.add_users(&["alice", "carol", "dave"]).await;
    let mut phone = cluster.online(1, "alice", "phone").await;
    let mut laptop = cluster.online(2, "alice", "laptop").await;
    for session in [&mut phone, &mut laptop] {
        let list = session
            .iq("<iq type='get'><blocklist xmlns='urn:xmpp:blocking'/></iq>")
            .await;
        assert_eq!(list.attr("type"), Some("result"));
    }
    // Both have the (empty) roster and blocklist cached on their nodes by now.

    let answer = phone
        .iq("<iq type='set'><query xmlns='jabber:iq:roster'><item jid='carol@localhost' name='Carol'/></query></iq>")
        .await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    let push = expect(&mut laptop, is_roster_push).await;
    let item = pushed_item(&push).expect("item");
    assert_eq!(item.attr("jid"), Some("carol@localhost"));
    assert_eq!(item.attr("name"), Some("Carol"));
    let roster = laptop.roster_get().await;
    assert_eq!(
        roster_items(&roster),
        [("carol@localhost".to_owned(), Some("Carol".to_owned()))],
        "{roster:?}"
    );

    // Renamed from the laptop: the phone sees the push and the new name.
    let answer = laptop
        .iq("<iq type='set'><query xmlns='jabber:iq:roster'><item jid='carol@localhost' name='C.'/></query></iq>")
        .await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    let push = expect(&mut phone, |el| {
        is_roster_push(el) && pushed_item(el).and_then(|i| i.attr("name")) == Some("C.")
    })
    .await;
    assert_eq!(
        pushed_item(&push).and_then(|i| i.attr("jid")),
        Some("carol@localhost")
    );
    let roster = phone.roster_get().await;
    assert_eq!(
        roster_items(&roster),
        [("carol@localhost".to_owned(), Some("C.".to_owned()))],
        "{roster:?}"
    );

    // A third resource on node 3 logs in after both changes: it sees the result.
    let mut tablet = cluster.login(3, "alice", "tablet").await;
    let roster = tablet.roster_get().await;
    assert_eq!(
        roster_items(&roster),
        [("carol@localhost".to_owned(), Some("C.".to_owned()))]
    );

    // Blocking from the laptop: the phone gets the push and node 1 enforces it.
    let answer = laptop
        .iq("<iq type='set'><block xmlns='urn:xmpp:blocking'><item jid='dave@localhost'/></block></iq>")
        .await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    let push = expect(&mut phone, |el| {
        el.name() == "iq"
            && el.attr("type") == Some("set")
            && el.has_child("block", "urn:xmpp:blocking")
    })
    .await;
    assert_eq!(blocklist_items(&push, "block"), ["dave@localhost"]);
    let list = phone
        .iq("<iq type='get'><blocklist xmlns='urn:xmpp:blocking'/></iq>")
        .await;
    assert_eq!(blocklist_items(&list, "blocklist"), ["dave@localhost"]);
    let mut dave = cluster.online(3, "dave", "d").await;
    dave.send(&format!(
        "<message to='{}' type='chat' id='d1'><body>hi</body></message>",
        phone.jid
    ))
    .await;
    let error = expect(&mut dave, |el| el.attr("id") == Some("d1")).await;
    assert_eq!(error.attr("type"), Some("error"), "{error:?}");
    cluster.finish().await;
}

const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const NICK: &str = "http://jabber.org/protocol/nick";
const PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
const CAPS_NODE: &str = "https://corvid.example/test-client";

/// XEP-0115 ver (sha-1) of a client with one identity and the nick feature with +notify.
fn nick_caps() -> (String, Vec<String>) {
    use base64::Engine;
    use sha1::Digest;
    let mut features = vec![
        DISCO_INFO.to_owned(),
        "http://jabber.org/protocol/caps".to_owned(),
        NICK.to_owned(),
        format!("{NICK}+notify"),
    ];
    features.sort_unstable();
    let mut s = String::from("client/pc//corvid-test<");
    for feature in &features {
        s.push_str(feature);
        s.push('<');
    }
    let ver = base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(s.as_bytes()));
    (ver, features)
}

/// The nick in a PEP notification from `owner`, if `el` is one.
fn notified_nick(el: &Element, owner: &str) -> Option<String> {
    if el.name() != "message" || el.attr("from") != Some(owner) {
        return None;
    }
    el.get_child("event", PUBSUB_EVENT)?
        .get_child("items", PUBSUB_EVENT)
        .filter(|items| items.attr("node") == Some(NICK))?
        .get_child("item", PUBSUB_EVENT)?
        .get_child("nick", NICK)
        .map(|n| n.text())
}

/// Waits for a nick notification from `owner`, answering the server's caps queries (from
/// whichever node asks) on the way.
async fn next_nick(session: &mut Session, owner: &str) -> String {
    let (ver, features) = nick_caps();
    loop {
        let el = session.next().await;
        if let Some(nick) = notified_nick(&el, owner) {
            return nick;
        }
        let is_caps_query = el.name() == "iq"
            && el.attr("type") == Some("get")
            && el.get_child("query", DISCO_INFO).is_some();
        if is_caps_query {
            let vars: String = features
                .iter()
                .map(|f| format!("<feature var='{f}'/>"))
                .collect();
            session
                .send(&format!(
                    "<iq type='result' id='{}' to='{}'><query xmlns='{DISCO_INFO}' node='{CAPS_NODE}#{ver}'>\
                     <identity category='client' type='pc' name='corvid-test'/>{vars}</query></iq>",
                    el.attr("id").unwrap_or_default(),
                    el.attr("from").unwrap_or_default(),
                ))
                .await;
        }
    }
}

/// XEP-0163 across nodes: a contact's resources on other nodes that want nick
/// notifications (XEP-0115 caps with `+notify`) get the last item when they come online and
/// each new one when the owner publishes on its node.
#[tokio::test]
async fn pep_notifications_reach_interested_contacts_on_other_nodes() {
    let Some(cluster) = TestCluster::start(3).await else {
        return;
    };
    cluster.add_users(&["alice", "bob"]).await;
    cluster.make_mutual("alice", "bob").await;
    let mut bob = cluster.online(1, "bob", "b").await;
    let publish = |name: &str| {
        format!(
            "<iq type='set'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{NICK}'>\
             <item id='current'><nick xmlns='{NICK}'>{name}</nick></item></publish></pubsub></iq>"
        )
    };
    let answer = bob.iq(&publish("Bob")).await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");

    let (ver, _) = nick_caps();
    let caps_presence = format!(
        "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='{CAPS_NODE}' ver='{ver}'/></presence>"
    );
    let mut phone = cluster.login(2, "alice", "phone").await;
    phone.roster_get().await;
    phone.send(&caps_presence).await;
    assert_eq!(next_nick(&mut phone, BOB).await, "Bob", "the last item");
    let mut desk = cluster.login(3, "alice", "desk").await;
    desk.roster_get().await;
    desk.send(&caps_presence).await;
    assert_eq!(next_nick(&mut desk, BOB).await, "Bob", "the last item");
    for jid in [&phone.jid, &desk.jid] {
        cluster.until_available_everywhere(jid, 0).await;
    }

    let answer = bob.iq(&publish("Bobby")).await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    for session in [&mut phone, &mut desk] {
        assert_eq!(next_nick(session, BOB).await, "Bobby", "{}", session.jid);
    }
    cluster.finish().await;
}
