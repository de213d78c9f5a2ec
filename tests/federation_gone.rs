//! When the connection to another server is lost abnormally (`RemoteDomainHook`), what that
//! server's users had here ends as their sessions would have: local contacts get unavailable
//! presence from each remote session they saw available, remote occupants leave rooms with
//! status 333 (XEP-0045 §7.14). A clean close of an idle stream says nothing of the kind.
//!
//! `b.test` runs on a runtime of its own and is killed (`CrashableFederation::crash_b`): real
//! sockets closed by the kernel, no `</stream:stream>`, no unavailable presence from it.

mod common;

use std::time::Duration;

use common::federation::{CrashableFederation, Federation, Trust, A, B};
use common::xmpp::{is_presence, Session};
use common::{TestServer, WAIT};
use corvid::storage::{RosterItem, Subscription};
use minidom::Element;

const MUC: &str = "http://jabber.org/protocol/muc";
const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
const ROOM: &str = "room@conference.a.test";

async fn put_item(server: &TestServer, user: &str, contact: &str) {
    let mut item = RosterItem::new(contact);
    item.subscription = Subscription::Both;
    server
        .storage()
        .roster
        .put_roster_item(user, &item, 100)
        .await
        .expect("roster item");
}

fn muc_codes(el: &Element) -> Vec<u16> {
    el.get_child("x", MUC_USER)
        .map(|x| {
            x.children()
                .filter(|c| c.name() == "status")
                .filter_map(|c| c.attr("code").and_then(|v| v.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// Joins `ROOM` as `nick`, up to the subject; returns the own presence.
async fn join(s: &mut Session, nick: &str) -> Element {
    s.send(&format!(
        "<presence to='{ROOM}/{nick}'><x xmlns='{MUC}'/></presence>"
    ))
    .await;
    let mut own = None;
    loop {
        let el = s.next().await;
        assert_ne!(el.attr("type"), Some("error"), "join of {nick}: {el:?}");
        if el.name() == "presence" && muc_codes(&el).contains(&110) {
            own = Some(el.clone());
        }
        if el.name() == "message" && el.has_child("subject", "jabber:client") {
            return own.expect("own presence before the subject");
        }
    }
}

/// Waits (without asserting anything about time) until `server` has no s2s connection open.
async fn until_no_s2s(server: &TestServer) {
    let s2s = server.server.s2s.clone().expect("federation on");
    tokio::time::timeout(WAIT, async {
        while s2s.connection_count() > 0 || s2s.link_count() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("every s2s connection ends");
}

#[tokio::test]
async fn a_crashed_server_s_users_go_unavailable_and_leave_rooms_with_333() {
    let mut f = CrashableFederation::start(Trust::TestCa, |_| {}).await;
    f.a.add_user("alice@a.test").await;
    put_item(&f.a, "alice@a.test", "bob@b.test").await;
    f.on_b(|b| async move {
        b.add_user("bob@b.test").await;
        put_item(&b, "bob@b.test", "alice@a.test").await;
    })
    .await;
    let mut alice = Session::online_on(&f.a, A, "alice", "pc").await;
    let mut bob = Session::online_on(&f.b, B, "bob", "phone").await;
    alice
        .expect(|el| is_presence(el, None, "bob@b.test/phone"))
        .await;

    // Alice's room, and bob in it.
    join(&mut alice, "Alice").await;
    let configured = alice
        .iq(&format!(
            "<iq to='{ROOM}' type='set'><query xmlns='{MUC_OWNER}'>\
             <x xmlns='jabber:x:data' type='submit'/></query></iq>"
        ))
        .await;
    assert_eq!(configured.attr("type"), Some("result"), "{configured:?}");
    join(&mut bob, "Bob").await;
    alice
        .expect(|el| is_presence(el, None, "room@conference.a.test/Bob"))
        .await;

    f.crash_b();

    // Both, in whichever order: bob's session is gone as far as a.test can know.
    let mut unavailable = None;
    let mut left_room = None;
    tokio::time::timeout(WAIT, async {
        while unavailable.is_none() || left_room.is_none() {
            let el = alice.next().await;
            if is_presence(&el, Some("unavailable"), "bob@b.test/phone") {
                assert!(unavailable.is_none(), "unavailable twice: {el:?}");
                unavailable = Some(el);
            } else if is_presence(&el, Some("unavailable"), "room@conference.a.test/Bob") {
                assert!(left_room.is_none(), "left the room twice: {el:?}");
                left_room = Some(el);
            }
        }
    })
    .await
    .expect("alice hears bob is gone");
    let unavailable = unavailable.expect("unavailable presence");
    // Addressed as bob's server addresses his presence broadcast: to alice's bare JID.
    assert_eq!(unavailable.attr("to"), Some("alice@a.test"));
    let left_room = left_room.expect("room presence");
    assert!(
        muc_codes(&left_room).contains(&333),
        "gone for a technical reason (XEP-0045 §7.14): {left_room:?}"
    );
    let item = left_room
        .get_child("x", MUC_USER)
        .and_then(|x| x.get_child("item", MUC_USER))
        .expect("an item");
    assert_eq!(item.attr("role"), Some("none"));

    // Every stream with b.test broke, each saying so: nothing is said twice, and the room
    // no longer counts bob.
    until_no_s2s(&f.a).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for el in alice.drain().await {
        assert!(
            !is_presence(&el, Some("unavailable"), "bob@b.test/phone")
                && !is_presence(&el, Some("unavailable"), "room@conference.a.test/Bob"),
            "said again: {el:?}"
        );
    }
    let info = alice
        .iq(&format!(
            "<iq to='{ROOM}' type='get'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
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
        .map(Element::text);
    assert_eq!(
        occupants.as_deref(),
        Some("1"),
        "only alice is left: {info:?}"
    );
}

/// Streams that idle out end with `</stream:stream>`: the other server's users are still there
/// and nothing is said about them.
#[tokio::test]
async fn a_clean_close_of_an_idle_stream_says_nothing() {
    let f = Federation::start_with(
        Trust::TestCa,
        |c| c.s2s.idle_timeout_secs = 1,
        |c| c.s2s.idle_timeout_secs = 1,
    )
    .await;
    f.a.add_user("alice@a.test").await;
    f.b.add_user("bob@b.test").await;
    put_item(&f.a, "alice@a.test", "bob@b.test").await;
    put_item(&f.b, "bob@b.test", "alice@a.test").await;
    let mut alice = Session::online_on(&f.a, A, "alice", "pc").await;
    let mut bob = Session::online_on(&f.b, B, "bob", "phone").await;
    alice
        .expect(|el| is_presence(el, None, "bob@b.test/phone"))
        .await;
    join(&mut alice, "Alice").await;
    let configured = alice
        .iq(&format!(
            "<iq to='{ROOM}' type='set'><query xmlns='{MUC_OWNER}'>\
             <x xmlns='jabber:x:data' type='submit'/></query></iq>"
        ))
        .await;
    assert_eq!(configured.attr("type"), Some("result"), "{configured:?}");
    join(&mut bob, "Bob").await;

    until_no_s2s(&f.a).await;
    until_no_s2s(&f.b).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for el in alice.drain().await {
        assert!(
            el.name() != "presence" || el.attr("type") != Some("unavailable"),
            "nobody went away: {el:?}"
        );
    }
    // Bob is still in the room: what he says reaches alice over a new link.
    bob.send(&format!(
        "<message to='{ROOM}' type='groupchat'><body>still here</body></message>"
    ))
    .await;
    alice
        .expect(|el| {
            el.name() == "message"
                && el.attr("from") == Some("room@conference.a.test/Bob")
                && el
                    .get_child("body", "jabber:client")
                    .is_some_and(|b| b.text() == "still here")
        })
        .await;
}

/// A server that shuts down says goodbye for its users, then ends its streams with
/// `<system-shutdown/>` or `</stream:stream>`: its users leave as they said, once, and not as
/// lost (no 333).
#[tokio::test]
async fn a_clean_shutdown_of_the_other_server_is_not_a_loss() {
    let f = Federation::start(Trust::TestCa).await;
    f.a.add_user("alice@a.test").await;
    f.b.add_user("bob@b.test").await;
    put_item(&f.a, "alice@a.test", "bob@b.test").await;
    put_item(&f.b, "bob@b.test", "alice@a.test").await;
    let mut alice = Session::online_on(&f.a, A, "alice", "pc").await;
    let mut bob = Session::online_on(&f.b, B, "bob", "phone").await;
    alice
        .expect(|el| is_presence(el, None, "bob@b.test/phone"))
        .await;
    join(&mut alice, "Alice").await;
    let configured = alice
        .iq(&format!(
            "<iq to='{ROOM}' type='set'><query xmlns='{MUC_OWNER}'>\
             <x xmlns='jabber:x:data' type='submit'/></query></iq>"
        ))
        .await;
    assert_eq!(configured.attr("type"), Some("result"), "{configured:?}");
    join(&mut bob, "Bob").await;
    alice
        .expect(|el| is_presence(el, None, "room@conference.a.test/Bob"))
        .await;

    f.b.server.shutdown().await;
    until_no_s2s(&f.a).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = alice.drain().await;
    let unavailable: Vec<&Element> = seen
        .iter()
        .filter(|el| is_presence(el, Some("unavailable"), "bob@b.test/phone"))
        .collect();
    assert_eq!(unavailable.len(), 1, "bob's own goodbye only: {seen:?}");
    let left: Vec<&Element> = seen
        .iter()
        .filter(|el| is_presence(el, Some("unavailable"), "room@conference.a.test/Bob"))
        .collect();
    assert_eq!(left.len(), 1, "bob left the room once: {seen:?}");
    assert!(!muc_codes(left[0]).contains(&333), "{:?}", left[0]);
}
