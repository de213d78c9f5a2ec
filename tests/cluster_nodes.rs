//! Two nodes of a cluster on one PostgreSQL schema and one Redis prefix: a chat crosses them;
//! a node without Redis still serves its own users; federation reaches a user on either node,
//! and a dialback key one node made is verified by the other.

mod common;

use common::cluster::{start_one_node, LOCAL_REDIS};
use common::federation::{configure, free_port, write_certs, Trust};
use common::xmpp::Session;
use common::TestServer;

#[tokio::test]
async fn a_message_crosses_two_nodes() {
    let Ok(url) = std::env::var("CORVID_TEST_POSTGRES") else {
        eprintln!("skipped: CORVID_TEST_POSTGRES is not set");
        return;
    };
    let suffix: u64 = rand::random();
    let schema = format!("corvid_cl_{suffix:016x}");
    let prefix = format!("t{suffix:016x}");
    let one = start_one_node(
        &url,
        &schema,
        &prefix,
        "one",
        [127, 0, 0, 31],
        LOCAL_REDIS,
        |_| {},
    )
    .await;
    let two = start_one_node(
        &url,
        &schema,
        &prefix,
        "two",
        [127, 0, 0, 32],
        LOCAL_REDIS,
        |_| {},
    )
    .await;
    one.add_user("alice").await;
    one.add_user("bob").await;
    let mut alice = Session::login(&one, "alice", "a").await;
    let mut bob = Session::login(&two, "bob", "b").await;
    bob.send("<presence/>").await;
    let bob_jid: jid::FullJid = bob.jid.parse().expect("jid");
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while !one.server.ctx.router.is_bound(&bob_jid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob never visible on node one"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    alice
        .send(&format!(
            "<message to='{}' type='chat'><body>across</body></message>",
            bob.jid
        ))
        .await;
    let got = bob
        .expect(|el| el.name() == "message" && common::body(el) == "across")
        .await;
    assert_eq!(got.attr("from"), Some(alice.jid.as_str()));
    // To the bare JID too.
    alice
        .send("<message to='bob@localhost' type='chat'><body>bare</body></message>")
        .await;
    bob.expect(|el| el.name() == "message" && common::body(el) == "bare")
        .await;
    // What an operator watches: this node reaches Redis and sees the other one alive.
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        let text = one.server.ctx.router.metrics().render();
        if text.contains("corvid_cluster_connected 1")
            && text.contains("corvid_cluster_nodes_alive 1")
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    common::drop_schema(&schema).await;
}

/// Redis is not there when the node starts (nothing listens on its port): the node starts
/// anyway and serves its own users; it is the cross-node part that waits for Redis.
#[tokio::test]
async fn a_node_without_redis_serves_its_own_sessions() {
    let Ok(url) = std::env::var("CORVID_TEST_POSTGRES") else {
        eprintln!("skipped: CORVID_TEST_POSTGRES is not set");
        return;
    };
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let suffix: u64 = rand::random();
    let schema = format!("corvid_cl_{suffix:016x}");
    let alone = start_one_node(
        &url,
        &schema,
        &format!("t{suffix:016x}"),
        "alone",
        [127, 0, 0, 33],
        &format!("redis://127.0.0.1:{port}/"),
        |_| {},
    )
    .await;
    alone.add_user("alice").await;
    alone.add_user("bob").await;
    let mut alice = Session::login(&alone, "alice", "a").await;
    let mut bob = Session::login(&alone, "bob", "b").await;
    bob.send("<presence/>").await;
    alice
        .send(&format!(
            "<message to='{}' type='chat'><body>local</body></message>",
            bob.jid
        ))
        .await;
    bob.expect(|el| el.name() == "message" && common::body(el) == "local")
        .await;
    let text = alone.server.ctx.router.metrics().render();
    assert!(text.contains("corvid_cluster_connected 0"), "{text}");
    common::drop_schema(&schema).await;
}

/// `b.test` (another server) routes `a.test` to node one; alice@a.test is on node two. Bob's
/// message enters at node one and crosses to node two; alice's answer leaves from node two,
/// whose dialback key `b.test` checks by connecting to `a.test`, that is, to node one: the
/// key verifies there because every node derives keys from the secret in the database.
#[tokio::test]
async fn federation_reaches_any_node_and_dialback_verifies_on_another() {
    let Ok(url) = std::env::var("CORVID_TEST_POSTGRES") else {
        eprintln!("skipped: CORVID_TEST_POSTGRES is not set");
        return;
    };
    const A: &str = "a.test";
    const B: &str = "b.test";
    let (one_ip, two_ip, b_ip) = ([127, 0, 0, 41], [127, 0, 0, 42], [127, 0, 0, 43]);
    let certs = tempfile::tempdir().expect("certs");
    // Self-signed: nobody trusts them, so only dialback authenticates.
    let written = write_certs(certs.path(), Trust::SelfSigned, &[A, B]);
    let (one_port, two_port, b_port) = (free_port(one_ip), free_port(two_ip), free_port(b_ip));
    let suffix: u64 = rand::random();
    let schema = format!("corvid_cl_{suffix:016x}");
    let prefix = format!("t{suffix:016x}");
    let redis = "redis://127.0.0.1:6379/";
    let dir = certs.path();
    let one = start_one_node(&url, &schema, &prefix, "one", one_ip, redis, |c| {
        configure(c, dir, &written, A, one_ip, one_port, (B, b_ip, b_port));
    })
    .await;
    let two = start_one_node(&url, &schema, &prefix, "two", two_ip, redis, |c| {
        configure(c, dir, &written, A, two_ip, two_port, (B, b_ip, b_port));
    })
    .await;
    let b = TestServer::start_with(|c| {
        configure(c, dir, &written, B, b_ip, b_port, (A, one_ip, one_port));
        c.c2s.bind = b_ip.into();
    })
    .await;
    one.add_user("alice@a.test").await;
    b.add_user("bob@b.test").await;
    let mut alice = Session::online_on(&two, A, "alice", "pc").await;
    let mut bob = Session::online_on(&b, B, "bob", "phone").await;
    let alice_jid: jid::FullJid = alice.jid.parse().expect("jid");
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while !one.server.ctx.router.is_bound(&alice_jid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "alice never visible on node one"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    bob.send("<message to='alice@a.test/pc' type='chat'><body>from b</body></message>")
        .await;
    let got = alice
        .expect(|el| el.name() == "message" && common::body(el) == "from b")
        .await;
    assert_eq!(got.attr("from"), Some("bob@b.test/phone"));
    alice
        .send("<message to='bob@b.test/phone' type='chat'><body>from a</body></message>")
        .await;
    let got = bob
        .expect(|el| el.name() == "message" && common::body(el) == "from a")
        .await;
    assert_eq!(got.attr("from"), Some("alice@a.test/pc"));
    common::drop_schema(&schema).await;
}
