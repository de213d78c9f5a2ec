//! XEP-0198 resumption across the nodes of a cluster (see `common::cluster`): a client whose
//! connection to one node broke resumes on another, as behind a load balancer. Either it gets
//! its session back with every stanza it had not acknowledged, exactly once and in order, or
//! `<failed h='…'/>` with the count of what it sent and those stanzas in offline storage, to
//! be delivered at its next login: never a silent gap.
//!
//! Skipped without `CORVID_TEST_POSTGRES`; Redis is `CORVID_TEST_REDIS` or 127.0.0.1:6379.

mod common;

use common::cluster::{expect, TestCluster};
use common::xmpp::is_presence;
use common::Raw;
use minidom::Element;

const SM: &str = "urn:xmpp:sm:3";

fn is_stanza(el: &Element) -> bool {
    el.ns() == "jabber:client" && matches!(el.name(), "message" | "presence" | "iq")
}

fn body(el: &Element) -> Option<String> {
    el.get_child("body", "jabber:client").map(|b| b.text())
}

/// The bodies of the messages from `from` among `seen`.
fn bodies_from(seen: &[Element], from: &str) -> Vec<String> {
    seen.iter()
        .filter(|el| el.name() == "message" && el.attr("from") == Some(from))
        .filter_map(body)
        .collect()
}

/// Reads (counting stanzas into `h`) up to and including the message with `text`; returns
/// what came before it.
async fn until_body(raw: &mut Raw, h: &mut u32, text: &str) -> Vec<Element> {
    let mut seen = Vec::new();
    loop {
        let el = raw.element().await;
        if is_stanza(&el) {
            *h += 1;
        }
        if el.name() == "message" && body(&el).as_deref() == Some(text) {
            return seen;
        }
        seen.push(el);
    }
}

#[tokio::test]
async fn a_session_broken_on_one_node_resumes_on_another_or_fails_without_a_gap() {
    let Some(cluster) = TestCluster::start(3).await else {
        return;
    };
    cluster.add_users(&["alice", "bob"]).await;
    cluster.make_mutual("alice", "bob").await;
    let mut bob = cluster.online(2, "bob", "desk").await;
    let bob_jid = bob.jid.clone();

    // Alice on node 1 with resumption; her presence is her one stanza.
    let (mut alice, jid) = cluster.raw(1, "alice", "phone").await;
    alice
        .write(&format!("<enable xmlns='{SM}' resume='true'/>"))
        .await;
    let enabled = alice.element().await;
    assert!(enabled.is("enabled", SM), "{enabled:?}");
    let previd = enabled.attr("id").expect("resumable").to_owned();
    alice.write("<presence/>").await;
    expect(&mut bob, |el| is_presence(el, None, &jid)).await;

    let mut h = 0;
    bob.send_marker(&jid, "m1").await;
    bob.send_marker(&jid, "m2").await;
    until_body(&mut alice, &mut h, "m2").await;
    // Everything up to m1 acknowledged; m2 is not.
    let acked = h - 1;
    alice.write(&format!("<a xmlns='{SM}' h='{acked}'/>")).await;
    drop(alice);
    cluster.node(1).until_detached(&jid).await;

    // Queued for the detached session on node 1.
    bob.send_marker(&jid, "m3").await;
    bob.send_marker(&jid, "m4").await;
    let seen = bob.drain().await;
    assert!(
        !seen
            .iter()
            .any(|el| is_presence(el, Some("unavailable"), &jid)),
        "contacts do not see a detached session go: {seen:?}"
    );

    // Back through node 3.
    let node = cluster.node(3);
    let (mut raw, _) = Raw::authenticated(node.c2s(), node.tls_config(), "alice").await;
    let answer = raw.resume(&previd, acked).await;
    if answer.is("resumed", SM) {
        assert_eq!(
            answer.attr("h"),
            Some("1"),
            "alice sent one stanza: {answer:?}"
        );
        eprintln!("resumed on node 3");
        assert_eq!(answer.attr("previd"), Some(previd.as_str()));
        cluster
            .until("alice/phone on node 3 everywhere", |c| {
                c.locate(3, &jid) == corvid::router::Location::Local
                    && c.live().into_iter().all(|i| c.locate(i, &jid).is_bound())
            })
            .await;
        bob.send_marker(&jid, "after").await;
        let mut h = acked;
        let got = until_body(&mut raw, &mut h, "after").await;
        assert_eq!(bodies_from(&got, &bob_jid), ["m2", "m3", "m4"], "{got:?}");
        // The same session: Alice still talks as the same full JID, and Bob saw no
        // presence change.
        raw.write(&format!(
            "<message to='{bob_jid}' type='chat'><body>back</body></message>"
        ))
        .await;
        let seen = bob.until_marker("back").await;
        assert!(
            !seen.iter().any(|el| el.name() == "presence"),
            "no presence change on resume: {seen:?}"
        );
    } else {
        eprintln!("resumption failed on node 3: {answer:?}");
        assert!(answer.is("failed", SM), "{answer:?}");
        drop(raw);
        // What she had not acknowledged reaches her next session, wherever it is.
        let mut again = cluster.login(2, "alice", "laptop").await;
        again.send("<presence/>").await;
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + common::WAIT / 2;
        while bodies_from(&got, &bob_jid).len() < 3 {
            match tokio::time::timeout_at(deadline, again.next()).await {
                Ok(el) => got.push(el),
                Err(_) => panic!(
                    "after <failed/>, the next session got only {:?} of m2, m3, m4: {got:?}",
                    bodies_from(&got, &bob_jid)
                ),
            }
        }
        assert_eq!(bodies_from(&got, &bob_jid), ["m2", "m3", "m4"], "{got:?}");
        // The count of what she sent, so that she knows what to send again.
        assert_eq!(
            answer.attr("h"),
            Some("1"),
            "alice sent one stanza: {answer:?}"
        );
    }
    cluster.finish().await;
}
