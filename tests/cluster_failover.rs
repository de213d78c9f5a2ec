//! A node of a three-node cluster dies (see `TestCluster::start_killable`: its runtime ends
//! at once, as a killed process would: no cleanup runs, its heartbeats stop, its Redis
//! entries stay behind). The others sweep its sessions after `node_timeout_secs`: contacts
//! get unavailable presence, the directory forgets them, and messages to them (also one sent
//! while the node was already dead but not yet swept) are delivered to another resource or
//! stored offline: never lost.
//!
//! Skipped without `CORVID_TEST_POSTGRES`; Redis is `CORVID_TEST_REDIS` or 127.0.0.1:6379.

mod common;

use common::cluster::{expect, expect_all, TestCluster};
use common::xmpp::{is_presence, Session};
use corvid::router::Location;
use minidom::Element;

fn body(el: &Element) -> Option<String> {
    el.get_child("body", "jabber:client").map(|b| b.text())
}

fn body_is(text: &str) -> impl Fn(&Element) -> bool + '_ {
    move |el| el.name() == "message" && body(el).as_deref() == Some(text)
}

fn unavailable_from(from: &str) -> impl Fn(&Element) -> bool + '_ {
    move |el| is_presence(el, Some("unavailable"), from)
}

async fn chat(from: &mut Session, to: &str, text: &str) {
    from.send(&format!(
        "<message to='{to}' type='chat'><body>{text}</body></message>"
    ))
    .await;
}

#[tokio::test]
async fn a_dead_nodes_sessions_are_swept_and_nothing_sent_to_them_is_lost() {
    let Some(mut cluster) = TestCluster::start_killable(3).await else {
        return;
    };
    cluster.add_users(&["alice", "bob"]).await;
    cluster.make_mutual("alice", "bob").await;
    let mut alice = cluster.online(1, "alice", "a").await;
    let mut laptop = cluster.online(2, "bob", "laptop").await;
    let mut phone = cluster.online(3, "bob", "phone").await;
    for jid in [&alice.jid, &laptop.jid, &phone.jid] {
        cluster.until_available_everywhere(jid, 0).await;
    }
    let phone_jid = phone.jid.clone();
    let laptop_jid = laptop.jid.clone();

    // Node 3 dies; a message to its session leaves node 1 before anyone noticed.
    cluster.kill(3);
    chat(&mut alice, &phone_jid, "in flight").await;
    assert!(
        phone.raw.closed().await,
        "the dead node's client is cut off"
    );

    // The sweep: the contact and the sibling hear the phone went, every node forgets it.
    expect(&mut alice, unavailable_from(&phone_jid)).await;
    // (What the laptop gets meanwhile is kept: the message in flight may be among it.)
    let mut seen = Vec::new();
    loop {
        let el = laptop.next().await;
        let done = unavailable_from(&phone_jid)(&el);
        seen.push(el);
        if done {
            break;
        }
    }
    cluster.until_gone_everywhere(&phone_jid).await;
    assert_eq!(cluster.locate(1, &phone_jid), Location::Unbound);

    // The message in flight reached the surviving resource (RFC 6121 §8.5.3.2.1: the full
    // JID is gone, so as to the bare JID) or waits in offline storage.
    let marker = Session::marker();
    alice.send_marker(&laptop_jid, &marker).await;
    seen.extend(laptop.until_marker(&marker).await);
    let delivered = seen.iter().filter(|el| body_is("in flight")(el)).count();
    let stored = if delivered == 0 {
        cluster.until_offline("bob", 1).await;
        1
    } else {
        0
    };
    assert_eq!(delivered + stored, 1, "{seen:?}");

    // After the sweep a message to the dead resource goes to the living one.
    chat(&mut alice, &phone_jid, "after the sweep").await;
    expect(&mut laptop, body_is("after the sweep")).await;

    // Node 2 dies too: Bob has no session left, messages to him are stored.
    cluster.kill(2);
    expect(&mut alice, unavailable_from(&laptop_jid)).await;
    cluster.until_gone_everywhere(&laptop_jid).await;
    chat(&mut alice, "bob@localhost", "to nobody").await;
    // Stored: that one, and perhaps again what node 2 delivered but had not acknowledged to
    // the sender when it died (delivery between nodes is at least once).
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while cluster.offline_count("bob").await < stored as u64 + 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "to nobody was not stored"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Bob back on node 1 gets what was stored.
    let mut bob = cluster.login(1, "bob", "back").await;
    bob.send("<presence/>").await;
    if stored == 1 {
        expect_all(&mut bob, &[&body_is("in flight"), &body_is("to nobody")]).await;
    } else {
        expect(&mut bob, body_is("to nobody")).await;
    }
    cluster.until_offline("bob", 0).await;
    cluster.finish().await;
}

/// A node that crashed and is started again at once (before the others would sweep it)
/// ends its previous life's sessions itself: no stale session stays in the directory, the
/// contacts hear that it went, and the same full JID can bind there again.
#[tokio::test]
async fn a_node_restarted_after_a_crash_leaves_no_stale_session() {
    let Some(mut cluster) = TestCluster::start_killable(3).await else {
        return;
    };
    cluster.add_users(&["alice", "bob"]).await;
    cluster.make_mutual("alice", "bob").await;
    let mut alice = cluster.online(1, "alice", "a").await;
    let phone = cluster.online(3, "bob", "phone").await;
    let phone_jid = phone.jid.clone();
    cluster.until_available_everywhere(&phone_jid, 0).await;

    cluster.kill(3);
    drop(phone);
    cluster.revive(3).await;

    expect(&mut alice, unavailable_from(&phone_jid)).await;
    cluster.until_gone_everywhere(&phone_jid).await;

    // Bob back on the new node 3 with the same resource: seen, and reachable.
    let mut phone = cluster.online(3, "bob", "phone").await;
    cluster.until_available_everywhere(&phone_jid, 0).await;
    expect(&mut alice, |el| is_presence(el, None, &phone_jid)).await;
    chat(&mut alice, &phone_jid, "hello again").await;
    expect(&mut phone, body_is("hello again")).await;
    cluster.finish().await;
}
