//! Rate limits over real sockets (README "Limits"): subscription requests per account,
//! groupchat messages per occupant, and detached XEP-0198 sessions per account. Each limit is
//! set low here so that a handful of stanzas reach it; what is counted is what arrived, never
//! how fast.

mod common;

use std::time::Duration;

use common::xmpp::{error_condition, is_presence, Session};
use common::*;
use minidom::Element;

const SM: &str = "urn:xmpp:sm:3";
const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
const MUC: &str = "http://jabber.org/protocol/muc";
const ROOM: &str = "flood@conference.localhost";

/// The `type` of the `<error/>` of an error stanza.
fn error_type(el: &Element) -> Option<&str> {
    el.get_child("error", "jabber:client")
        .and_then(|e| e.attr("type"))
}

fn is_policy_violation(el: &Element) -> bool {
    el.attr("type") == Some("error")
        && error_condition(el).as_deref() == Some("policy-violation")
        && error_type(el) == Some("wait")
        && el
            .get_child("error", "jabber:client")
            .is_some_and(|e| e.has_child("policy-violation", STANZAS))
}

fn body_text(el: &Element) -> Option<String> {
    el.get_child("body", "jabber:client").map(|b| b.text())
}

#[tokio::test]
async fn subscription_requests_past_the_burst_are_refused_and_go_nowhere() {
    let t = TestServer::start_with(|c| {
        // Three at once, then one a minute: nothing refills while the test runs.
        c.limits.subscription_requests_per_minute = 1;
        c.limits.subscription_request_burst = 3;
    })
    .await;
    for user in ["alice", "bob", "c0", "c1", "c2", "c3", "c4"] {
        t.add_user(user).await;
    }
    let mut alice = Session::online(&t, "alice", "r").await;
    let mut c3 = Session::online(&t, "c3", "r").await;

    for i in 0..4 {
        alice
            .send(&format!("<presence type='subscribe' to='c{i}@localhost'/>"))
            .await;
    }
    let seen = alice.drain().await;
    let refused: Vec<&Element> = seen
        .iter()
        .filter(|el| el.attr("type") == Some("error"))
        .collect();
    assert_eq!(refused.len(), 1, "one refusal: {seen:?}");
    assert!(is_policy_violation(refused[0]), "{refused:?}");
    assert_eq!(refused[0].name(), "presence");
    assert_eq!(refused[0].attr("from"), Some("c3@localhost"));

    // Not delivered: whatever alice sent c3 arrives before her next message to c3.
    let marker = Session::marker();
    alice.send_marker("c3@localhost", &marker).await;
    let at_c3 = c3.until_marker(&marker).await;
    assert!(
        !at_c3.iter().any(|el| el.attr("type") == Some("subscribe")),
        "{at_c3:?}"
    );
    // Not stored: no pending request at c3, no pending-out item at alice.
    let roster = &t.storage().roster;
    assert!(!roster
        .has_pending_in(&account("c3"), "alice@localhost")
        .await
        .expect("pending"));
    assert!(roster
        .roster_item(&account("alice"), "c3@localhost")
        .await
        .expect("item")
        .is_none_or(|item| !item.ask));
    // The three within the burst were stored.
    for i in 0..3 {
        assert!(roster
            .has_pending_in(&account(&format!("c{i}")), "alice@localhost")
            .await
            .expect("pending"));
    }

    // Answers and pre-approvals are not requests: never limited.
    alice
        .send("<presence type='subscribed' to='c4@localhost'/>")
        .await;
    alice
        .send("<presence type='unsubscribe' to='c0@localhost'/>")
        .await;
    alice
        .send("<presence type='unsubscribed' to='c1@localhost'/>")
        .await;
    let seen = alice.drain().await;
    assert!(
        !seen.iter().any(|el| el.attr("type") == Some("error")),
        "{seen:?}"
    );
    // Another account has a bucket of its own.
    let mut bob = Session::online(&t, "bob", "r").await;
    bob.send("<presence type='subscribe' to='c3@localhost'/>")
        .await;
    let seen = bob.drain().await;
    assert!(
        !seen.iter().any(|el| el.attr("type") == Some("error")),
        "{seen:?}"
    );
    c3.expect(|el| is_presence(el, Some("subscribe"), "bob@localhost"))
        .await;
}

async fn join(s: &mut Session, nick: &str) {
    s.send(&format!(
        "<presence to='{ROOM}/{nick}'><x xmlns='{MUC}'/></presence>"
    ))
    .await;
    s.expect(|el| el.name() == "message" && el.has_child("subject", "jabber:client"))
        .await;
}

#[tokio::test]
async fn a_flooding_occupant_is_refused_past_its_burst_and_others_still_speak() {
    const SENT: usize = 20;
    const BURST: usize = 3;
    let t = TestServer::start_with(|c| {
        c.muc.occupant_messages_per_second = 1;
        c.muc.occupant_message_burst = BURST as u32;
    })
    .await;
    t.add_user("alice").await;
    t.add_user("bob").await;
    let mut alice = Session::online(&t, "alice", "r").await;
    let mut bob = Session::online(&t, "bob", "r").await;
    join(&mut alice, "Alice").await;
    let owner = alice
        .iq(&format!(
            "<iq to='{ROOM}' type='set'><query xmlns='http://jabber.org/protocol/muc#owner'>\
             <x xmlns='jabber:x:data' type='submit'/></query></iq>"
        ))
        .await;
    assert_eq!(owner.attr("type"), Some("result"));
    join(&mut bob, "Bob").await;

    // All in one write, so the server reads them back to back.
    let mut flood = String::new();
    for i in 0..SENT {
        flood.push_str(&format!(
            "<message to='{ROOM}' type='groupchat' id='f{i}'><body>f{i}</body></message>"
        ));
    }
    alice.send(&flood).await;
    alice
        .send(&format!(
            "<message to='{ROOM}' type='groupchat' id='end'><body>end-alice</body></message>"
        ))
        .await;
    // Alice sees, in order, either her message echoed or an error for it; the last one may be
    // refused too, so she is asked for a marker of her own afterwards.
    let mut echoed = Vec::new();
    let mut refused = Vec::new();
    for el in alice.drain().await {
        if el.name() != "message" {
            continue;
        }
        if el.attr("type") == Some("error") {
            assert!(is_policy_violation(&el), "{el:?}");
            assert_eq!(el.attr("from"), Some(ROOM));
            refused.push(el.attr("id").unwrap_or_default().to_owned());
        } else if el.attr("type") == Some("groupchat") {
            echoed.extend(body_text(&el));
        }
    }
    let echoed: Vec<String> = echoed.into_iter().filter(|b| b != "end-alice").collect();
    assert!(!refused.is_empty(), "some refused: echoed {echoed:?}");
    assert_eq!(
        echoed.len() + refused.iter().filter(|id| *id != "end").count(),
        SENT
    );
    // The burst went through whole; then a token now and then, never all of them.
    let first: Vec<String> = (0..BURST).map(|i| format!("f{i}")).collect();
    assert_eq!(echoed[..BURST], first[..], "{echoed:?}");
    assert!(echoed.len() < SENT, "{echoed:?}");

    // Bob, unaffected, speaks; he got exactly what alice saw echoed, nothing refused.
    bob.send(&format!(
        "<message to='{ROOM}' type='groupchat'><body>bob-speaks</body></message>"
    ))
    .await;
    let mut at_bob = Vec::new();
    loop {
        let el = bob.next().await;
        assert_ne!(el.attr("type"), Some("error"), "{el:?}");
        let Some(body) = body_text(&el) else { continue };
        if body == "bob-speaks" {
            break;
        }
        if body != "end-alice" {
            at_bob.push(body);
        }
    }
    assert_eq!(at_bob, echoed);
    alice
        .expect(|el| body_text(el).as_deref() == Some("bob-speaks"))
        .await;

    // Nor archived: the room's archive holds what was broadcast.
    let answer = alice
        .iq(&format!(
            "<iq to='{ROOM}' type='set'><query xmlns='urn:xmpp:mam:2' queryid='q'/></iq>"
        ))
        .await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    let archived: Vec<String> = alice
        .drain()
        .await
        .iter()
        .filter_map(|el| {
            el.get_child("result", "urn:xmpp:mam:2")
                .and_then(|r| r.get_child("forwarded", "urn:xmpp:forward:0"))
                .and_then(|f| f.get_child("message", "jabber:client"))
                .and_then(body_text)
        })
        .filter(|b| b.starts_with('f'))
        .collect();
    assert_eq!(archived, echoed);

    // The budget belongs to the occupant: leaving drops it, and a new one starts full.
    alice
        .send(&format!("<presence to='{ROOM}/Alice' type='unavailable'/>"))
        .await;
    join(&mut alice, "Alice").await;
    for i in 0..BURST {
        alice
            .send(&format!(
                "<message to='{ROOM}' type='groupchat'><body>again{i}</body></message>"
            ))
            .await;
    }
    let seen = alice.drain().await;
    assert!(
        !seen.iter().any(|el| el.attr("type") == Some("error")),
        "{seen:?}"
    );
}

/// A raw client with SM enabled and resumable.
async fn resumable(t: &TestServer, user: &str, resource: &str) -> (Raw, String, String) {
    let (mut raw, jid) = Raw::login(t.c2s(), t.tls_config(), user, resource).await;
    let id = raw.enable_resumption().await;
    (raw, jid, id)
}

async fn resume(t: &TestServer, user: &str, previd: &str) -> Element {
    let (mut raw, _) = Raw::authenticated(t.c2s(), t.tls_config(), user).await;
    raw.resume(previd, 0).await
}

#[tokio::test]
async fn a_second_detached_session_ends_the_first_past_the_limit() {
    let t = TestServer::start_with(|c| c.limits.max_detached_sessions_per_account = 1).await;
    t.add_user("alice").await;
    t.add_user("bob").await;
    t.make_mutual("alice", "bob").await;
    let mut bob = Session::online(&t, "bob", "desk").await;
    let (mut one, one_jid, one_id) = resumable(&t, "alice", "one").await;
    one.write("<presence/>").await;
    bob.expect(|el| is_presence(el, None, &one_jid)).await;
    // Not available, so that what "one" leaves behind has no resource to go to but storage.
    let (two, two_jid, two_id) = resumable(&t, "alice", "two").await;

    drop(one);
    t.until_detached(&one_jid).await;
    bob.send_marker(&one_jid, "for-one").await;
    // Under the limit, "one" waits; bob sees nothing yet.
    let seen = bob.drain().await;
    assert!(
        !seen
            .iter()
            .any(|el| is_presence(el, Some("unavailable"), &one_jid)),
        "{seen:?}"
    );

    drop(two);
    t.until_detached(&two_jid).await;
    // One detached session too many: the older one ends, as at its resumption timeout.
    bob.expect(|el| is_presence(el, Some("unavailable"), &one_jid))
        .await;
    let failed = resume(&t, "alice", &one_id).await;
    assert!(failed.is("failed", SM), "{failed:?}");
    let resumed = resume(&t, "alice", &two_id).await;
    assert!(resumed.is("resumed", SM), "{resumed:?}");

    // Its queue went to offline storage.
    let mut stored = Vec::new();
    for _ in 0..1000 {
        stored = t
            .storage()
            .offline
            .peek(&account("alice"))
            .await
            .expect("peek");
        if !stored.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let bodies: Vec<String> = stored
        .iter()
        .map(|m| body(&m.stanza.parse::<Element>().expect("stored stanza parses")))
        .collect();
    assert_eq!(bodies, ["for-one"]);
}
