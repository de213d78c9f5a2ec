//! Node identity: every node sharing a database has its own number, kept across restarts, and
//! it is part of every sortable id the node hands out (here: XEP-0359 stanza-ids of the
//! archive), so two nodes never make the same id.

mod common;

use common::xmpp::Session;
use common::TestServer;
use corvid::ids::IdGenerator;
use minidom::Element;

fn stanza_id_by(message: &Element, by: &str) -> Option<i64> {
    message
        .children()
        .find(|c| c.is("stanza-id", "urn:xmpp:sid:0") && c.attr("by") == Some(by))
        .and_then(|c| c.attr("id"))
        .and_then(|id| id.parse().ok())
}

/// alice sends bob one message through `server`; the archive id bob's copy carries.
async fn archive_id_of_a_message(server: &TestServer, body: &str) -> i64 {
    let mut alice = Session::online(server, "alice", body).await;
    let mut bob = Session::online(server, "bob", body).await;
    alice
        .send(&format!(
            "<message to='{}' type='chat'><body>{body}</body></message>",
            bob.jid
        ))
        .await;
    let got = bob
        .expect(|el| el.get_child("body", "jabber:client").map(|b| b.text()) == Some(body.into()))
        .await;
    stanza_id_by(&got, "bob@localhost").expect("a stanza-id by bob's archive")
}

#[tokio::test]
async fn nodes_sharing_a_database_make_different_ids_and_keep_their_number() {
    let alpha = TestServer::start_with(|c| c.cluster.node = Some("alpha".into())).await;
    alpha.add_user("alice").await;
    alpha.add_user("bob").await;
    let shared = alpha.config().storage.url.clone();
    let beta = {
        let shared = shared.clone();
        TestServer::start_with(move |c| {
            c.cluster.node = Some("beta".into());
            c.storage.url = shared;
        })
        .await
    };
    let alpha_number = alpha
        .storage()
        .nodes
        .node_number("alpha", corvid::ids::NODES)
        .await
        .expect("storage")
        .expect("a number");
    let beta_number = beta
        .storage()
        .nodes
        .node_number("beta", corvid::ids::NODES)
        .await
        .expect("storage")
        .expect("a number");
    assert_ne!(alpha_number, beta_number);

    let from_alpha = archive_id_of_a_message(&alpha, "via-alpha").await;
    let from_beta = archive_id_of_a_message(&beta, "via-beta").await;
    assert_eq!(IdGenerator::node_of(from_alpha), alpha_number);
    assert_eq!(IdGenerator::node_of(from_beta), beta_number);

    // Restarted on the same database, alpha is still alpha.
    alpha.server.shutdown().await;
    let again = {
        let shared = shared.clone();
        TestServer::start_with(move |c| {
            c.cluster.node = Some("alpha".into());
            c.storage.url = shared;
        })
        .await
    };
    let after_restart = archive_id_of_a_message(&again, "alpha-again").await;
    assert_eq!(IdGenerator::node_of(after_restart), alpha_number);
    assert!(
        after_restart > from_alpha,
        "ids keep their order across the restart"
    );
}
