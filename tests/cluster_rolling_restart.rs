//! A rolling restart of a three-node cluster (see `common::cluster`): each node in turn is
//! stopped as on SIGTERM and started again while messages are on their way, and its clients,
//! which use XEP-0198 with resumption, reconnect to another node and try to resume. Whether
//! they resume or get `<failed/>` and start a new session, every message sent reaches its
//! recipient (at least once): none is lost.
//!
//! Skipped without `CORVID_TEST_POSTGRES`; Redis is `CORVID_TEST_REDIS` or 127.0.0.1:6379.

mod common;

use std::collections::BTreeSet;

use common::cluster::TestCluster;
use common::xmpp::Session;
use common::{Raw, WAIT};
use corvid::xml::Frame;
use minidom::Element;

const SM: &str = "urn:xmpp:sm:3";
const BATCH: usize = 10;
const CAROL: &str = "carol@localhost/c";

fn is_stanza(el: &Element) -> bool {
    el.ns() == "jabber:client" && matches!(el.name(), "message" | "presence" | "iq")
}

/// A client with stream management and resumption, keeping every body it received from
/// Carol on any of its connections.
struct SmUser {
    user: &'static str,
    node: usize,
    raw: Raw,
    previd: String,
    /// Stanzas received on the current stream since `<enable/>`.
    h: u32,
    bodies: Vec<String>,
    resumed: usize,
    failed: usize,
}

impl SmUser {
    async fn login(cluster: &TestCluster, node: usize, user: &'static str) -> SmUser {
        let (raw, _) = cluster.raw(node, user, "r").await;
        let mut client = SmUser {
            user,
            node,
            raw,
            previd: String::new(),
            h: 0,
            bodies: Vec::new(),
            resumed: 0,
            failed: 0,
        };
        client.enable().await;
        client
    }

    async fn enable(&mut self) {
        self.raw
            .write(&format!("<enable xmlns='{SM}' resume='true'/>"))
            .await;
        let enabled = self.raw.element().await;
        assert!(enabled.is("enabled", SM), "{enabled:?}");
        self.previd = enabled.attr("id").expect("resumable").to_owned();
        self.h = 0;
        self.raw.write("<presence/>").await;
    }

    fn absorb(&mut self, el: &Element) {
        if is_stanza(el) {
            self.h += 1;
        }
        if el.name() == "message" && el.attr("from") == Some(CAROL) {
            if let Some(body) = el.get_child("body", "jabber:client") {
                self.bodies.push(body.text());
            }
        }
    }

    fn distinct(&self) -> BTreeSet<String> {
        self.bodies.iter().cloned().collect()
    }

    /// Reads what the stopping node still sends, up to the end of the stream.
    async fn read_until_closed(&mut self) {
        loop {
            match self.raw.frame().await {
                Some(Frame::Element(el)) => self.absorb(&el),
                Some(_) => continue,
                None => return,
            }
        }
    }

    /// Reads until every one of `expected` arrived; then acknowledges all it read.
    async fn read_until_all(&mut self, expected: &BTreeSet<String>) {
        let deadline = tokio::time::Instant::now() + WAIT - std::time::Duration::from_millis(250);
        while !expected.is_subset(&self.distinct()) {
            match tokio::time::timeout_at(deadline, self.raw.element()).await {
                Ok(el) => self.absorb(&el),
                Err(_) => {
                    let missing: Vec<_> = expected.difference(&self.distinct()).cloned().collect();
                    panic!(
                        "{} (on n{}, resumed {} failed {}) never got {missing:?}",
                        self.user, self.node, self.resumed, self.failed
                    );
                }
            }
        }
        self.raw
            .write(&format!("<a xmlns='{SM}' h='{}'/>", self.h))
            .await;
    }

    /// Reconnects to `node` and resumes; after `<failed/>` binds a new session there.
    async fn reconnect(&mut self, cluster: &TestCluster, node: usize) {
        let server = cluster.node(node);
        let (mut raw, _) = Raw::authenticated(server.c2s(), server.tls_config(), self.user).await;
        let answer = raw.resume(&self.previd, self.h).await;
        self.node = node;
        if answer.is("resumed", SM) {
            self.resumed += 1;
            self.raw = raw;
        } else {
            assert!(answer.is("failed", SM), "{answer:?}");
            self.failed += 1;
            drop(raw);
            let (raw, _) = cluster.raw(node, self.user, "r").await;
            self.raw = raw;
            self.enable().await;
        }
    }
}

#[tokio::test]
async fn a_rolling_restart_loses_no_message() {
    rolling_restart(|round, _sender| round % 3 + 1).await;
}

/// The clients of the stopping node reconnect to the node of the sender, whose messages to
/// them were on their way to the stopping node.
#[tokio::test]
async fn a_rolling_restart_loses_no_message_when_clients_move_to_the_senders_node() {
    rolling_restart(|round, sender| {
        if sender == round {
            round % 3 + 1
        } else {
            sender
        }
    })
    .await;
}

/// Restarts nodes 1, 2, 3 in turn; `elsewhere(round, sender's node)` is where the stopping
/// node's clients reconnect.
async fn rolling_restart(elsewhere: impl Fn(usize, usize) -> usize) {
    let Some(mut cluster) = TestCluster::start(3).await else {
        return;
    };
    cluster.add_users(&["alice", "bob", "carol"]).await;
    let mut alice = SmUser::login(&cluster, 1, "alice").await;
    let mut bob = SmUser::login(&cluster, 2, "bob").await;
    let mut carol = cluster.login(3, "carol", "c").await;
    let mut carol_node = 3;
    for user in [&alice, &bob] {
        let jid = format!("{}@localhost/r", user.user);
        cluster.until_available_everywhere(&jid, 0).await;
    }

    let mut sent = BTreeSet::new();
    for round in 1..=3 {
        // A batch on its way to both (to their bare JIDs), then node `round` restarts.
        for k in 0..BATCH {
            let text = format!("round {round} message {k}");
            for to in ["alice@localhost", "bob@localhost"] {
                carol
                    .send(&format!(
                        "<message to='{to}' type='chat'><body>{text}</body></message>"
                    ))
                    .await;
            }
            sent.insert(text);
        }
        let answer = carol
            .iq("<iq type='get' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
            .await;
        assert_eq!(answer.attr("type"), Some("result"));
        cluster.restart(round).await;
        let target = elsewhere(round, carol_node);
        for user in [&mut alice, &mut bob] {
            if user.node == round {
                user.read_until_closed().await;
                user.reconnect(&cluster, target).await;
            }
        }
        if carol_node == round {
            carol = Session::login(cluster.node(target), "carol", "c").await;
            carol_node = target;
        }
        for user in [&mut alice, &mut bob] {
            user.read_until_all(&sent).await;
        }
    }
    for user in [&alice, &bob] {
        assert_eq!(user.distinct(), sent, "{}", user.user);
        eprintln!(
            "{}: {} messages sent, {} received ({} again), resumed {} failed {}",
            user.user,
            sent.len(),
            user.bodies.len(),
            user.bodies.len() - sent.len(),
            user.resumed,
            user.failed
        );
    }
    cluster.finish().await;
}

/// Messages keep coming (every few milliseconds, from a node that stays up) while the
/// recipient's node stops and starts again; the recipient reconnects to the sender's node.
/// Every message sent reaches it.
#[tokio::test]
async fn messages_sent_while_the_recipients_node_restarts_are_not_lost() {
    let Some(mut cluster) = TestCluster::start(3).await else {
        return;
    };
    cluster.add_users(&["alice", "carol"]).await;
    let mut alice = SmUser::login(&cluster, 1, "alice").await;
    cluster
        .until_available_everywhere("alice@localhost/r", 0)
        .await;
    let mut carol = cluster.login(3, "carol", "c").await;
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sender = tokio::spawn(async move {
        let mut sent = BTreeSet::new();
        for k in 0.. {
            if stop_rx.try_recv().is_ok() {
                break;
            }
            let text = format!("live {k}");
            carol
                .send(&format!(
                    "<message to='alice@localhost' type='chat'><body>{text}</body></message>"
                ))
                .await;
            sent.insert(text);
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let answer = carol
            .iq("<iq type='get' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
            .await;
        assert_eq!(answer.attr("type"), Some("result"));
        sent
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // Node 1 restarts under the traffic; Alice reads what it still sends, then moves.
    let restart = cluster.restart(1);
    let read = alice.read_until_closed();
    let ((), ()) = tokio::join!(restart, read);
    alice.reconnect(&cluster, 3).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let _ = stop_tx.send(());
    let sent = sender.await.expect("sender");
    alice.read_until_all(&sent).await;
    eprintln!(
        "alice: {} messages sent, {} received ({} again), resumed {} failed {}",
        sent.len(),
        alice.bodies.len(),
        alice.bodies.len() - sent.len(),
        alice.resumed,
        alice.failed
    );
    cluster.finish().await;
}
