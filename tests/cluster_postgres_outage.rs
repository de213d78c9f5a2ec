//! PostgreSQL unreachable under a cluster (issue 12): two `corvid serve` nodes share a private
//! PostgreSQL instance (tests/common/private_postgres.rs) and a private Redis, and the
//! database is stopped (`pg_ctl stop -m immediate`) while clients are logged in on both.
//!
//! While it is down:
//! - sessions that are logged in keep chatting, on one node and across nodes: delivery to an
//!   online session needs no storage (the archive writer holds what it cannot commit);
//! - a new login fails at once with SASL `<temporary-auth-failure/>`, never a hang;
//! - a message to an offline user cannot be stored: it comes back to its sender as
//!   `internal-server-error` of type `wait` (the sender may try again later), whichever node
//!   the sender is on;
//! - a roster get is answered from the node's roster cache when the roster was loaded before
//!   (at login, for a session's presence); a roster that is not cached cannot be read, and
//!   the get is answered `internal-server-error` of type `wait`;
//! - no node exits, and each says in its log that storage failed.
//!
//! After PostgreSQL is started again on the same port, logins and offline storage work again
//! without restarting the nodes.
//!
//! Skipped (with the reason printed) without `CORVID_TEST_POSTGRES`, `redis-server` or the
//! PostgreSQL server binaries.

mod common;

use std::time::Duration;

use common::cluster_processes::{Client, ClusterOptions, ProcessCluster, CLUSTER_DOMAIN};
use common::private_postgres::PrivatePostgres;
use minidom::Element;
use tokio::time::Instant;

const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// Storage operations give up after this: each failing step is quick.
const STORAGE_TIMEOUT_MS: u64 = 1500;
/// What a client waits for any one answer.
const WAIT: Duration = Duration::from_secs(10);

fn full(user: &str) -> String {
    format!("{user}@{CLUSTER_DOMAIN}/r")
}

fn bare(user: &str) -> String {
    format!("{user}@{CLUSTER_DOMAIN}")
}

fn body_of(el: &Element) -> Option<String> {
    el.get_child("body", "jabber:client").map(|b| b.text())
}

/// The condition and type of a stanza error.
fn error_of(el: &Element) -> Option<(String, String)> {
    let error = el.get_child("error", "jabber:client")?;
    let condition = error.children().find(|c| c.ns() == STANZAS)?.name();
    Some((condition.to_owned(), error.attr("type")?.to_owned()))
}

/// The first element from `c` that `pred` accepts, within `WAIT`.
async fn until(c: &mut Client, what: &str, pred: impl Fn(&Element) -> bool) -> Element {
    let end = Instant::now() + WAIT;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match c.next(left).await {
            Ok(Some(el)) if pred(&el) => return el,
            Ok(Some(_)) => {}
            Ok(None) => panic!("{}: {what}: nothing within {WAIT:?}", c.user),
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

fn message(to: &str, id: &str, body: &str) -> String {
    format!("<message to='{to}' type='chat' id='{id}'><body>{body}</body></message>")
}

/// `from` sends `body` to `to` (a full JID); `to` gets it live.
async fn chat(from: &mut Client, to: &mut Client, body: &str) {
    let jid = full(&to.user);
    from.write(&message(&jid, body, body)).await.expect("send");
    until(to, &format!("chat {body}"), |el| {
        el.name() == "message" && body_of(el).as_deref() == Some(body)
    })
    .await;
}

/// Logs `user` in on `node` with initial presence.
async fn online(cluster: &ProcessCluster, node: usize, user: &str) -> Client {
    let mut c = Client::login(cluster.addr(node), node, user, "r", true)
        .await
        .expect("login");
    // The presence is handled (offline storage flushed) before the answer to this ping.
    c.write(&format!(
        "<iq type='get' id='p' to='{CLUSTER_DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>"
    ))
    .await
    .expect("ping");
    c
}

/// Until `a` (on one node) and `b` (on another) reach each other: the directories agree.
async fn warm_up(a: &mut Client, b: &mut Client) {
    for attempt in 0..100 {
        let probe = format!("warm-{attempt}");
        a.write(&message(&full(&b.user), &probe, &probe))
            .await
            .expect("send");
        let got = b.next(Duration::from_millis(300)).await.expect("connected");
        // Any probe that arrived will do: earlier ones may come late.
        if got.is_some_and(|el| body_of(&el).is_some_and(|b| b.starts_with("warm-"))) {
            return;
        }
    }
    panic!("{} never reached {}", a.user, b.user);
}

/// PLAIN for `user` on `node`: the server's answer, and how long it took.
async fn sasl_answer(cluster: &ProcessCluster, node: usize, user: &str) -> (Element, Duration) {
    let started = Instant::now();
    let (c, answer) = Client::sasl_plain(cluster.addr(node), node, user)
        .await
        .expect("connects");
    c.close().await;
    (answer, started.elapsed())
}

/// A roster get: the answer.
async fn roster_get(c: &mut Client, id: &str) -> Element {
    c.write(&format!(
        "<iq type='get' id='{id}'><query xmlns='jabber:iq:roster'/></iq>"
    ))
    .await
    .expect("roster get");
    until(c, "roster answer", |el| {
        el.name() == "iq" && el.attr("id") == Some(id)
    })
    .await
}

/// A message to `to` (offline) comes back to `from` as an error, or does not (stored).
async fn offline_answer(from: &mut Client, to: &str, id: &str) -> Option<Element> {
    from.write(&message(&bare(to), id, id)).await.expect("send");
    let end = Instant::now() + Duration::from_secs(12);
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match from.next(left).await.expect("connected") {
            Some(el) if el.name() == "message" && el.attr("id") == Some(id) => return Some(el),
            Some(_) => {}
            None => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_under_a_cluster_then_back() {
    let Some(mut pg) = PrivatePostgres::start().await else {
        return;
    };
    let users = ["alice", "bob", "carol", "dave", "erin", "frank"];
    let Some(mut cluster) = ProcessCluster::start(ClusterOptions {
        nodes: 2,
        users: users.iter().map(|u| u.to_string()).collect(),
        postgres: Some(pg.url()),
        storage_timeout_ms: Some(STORAGE_TIMEOUT_MS),
        ..ClusterOptions::default()
    })
    .await
    else {
        return;
    };
    // Alice on n1; Bob and Erin on n2.
    let mut alice = online(&cluster, 0, "alice").await;
    let mut bob = online(&cluster, 1, "bob").await;
    let mut erin = online(&cluster, 1, "erin").await;
    // Bound without presence: nothing of Frank's is loaded yet.
    let mut frank = Client::login(cluster.addr(1), 1, "frank", "r", false)
        .await
        .expect("login");
    warm_up(&mut alice, &mut bob).await;
    warm_up(&mut bob, &mut alice).await;
    warm_up(&mut alice, &mut erin).await;
    let cached = roster_get(&mut alice, "roster-before").await;
    assert_eq!(cached.attr("type"), Some("result"), "{cached:?}");

    pg.stop().await;
    let down = Instant::now();

    // Live chat goes on, across nodes and on one node.
    for i in 1..=4 {
        chat(&mut alice, &mut bob, &format!("down-a{i}")).await;
        chat(&mut bob, &mut alice, &format!("down-b{i}")).await;
        chat(&mut erin, &mut bob, &format!("down-e{i}")).await;
    }

    // New logins fail at once, on both nodes, saying it is temporary.
    for node in [0, 1] {
        let (answer, took) = sasl_answer(&cluster, node, "carol").await;
        assert!(answer.is("failure", SASL), "n{}: {answer:?}", node + 1);
        assert!(
            answer.has_child("temporary-auth-failure", SASL),
            "a storage failure is temporary: {answer:?}"
        );
        assert!(
            took < Duration::from_millis(STORAGE_TIMEOUT_MS) * 4,
            "login failure took {took:?}"
        );
    }

    // A message to an offline user cannot be stored: bounced, try again later.
    for (sender, id) in [(&mut alice, "to-carol-1"), (&mut bob, "to-carol-2")] {
        let started = Instant::now();
        let bounced = offline_answer(sender, "carol", id)
            .await
            .unwrap_or_else(|| {
                panic!(
                    "{id}: no error while storage is down\n{}",
                    cluster.logs_tail(30)
                )
            });
        // A few storage operations on the way (the recipient's blocklist, the offline
        // store), each giving up after the storage timeout: bounded, not a hang.
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(STORAGE_TIMEOUT_MS) * 5,
            "{id} bounced after {took:?}"
        );
        assert_eq!(bounced.attr("type"), Some("error"), "{bounced:?}");
        assert_eq!(
            error_of(&bounced),
            Some(("internal-server-error".into(), "wait".into())),
            "{bounced:?}"
        );
    }

    // A roster loaded before is served from the cache; one never loaded cannot be read.
    let answer = roster_get(&mut alice, "roster-cached").await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    let answer = roster_get(&mut frank, "roster-frank").await;
    assert_eq!(answer.attr("type"), Some("error"), "{answer:?}");
    assert_eq!(
        error_of(&answer),
        Some(("internal-server-error".into(), "wait".into())),
        "{answer:?}"
    );

    // Nobody was disconnected, no node exited.
    chat(&mut bob, &mut alice, "still-up").await;
    for node in [0, 1] {
        assert!(
            !cluster.has_exited(node),
            "n{} exited:\n{}",
            node + 1,
            cluster.logs_tail(40)
        );
    }
    eprintln!("storage down for {:?}", down.elapsed());

    pg.restart().await;

    // Logins come back without restarting any node (the first attempts may still fail).
    let mut carol = None;
    for _ in 0..60 {
        let (answer, _) = sasl_answer(&cluster, 1, "carol").await;
        if answer.is("success", SASL) {
            carol = Some(online(&cluster, 1, "carol").await);
            break;
        }
        assert!(
            answer.has_child("temporary-auth-failure", SASL),
            "{answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let carol = carol.expect("carol logs in once PostgreSQL is back");
    // Offline storage works again: Dave, offline, gets Alice's message (from n1) on n2.
    assert!(
        offline_answer(&mut alice, "dave", "to-dave")
            .await
            .is_none(),
        "stored, not bounced"
    );
    let mut dave = online(&cluster, 1, "dave").await;
    let got = until(&mut dave, "the stored message", |el| {
        el.name() == "message" && el.attr("id") == Some("to-dave")
    })
    .await;
    assert!(got.has_child("delay", "urn:xmpp:delay"), "{got:?}");
    chat(&mut alice, &mut bob, "after").await;

    let logs: Vec<String> = (0..2).map(|i| cluster.nodes[i].log()).collect();
    let logs_tail = cluster.logs_tail(30);
    for c in [alice, bob, carol, dave, erin, frank] {
        c.close().await;
    }
    cluster.finish().await;
    for (i, log) in logs.iter().enumerate() {
        assert!(
            log.lines()
                .any(|l| (l.contains("WARN") || l.contains("ERROR")) && l.contains("storage")),
            "n{} does not say that storage failed:\n{logs_tail}",
            i + 1
        );
    }
}
