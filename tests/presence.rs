//! RFC 6121 §3–4 end to end over real sockets: subscribing and approving, presence to
//! contacts and own resources, probes (also for an offline contact, with last activity),
//! directed presence and its cleanup, abrupt disconnects, priorities, and XEP-0012.

mod common;

use common::xmpp::{error_condition, is_presence, is_roster_push, pushed_item, Session};
use common::{account, TestServer};
use corvid::storage::Subscription;

const ALICE: &str = "alice@localhost";
const BOB: &str = "bob@localhost";

async fn server_with(users: &[&str]) -> TestServer {
    let server = TestServer::start().await;
    for user in users {
        server.add_user(user).await;
    }
    server
}

fn is_available_from(from: &str) -> impl Fn(&minidom::Element) -> bool + '_ {
    move |el| is_presence(el, None, from)
}

#[tokio::test]
async fn subscribe_approve_and_see_each_other() {
    let server = server_with(&["alice", "bob"]).await;
    let mut alice = Session::online(&server, "alice", "phone").await;

    alice
        .send(&format!("<presence type='subscribe' to='{BOB}'/>"))
        .await;
    let push = alice.expect(is_roster_push).await;
    let item = pushed_item(&push).expect("item");
    assert_eq!(item.attr("jid"), Some(BOB));
    assert_eq!(item.attr("ask"), Some("subscribe"));

    // Bob was offline: the request waits and is delivered when he comes online (§3.1.3).
    let mut bob = Session::online(&server, "bob", "laptop").await;
    let request = bob
        .expect(|el| is_presence(el, Some("subscribe"), ALICE))
        .await;
    assert_eq!(request.attr("to"), Some(BOB));

    bob.send(&format!("<presence type='subscribed' to='{ALICE}'/>"))
        .await;
    let marker = Session::marker();
    bob.send_marker(&alice.jid.clone(), &marker).await;
    let seen = alice.until_marker(&marker).await;
    assert!(
        seen.iter()
            .any(|el| is_presence(el, Some("subscribed"), BOB)),
        "{seen:?}"
    );
    assert!(seen.iter().any(|el| is_roster_push(el)
        && pushed_item(el).and_then(|i| i.attr("subscription")) == Some("to")));
    // Alice sees Bob at once (§3.1.5), from his full JID.
    assert!(seen.iter().any(is_available_from(&bob.jid)), "{seen:?}");

    bob.send(&format!("<presence type='subscribe' to='{ALICE}'/>"))
        .await;
    alice
        .expect(|el| is_presence(el, Some("subscribe"), BOB))
        .await;
    alice
        .send(&format!("<presence type='subscribed' to='{BOB}'/>"))
        .await;
    bob.expect(|el| is_presence(el, Some("subscribed"), ALICE))
        .await;
    bob.expect(is_available_from(&alice.jid)).await;
    for (user, contact) in [("alice", BOB), ("bob", ALICE)] {
        let item = server
            .storage()
            .roster
            .roster_item(&account(user), contact)
            .await
            .expect("read")
            .expect("item");
        assert_eq!(item.subscription, Subscription::Both, "{user}");
    }

    // A second resource of Bob: Alice sees it come online, and it gets Alice's presence
    // from the probe (§4.2).
    let mut bob2 = Session::online(&server, "bob", "phone").await;
    alice.expect(is_available_from(&bob2.jid)).await;
    bob2.expect(is_available_from(&alice.jid)).await;
    // and its sibling's presence
    bob2.expect(is_available_from(&bob.jid)).await;

    // A change reaches both of Bob's resources (§4.4).
    alice.send("<presence><show>away</show></presence>").await;
    for session in [&mut bob, &mut bob2] {
        let away = session.expect(is_available_from(&alice.jid)).await;
        assert_eq!(
            away.get_child("show", "jabber:client")
                .map(|s| s.text())
                .as_deref(),
            Some("away")
        );
    }

    // Bob's phone drops off without a word: Alice hears it is gone (§4.5).
    let bob2_jid = bob2.jid.clone();
    drop(bob2);
    alice
        .expect(|el| is_presence(el, Some("unavailable"), &bob2_jid))
        .await;

    bob.send("<presence type='unavailable'><status>bye</status></presence>")
        .await;
    let gone = alice
        .expect(|el| is_presence(el, Some("unavailable"), &bob.jid))
        .await;
    assert_eq!(
        gone.get_child("status", "jabber:client")
            .map(|s| s.text())
            .as_deref(),
        Some("bye")
    );
}

#[tokio::test]
async fn probe_of_an_offline_contact_answers_unavailable_with_last_activity() {
    let server = server_with(&["alice", "bob", "carol"]).await;
    server.make_mutual("alice", "bob").await;

    let mut bob = Session::online(&server, "bob", "r").await;
    bob.send("<presence type='unavailable'><status>gone fishing</status></presence>")
        .await;
    let _ = bob.drain().await;

    let mut alice = Session::online(&server, "alice", "r").await;
    let last = alice
        .expect(|el| is_presence(el, Some("unavailable"), BOB))
        .await;
    assert_eq!(
        last.get_child("status", "jabber:client")
            .map(|s| s.text())
            .as_deref(),
        Some("gone fishing")
    );
    assert!(last
        .get_child("query", "jabber:iq:last")
        .and_then(|q| q.attr("seconds"))
        .is_some());

    // XEP-0012: a subscribed contact may ask; the answer carries the status.
    let answer = alice
        .iq(&format!(
            "<iq type='get' to='{BOB}'><query xmlns='jabber:iq:last'/></iq>"
        ))
        .await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    let query = answer.get_child("query", "jabber:iq:last").expect("query");
    let seconds: u64 = query
        .attr("seconds")
        .expect("seconds")
        .parse()
        .expect("number");
    assert!(seconds < 60);
    assert_eq!(query.text(), "gone fishing");

    // A stranger may not.
    let mut carol = Session::online(&server, "carol", "r").await;
    let answer = carol
        .iq(&format!(
            "<iq type='get' to='{BOB}'><query xmlns='jabber:iq:last'/></iq>"
        ))
        .await;
    assert_eq!(error_condition(&answer).as_deref(), Some("forbidden"));
    // The server answers with its uptime.
    let answer = carol
        .iq("<iq type='get' to='localhost'><query xmlns='jabber:iq:last'/></iq>")
        .await;
    assert_eq!(answer.attr("type"), Some("result"));
    // A stranger's probe reveals nothing: the marker comes first.
    carol
        .send(&format!("<presence type='probe' to='{ALICE}'/>"))
        .await;
    let seen = carol.drain().await;
    assert!(
        !seen
            .iter()
            .any(|el| el.name() == "presence"
                && el.attr("from").is_some_and(|f| f.starts_with(ALICE))),
        "{seen:?}"
    );
}

#[tokio::test]
async fn directed_presence_gets_unavailable_when_the_session_ends() {
    let server = server_with(&["alice", "carol"]).await;
    let mut alice = Session::online(&server, "alice", "r").await;
    let mut carol = Session::online(&server, "carol", "r").await;

    alice
        .send("<presence to='carol@localhost'><status>hi carol</status></presence>")
        .await;
    carol.expect(is_available_from(&alice.jid)).await;

    // A broadcast does not reach a directed-presence recipient.
    alice.send("<presence><show>dnd</show></presence>").await;
    let _ = alice.drain().await;
    let marker = Session::marker();
    alice.send_marker(&carol.jid.clone(), &marker).await;
    let seen = carol.until_marker(&marker).await;
    assert!(seen.is_empty(), "{seen:?}");

    let alice_jid = alice.jid.clone();
    drop(alice);
    carol
        .expect(|el| is_presence(el, Some("unavailable"), &alice_jid))
        .await;
}

#[tokio::test]
async fn negative_priority_keeps_bare_messages_away_until_it_turns_positive() {
    let server = server_with(&["alice", "bob"]).await;
    let mut alice = Session::login(&server, "alice", "r").await;
    alice
        .send("<presence><priority>-1</priority></presence>")
        .await;
    let _ = alice.drain().await;
    let mut bob = Session::online(&server, "bob", "r").await;

    bob.send(&format!(
        "<message to='{ALICE}' type='chat'><body>held</body></message>"
    ))
    .await;
    let _ = bob.drain().await;
    let seen = alice.drain().await;
    assert!(!seen.iter().any(|el| el.name() == "message"), "{seen:?}");

    // Raising the priority makes the session reachable: the stored message arrives.
    alice
        .send("<presence><priority>5</priority></presence>")
        .await;
    let held = alice
        .expect(|el| el.name() == "message" && el.get_child("body", "jabber:client").is_some())
        .await;
    assert_eq!(
        held.get_child("body", "jabber:client")
            .map(|b| b.text())
            .as_deref(),
        Some("held")
    );
}

#[tokio::test]
async fn unsubscribed_revokes_and_hides_presence() {
    let server = server_with(&["alice", "bob"]).await;
    server.make_mutual("alice", "bob").await;
    let mut alice = Session::online(&server, "alice", "r").await;
    let mut bob = Session::online(&server, "bob", "r").await;
    alice.expect(is_available_from(&bob.jid)).await;

    bob.send(&format!("<presence type='unsubscribed' to='{ALICE}'/>"))
        .await;
    alice
        .expect(|el| is_presence(el, Some("unsubscribed"), BOB))
        .await;
    alice
        .expect(|el| is_presence(el, Some("unavailable"), &bob.jid))
        .await;
    let item = server
        .storage()
        .roster
        .roster_item(&account("alice"), BOB)
        .await
        .expect("read")
        .expect("item");
    assert_eq!(item.subscription, Subscription::From);

    // Bob's next change no longer reaches Alice.
    bob.send("<presence><show>away</show></presence>").await;
    let _ = bob.drain().await;
    let marker = Session::marker();
    bob.send_marker(&alice.jid.clone(), &marker).await;
    let seen = alice.until_marker(&marker).await;
    assert!(!seen.iter().any(|el| el.name() == "presence"), "{seen:?}");
}

#[tokio::test]
async fn removing_a_contact_cancels_both_subscriptions() {
    let server = server_with(&["alice", "bob"]).await;
    server.make_mutual("alice", "bob").await;
    let mut alice = Session::online(&server, "alice", "r").await;
    let mut bob = Session::online(&server, "bob", "r").await;
    bob.expect(is_available_from(&alice.jid)).await;

    let answer = alice
        .iq(&format!(
            "<iq type='set'><query xmlns='jabber:iq:roster'><item jid='{BOB}' subscription='remove'/></query></iq>"
        ))
        .await;
    assert_eq!(answer.attr("type"), Some("result"));
    bob.expect(|el| is_presence(el, Some("unsubscribe"), ALICE))
        .await;
    bob.expect(|el| is_presence(el, Some("unsubscribed"), ALICE))
        .await;
    bob.expect(|el| is_presence(el, Some("unavailable"), &alice.jid))
        .await;
    let item = server
        .storage()
        .roster
        .roster_item(&account("bob"), ALICE)
        .await
        .expect("read")
        .expect("item");
    assert_eq!(item.subscription, Subscription::None);
    assert!(server
        .storage()
        .roster
        .roster_item(&account("alice"), BOB)
        .await
        .expect("read")
        .is_none());
}

#[tokio::test]
async fn subscribing_to_a_nonexistent_user_is_refused() {
    let server = server_with(&["alice"]).await;
    let mut alice = Session::online(&server, "alice", "r").await;
    alice
        .send("<presence type='subscribe' to='ghost@localhost'/>")
        .await;
    alice
        .expect(|el| is_presence(el, Some("unsubscribed"), "ghost@localhost"))
        .await;
}
