//! A XEP-0045 room with occupants on all three nodes of a cluster (see `common::cluster`):
//! the room is served by one node, the others forward to it, and every occupant sees the
//! joins, the messages and the leaving as on one node (tests/muc.rs).
//!
//! Skipped without `CORVID_TEST_POSTGRES`; Redis is `CORVID_TEST_REDIS` or 127.0.0.1:6379.

mod common;

use common::cluster::{expect, TestCluster};
use common::xmpp::{error_condition, Session};
use minidom::Element;

const MUC: &str = "http://jabber.org/protocol/muc";
const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const SERVICE: &str = "conference.localhost";

fn codes(el: &Element) -> Vec<u16> {
    el.get_child("x", MUC_USER)
        .map(|x| {
            x.children()
                .filter(|c| c.name() == "status")
                .filter_map(|c| c.attr("code").and_then(|v| v.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

fn is_from(el: &Element, name: &str, from: &str) -> bool {
    el.name() == name && el.attr("from") == Some(from)
}

fn is_subject(el: &Element) -> bool {
    el.name() == "message" && el.has_child("subject", "jabber:client")
}

fn groupchat_body(el: &Element) -> Option<String> {
    (el.name() == "message" && el.attr("type") == Some("groupchat"))
        .then(|| el.get_child("body", "jabber:client").map(|b| b.text()))
        .flatten()
}

/// Sends the join presence and returns the own presence and everything that arrived up to
/// and including the subject.
async fn join(s: &mut Session, room: &str, nick: &str) -> (Element, Vec<Element>) {
    s.send(&format!(
        "<presence to='{room}/{nick}'><x xmlns='{MUC}'/></presence>"
    ))
    .await;
    let mut seen = Vec::new();
    let mut own = None;
    loop {
        let el = s.next().await;
        if el.attr("type") == Some("error") {
            panic!("join of {nick} refused: {}", corvid::xml::to_string(&el));
        }
        if el.name() == "presence" && codes(&el).contains(&110) {
            own = Some(el.clone());
        }
        let done = is_subject(&el);
        seen.push(el);
        if done {
            return (own.expect("own presence before the subject"), seen);
        }
    }
}

#[tokio::test]
async fn a_room_with_occupants_on_three_nodes() {
    let Some(cluster) = TestCluster::start(3).await else {
        return;
    };
    cluster.add_users(&["alice", "bob", "carol"]).await;
    let mut alice = cluster.online(1, "alice", "r").await;
    let mut bob = cluster.online(2, "bob", "r").await;
    let mut carol = cluster.online(3, "carol", "r").await;
    let room = format!("tea@{SERVICE}");
    let occupant = |nick: &str| format!("{room}/{nick}");

    // Alice creates an instant room from node 1.
    let (own, _) = join(&mut alice, &room, "Alice").await;
    assert!(codes(&own).contains(&201), "new room: {own:?}");
    let answer = alice
        .iq(&format!(
            "<iq to='{room}' type='set'><query xmlns='http://jabber.org/protocol/muc#owner'>\
             <x xmlns='jabber:x:data' type='submit'/></query></iq>"
        ))
        .await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");

    // Bob joins from node 2: he sees Alice first, then himself; Alice sees him.
    let (own, seen) = join(&mut bob, &room, "Bob").await;
    assert!(
        !codes(&own).contains(&201),
        "Bob's join on node 2 created another room (status 201) instead of joining Alice's: {}",
        corvid::xml::to_string(&own)
    );
    assert!(
        seen.iter()
            .any(|el| is_from(el, "presence", &occupant("Alice"))),
        "{seen:?}"
    );
    let bob_seen = expect(&mut alice, |el| is_from(el, "presence", &occupant("Bob"))).await;
    assert_eq!(bob_seen.attr("type"), None);

    // Carol joins from node 3: she sees both; both see her.
    let (_, seen) = join(&mut carol, &room, "Carol").await;
    for nick in ["Alice", "Bob"] {
        assert!(
            seen.iter()
                .any(|el| is_from(el, "presence", &occupant(nick))),
            "{nick} in {seen:?}"
        );
    }
    for session in [&mut alice, &mut bob] {
        expect(session, |el| is_from(el, "presence", &occupant("Carol"))).await;
    }
    // Each node answers for the same room: three occupants.
    for session in [&mut alice, &mut bob, &mut carol] {
        let info = session
            .iq(&format!(
                "<iq to='{room}' type='get'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
            ))
            .await;
        let occupants = info
            .get_child("query", "http://jabber.org/protocol/disco#info")
            .and_then(|q| q.get_child("x", "jabber:x:data"))
            .and_then(|x| {
                x.children()
                    .find(|f| f.attr("var") == Some("muc#roominfo_occupants"))
            })
            .and_then(|f| f.get_child("value", "jabber:x:data"))
            .map(|v| v.text());
        assert_eq!(occupants.as_deref(), Some("3"), "{}: {info:?}", session.jid);
    }

    // A message from each node reaches all three (the sender too), from the occupant JID,
    // and each occupant sees the three messages in the order the room took them: the same
    // order everywhere.
    bob.send(&format!(
        "<message to='{room}' type='groupchat' id='b1'><body>from node 2</body></message>"
    ))
    .await;
    for session in [&mut alice, &mut bob, &mut carol] {
        let got = expect(session, |el| {
            groupchat_body(el).as_deref() == Some("from node 2")
        })
        .await;
        assert_eq!(got.attr("from"), Some(occupant("Bob").as_str()));
    }
    for (k, session) in [&mut alice, &mut carol].into_iter().enumerate() {
        session
            .send(&format!(
                "<message to='{room}' type='groupchat'><body>round {k}</body></message>"
            ))
            .await;
    }
    let mut orders = Vec::new();
    for session in [&mut alice, &mut bob, &mut carol] {
        let mut order = Vec::new();
        while order.len() < 2 {
            let el = session.next().await;
            let Some(text) = groupchat_body(&el).filter(|t| t.starts_with("round ")) else {
                continue;
            };
            let sender = if text == "round 0" { "Alice" } else { "Carol" };
            assert_eq!(el.attr("from"), Some(occupant(sender).as_str()));
            order.push(text);
        }
        orders.push(order);
    }
    assert!(orders.windows(2).all(|w| w[0] == w[1]), "{orders:?}");

    // Private message from node 1 to the occupant on node 3.
    alice
        .send(&format!(
            "<message to='{}' type='chat'><body>psst</body></message>",
            occupant("Carol")
        ))
        .await;
    let got = expect(&mut carol, |el| {
        el.name() == "message"
            && el
                .get_child("body", "jabber:client")
                .map(|b| b.text())
                .as_deref()
                == Some("psst")
    })
    .await;
    assert_eq!(got.attr("from"), Some(occupant("Alice").as_str()));

    // Carol leaves from node 3: she gets her own unavailable with 110, the others see her go.
    carol
        .send(&format!(
            "<presence to='{}' type='unavailable'><status>bye</status></presence>",
            occupant("Carol")
        ))
        .await;
    let own = expect(&mut carol, |el| {
        is_from(el, "presence", &occupant("Carol")) && el.attr("type") == Some("unavailable")
    })
    .await;
    assert!(codes(&own).contains(&110), "{own:?}");
    for session in [&mut alice, &mut bob] {
        let seen = expect(session, |el| {
            is_from(el, "presence", &occupant("Carol")) && el.attr("type") == Some("unavailable")
        })
        .await;
        assert!(!codes(&seen).contains(&110));
    }
    // Gone means gone: her messages are refused now.
    carol
        .send(&format!(
            "<message to='{room}' type='groupchat' id='late'><body>x</body></message>"
        ))
        .await;
    let error = expect(&mut carol, |el| el.attr("id") == Some("late")).await;
    assert_eq!(error_condition(&error).as_deref(), Some("not-acceptable"));

    // Bob drops off node 2 without a word: Alice sees him leave with 333.
    drop(bob);
    let seen = expect(&mut alice, |el| {
        is_from(el, "presence", &occupant("Bob")) && el.attr("type") == Some("unavailable")
    })
    .await;
    assert!(codes(&seen).contains(&333), "{:?}", codes(&seen));
    cluster.finish().await;
}

/// XEP-0410 self-ping of `nick` in `room` as a client runs it after losing touch: retried
/// (bounded) while the room answers nothing within 2 s or "try later" (its node died and no
/// other has taken it over yet). True if still joined, false if the room says to join again
/// (`not-acceptable`); also returns every other stanza read meanwhile.
async fn still_joined(
    cluster: &TestCluster,
    s: &mut Session,
    room: &str,
    nick: &str,
) -> (bool, Vec<Element>) {
    let deadline = tokio::time::Instant::now() + common::WAIT + std::time::Duration::from_secs(5);
    let mut other = Vec::new();
    for attempt in 0.. {
        let id = format!("self-ping-{attempt}");
        s.send(&format!(
            "<iq to='{room}/{nick}' type='get' id='{id}'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await;
        let wait = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        let answer = loop {
            match tokio::time::timeout_at(wait, s.next()).await {
                Ok(el) if el.name() == "iq" && el.attr("id") == Some(id.as_str()) => {
                    break Some(el)
                }
                Ok(el) => other.push(el),
                Err(_) => break None,
            }
        };
        let verdict = answer
            .as_ref()
            .map(|a| (a.attr("type"), error_condition(a)));
        match verdict {
            Some((Some("result"), _)) => return (true, other),
            Some((_, Some(condition))) if condition == "not-acceptable" => return (false, other),
            _ if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            _ => panic!(
                "{nick}: the room never answered the self-ping after its node died ({} live \
                 nodes); last answer {:?}",
                cluster.live().len(),
                answer.as_ref().map(corvid::xml::to_string)
            ),
        }
    }
    unreachable!()
}

/// The node serving a persistent room dies: another node takes the room over from
/// PostgreSQL; the occupants on the surviving nodes either stay joined (and see the dead
/// node's occupant leave) or learn from the self-ping that they must join again; either way
/// the room works again with its configuration.
#[tokio::test]
async fn a_room_survives_the_death_of_its_node() {
    let Some(mut cluster) = TestCluster::start_killable(3).await else {
        return;
    };
    cluster.add_users(&["alice", "bob", "carol"]).await;
    let mut alice = cluster.online(1, "alice", "r").await;
    let mut bob = cluster.online(2, "bob", "r").await;
    let mut carol = cluster.online(3, "carol", "r").await;
    let room = format!("lasting@{SERVICE}");
    let occupant = |nick: &str| format!("{room}/{nick}");

    // Alice creates a persistent room from node 1.
    let (own, _) = join(&mut alice, &room, "Alice").await;
    assert!(codes(&own).contains(&201), "new room: {own:?}");
    let answer = alice
        .iq(&format!(
            "<iq to='{room}' type='set'><query xmlns='http://jabber.org/protocol/muc#owner'>\
             <x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>\
             <field var='muc#roomconfig_persistentroom'><value>1</value></field>\
             <field var='muc#roomconfig_roomname'><value>Lasting</value></field>\
             </x></query></iq>"
        ))
        .await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    let (own, _) = join(&mut bob, &room, "Bob").await;
    assert!(
        !codes(&own).contains(&201),
        "Bob's join on node 2 created another room (status 201) instead of joining Alice's: {}",
        corvid::xml::to_string(&own)
    );
    join(&mut carol, &room, "Carol").await;
    say(&mut bob, &room, "before").await;
    expect(&mut carol, |el| {
        groupchat_body(el).as_deref() == Some("before")
    })
    .await;

    // Node 1 dies (with Alice, and perhaps with the room).
    cluster.kill(1);

    for (session, nick) in [(&mut bob, "Bob"), (&mut carol, "Carol")] {
        let (joined, seen) = still_joined(&cluster, session, &room, nick).await;
        if joined {
            // Still joined: the room tells the survivors that Alice is gone.
            let alice_left = |el: &Element| {
                is_from(el, "presence", &occupant("Alice"))
                    && el.attr("type") == Some("unavailable")
            };
            if !seen.iter().any(alice_left) {
                expect(session, alice_left).await;
            }
        } else {
            let (own, _) = join(session, &room, nick).await;
            assert!(
                !codes(&own).contains(&201),
                "the room still exists: {own:?}"
            );
        }
    }

    // The room works again, with its configuration, on one of the surviving nodes.
    say(&mut bob, &room, "after").await;
    for session in [&mut bob, &mut carol] {
        let got = expect(session, |el| groupchat_body(el).as_deref() == Some("after")).await;
        assert_eq!(got.attr("from"), Some(occupant("Bob").as_str()));
    }
    let info = carol
        .iq(&format!(
            "<iq to='{room}' type='get'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
        ))
        .await;
    let name = info
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .and_then(|q| q.get_child("identity", "http://jabber.org/protocol/disco#info"))
        .and_then(|i| i.attr("name"));
    assert_eq!(name, Some("Lasting"), "{info:?}");
    drop(alice);
    cluster.finish().await;
}

async fn say(s: &mut Session, room: &str, body: &str) {
    s.send(&format!(
        "<message to='{room}' type='groupchat'><body>{body}</body></message>"
    ))
    .await;
}
