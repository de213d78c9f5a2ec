//! Redis goes away under a three-node cluster (a `redis-server` of the test's own, killed and
//! started again, empty, on the same port): every node keeps serving its own sessions; a
//! message for a session on another node is stored offline and an IQ to one is answered
//! `<service-unavailable/>`, never lost in silence; once Redis is back the nodes write their
//! sessions again and cross-node delivery resumes.
//!
//! Skipped without `CORVID_TEST_POSTGRES` or without `redis-server`.

mod common;

use common::cluster::{expect, PrivateRedis, TestCluster};
use common::xmpp::{error_condition, Session};
use corvid::router::Location;
use minidom::Element;

fn body(el: &Element) -> Option<String> {
    el.get_child("body", "jabber:client").map(|b| b.text())
}

fn body_is(text: &str) -> impl Fn(&Element) -> bool + '_ {
    move |el| el.name() == "message" && body(el).as_deref() == Some(text)
}

async fn chat(from: &mut Session, to: &str, text: &str) {
    from.send(&format!(
        "<message to='{to}' type='chat'><body>{text}</body></message>"
    ))
    .await;
}

#[tokio::test]
async fn without_redis_nodes_serve_their_own_and_store_the_rest_then_recover() {
    if std::env::var_os("CORVID_TEST_POSTGRES").is_none() {
        eprintln!("skipped: CORVID_TEST_POSTGRES not set");
        return;
    }
    let Some(mut redis) = PrivateRedis::start().await else {
        return;
    };
    let Some(cluster) = TestCluster::start_on_redis(3, &redis.url()).await else {
        return;
    };
    cluster.add_users(&["alice", "bob", "carol"]).await;
    let mut alice = cluster.online(1, "alice", "a").await;
    let mut carol = cluster.online(1, "carol", "c").await;
    let mut bob = cluster.online(2, "bob", "b").await;
    for jid in [&alice.jid, &carol.jid, &bob.jid] {
        cluster.until_available_everywhere(jid, 0).await;
    }
    let bob_jid = bob.jid.clone();
    let carol_jid = carol.jid.clone();
    chat(&mut alice, &bob_jid, "before").await;
    expect(&mut bob, body_is("before")).await;

    redis.stop();

    // Node 1 still serves its own sessions.
    chat(&mut alice, &carol_jid, "local").await;
    expect(&mut carol, body_is("local")).await;

    // A chat for Bob on node 2 is stored, not lost; an IQ to him is refused.
    chat(&mut alice, &bob_jid, "while redis is down").await;
    // Delivery between nodes is at least once: "before" is stored as well when Redis went
    // away before Bob's node acknowledged it. Bob's next session checks what matters.
    let before = tokio::time::Instant::now();
    while cluster.offline_count("bob").await == 0 {
        assert!(
            before.elapsed() < common::WAIT,
            "nothing stored offline for bob"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let answer = alice
        .iq(&format!(
            "<iq to='{bob_jid}' type='get'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await;
    assert_eq!(answer.attr("type"), Some("error"), "{answer:?}");
    assert_eq!(
        error_condition(&answer).as_deref(),
        Some("service-unavailable")
    );
    // Node 2 serves Bob meanwhile (his own IQ to the server, say).
    let pong = bob
        .iq("<iq type='get' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(pong.attr("type"), Some("result"));

    // Redis back, empty: the nodes write their sessions again and see each other's.
    redis.restart().await;
    cluster
        .until("the directory rebuilt on every node", |c| {
            matches!(c.locate(1, &bob_jid), Location::OtherNode(_))
                && matches!(c.locate(2, &carol_jid), Location::OtherNode(_))
                && matches!(c.locate(3, &bob_jid), Location::OtherNode(_))
        })
        .await;
    chat(&mut alice, &bob_jid, "after").await;
    let got = expect(&mut bob, |el| el.name() == "message" && body(el).is_some()).await;
    assert_eq!(body(&got).as_deref(), Some("after"), "{got:?}");
    chat(&mut bob, &carol_jid, "and back").await;
    expect(&mut carol, body_is("and back")).await;

    // What was stored while Redis was down reaches Bob's next session.
    let mut again = cluster.login(3, "bob", "later").await;
    again.send("<presence/>").await;
    expect(&mut again, body_is("while redis is down")).await;
    cluster.finish().await;
    drop(redis);
}
