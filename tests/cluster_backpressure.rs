//! A cluster link whose queue towards the other nodes fills faster than Redis takes it holds
//! the sending session back (backpressure), instead of handling what does not fit as
//! undeliverable: a burst from one client to a session on another node arrives whole, live
//! and in order, with the queue limit set tiny so that the burst overflows it many times.
//!
//! Two nodes in this process on one PostgreSQL schema and one random Redis prefix; skipped
//! when `CORVID_TEST_POSTGRES` is not set.

mod common;

use std::time::Duration;

use common::cluster::{start_one_node, LOCAL_REDIS};
use common::xmpp::Session;
use common::{body, WAIT};

const BURST: usize = 1500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_link_queue_holds_the_sender_back_and_loses_nothing() {
    let Ok(url) = std::env::var("CORVID_TEST_POSTGRES") else {
        eprintln!("skipped: CORVID_TEST_POSTGRES is not set");
        return;
    };
    let suffix: u64 = rand::random();
    let schema = format!("corvid_cbp_{suffix:016x}");
    let prefix = format!("t{suffix:016x}");
    let adjust = |c: &mut corvid::config::Config| {
        c.cluster.queue_limit = 4;
        c.limits.stanza_rate_per_session = 0;
        c.limits.bytes_rate_per_session = 0;
    };
    let one = start_one_node(
        &url,
        &schema,
        &prefix,
        "one",
        [127, 0, 0, 71],
        LOCAL_REDIS,
        adjust,
    )
    .await;
    let two = start_one_node(
        &url,
        &schema,
        &prefix,
        "two",
        [127, 0, 0, 72],
        LOCAL_REDIS,
        adjust,
    )
    .await;
    for user in ["alice", "bob"] {
        one.add_user(user).await;
    }
    let mut alice = Session::login(&one, "alice", "a").await;
    let mut bob = Session::login(&two, "bob", "b").await;
    let bob_jid = bob.jid.clone();
    let deadline = tokio::time::Instant::now() + WAIT;
    let full = jid::FullJid::new(&bob_jid).expect("full jid");
    while !one.server.ctx.router.is_bound(&full) {
        assert!(tokio::time::Instant::now() < deadline, "bob never seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        loop {
            let el = bob.next().await;
            if el.name() != "message" {
                continue;
            }
            let text = body(&el);
            if text == "done" {
                return got;
            }
            let delayed = el.has_child("delay", "urn:xmpp:delay");
            got.push((text, delayed));
        }
    });
    // In writes of 100 stanzas: far more than the link's queue holds at once.
    for chunk in 0..BURST / 100 {
        let mut xml = String::new();
        for i in chunk * 100 + 1..=(chunk + 1) * 100 {
            xml.push_str(&format!(
                "<message to='{bob_jid}' type='chat' id='b{i}'><body>{i}</body></message>"
            ));
        }
        alice.send(&xml).await;
    }
    alice.send_marker(&bob_jid, "done").await;
    let got = tokio::time::timeout(WAIT * 2, reader)
        .await
        .expect("bob got the burst in time")
        .expect("reader");
    let expected: Vec<(String, bool)> = (1..=BURST).map(|i| (i.to_string(), false)).collect();
    let lost = expected.iter().filter(|e| !got.contains(e)).count();
    assert_eq!(lost, 0, "{lost} of {BURST} not delivered live");
    assert_eq!(got, expected, "live and in order");
    let errors: Vec<_> = alice
        .drain()
        .await
        .into_iter()
        .filter(|el| el.attr("type") == Some("error"))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    one.server.shutdown().await;
    two.server.shutdown().await;
    common::drop_schema(&schema).await;
}
