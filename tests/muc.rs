//! Multi-User Chat (XEP-0045) over real sockets: creation, joining and its refusals, history
//! and subject, nick changes, leaving (cleanly and not), moderation, configuration,
//! persistence across a restart, destruction, disco, self-ping (XEP-0410), stanza and
//! occupant ids (XEP-0359, XEP-0421), invitations (XEP-0249 too) and fan-out that does not
//! wait for a stalled occupant.

mod common;

use common::xmpp::*;
use common::*;
use minidom::Element;

const MUC: &str = "http://jabber.org/protocol/muc";
const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const SERVICE: &str = "conference.localhost";

async fn online(t: &TestServer, name: &str) -> Session {
    t.add_user(name).await;
    Session::online(t, name, "r").await
}

fn muc_x(el: &Element) -> Option<&Element> {
    el.get_child("x", MUC_USER)
}

fn codes(el: &Element) -> Vec<u16> {
    muc_x(el)
        .map(|x| {
            x.children()
                .filter(|c| c.name() == "status")
                .filter_map(|c| c.attr("code").and_then(|v| v.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

fn item(el: &Element) -> &Element {
    muc_x(el)
        .and_then(|x| x.get_child("item", MUC_USER))
        .expect("muc#user item")
}

fn is_from(el: &Element, name: &str, from: &str) -> bool {
    el.name() == name && el.attr("from") == Some(from)
}

fn is_subject(el: &Element) -> bool {
    el.name() == "message" && el.has_child("subject", "jabber:client")
}

fn body_is<'a>(text: &'a str) -> impl Fn(&Element) -> bool + 'a {
    move |el| {
        el.name() == "message"
            && el
                .get_child("body", "jabber:client")
                .is_some_and(|b| b.text() == text)
    }
}

/// Sends the join presence (with `x_inner` inside `<x xmlns='…muc'/>`) and returns the own
/// presence and everything that arrived up to and including the subject.
async fn join_with(
    s: &mut Session,
    room: &str,
    nick: &str,
    x_inner: &str,
) -> (Element, Vec<Element>) {
    s.send(&format!(
        "<presence to='{room}/{nick}'><x xmlns='{MUC}'>{x_inner}</x></presence>"
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

async fn join(s: &mut Session, room: &str, nick: &str) -> Element {
    join_with(s, room, nick, "").await.0
}

/// A join that must fail: returns the error condition.
async fn join_error(s: &mut Session, room: &str, nick: &str, x_inner: &str) -> String {
    s.send(&format!(
        "<presence to='{room}/{nick}'><x xmlns='{MUC}'>{x_inner}</x></presence>"
    ))
    .await;
    let from = format!("{room}/{nick}");
    let error = s
        .expect(|el| el.name() == "presence" && el.attr("from") == Some(from.as_str()))
        .await;
    assert_eq!(
        error.attr("type"),
        Some("error"),
        "{}",
        corvid::xml::to_string(&error)
    );
    error_condition(&error).expect("an error condition")
}

/// Creates `room` with `nick` as an instant room (§10.1.2).
async fn create_instant(s: &mut Session, room: &str, nick: &str) {
    let own = join(s, room, nick).await;
    assert!(codes(&own).contains(&201), "new room: status 201");
    let answer = s
        .iq(&format!(
            "<iq to='{room}' type='set'><query xmlns='http://jabber.org/protocol/muc#owner'>\
             <x xmlns='jabber:x:data' type='submit'/></query></iq>"
        ))
        .await;
    assert_eq!(answer.attr("type"), Some("result"));
}

/// Submits room configuration fields (var, value).
async fn configure(s: &mut Session, room: &str, fields: &[(&str, &str)]) -> Element {
    let mut xml = String::from(
        "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>",
    );
    for (var, value) in fields {
        xml.push_str(&format!(
            "<field var='{var}'><value>{value}</value></field>"
        ));
    }
    s.iq(&format!(
        "<iq to='{room}' type='set'><query xmlns='http://jabber.org/protocol/muc#owner'>\
         <x xmlns='jabber:x:data' type='submit'>{xml}</x></query></iq>"
    ))
    .await
}

async fn admin(s: &mut Session, room: &str, item: &str) -> Element {
    s.iq(&format!(
        "<iq to='{room}' type='set'><query xmlns='http://jabber.org/protocol/muc#admin'>{item}</query></iq>"
    ))
    .await
}

async fn say(s: &mut Session, room: &str, body: &str) {
    s.send(&format!(
        "<message to='{room}' type='groupchat'><body>{body}</body></message>"
    ))
    .await;
}

async fn disco_info(s: &mut Session, to: &str) -> Element {
    s.iq(&format!(
        "<iq to='{to}' type='get'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
    ))
    .await
}

fn features(info: &Element) -> Vec<String> {
    info.get_child("query", "http://jabber.org/protocol/disco#info")
        .map(|q| {
            q.children()
                .filter(|c| c.name() == "feature")
                .filter_map(|c| c.attr("var").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn form_value(info: &Element, var: &str) -> Option<String> {
    info.get_child("query", "http://jabber.org/protocol/disco#info")?
        .get_child("x", "jabber:x:data")?
        .children()
        .find(|f| f.attr("var") == Some(var))?
        .get_child("value", "jabber:x:data")
        .map(|v| v.text())
}

#[tokio::test]
async fn create_instant_room_and_join_with_110_and_201() {
    let t = TestServer::start().await;
    let mut alice = online(&t, "alice").await;
    let mut bob = online(&t, "bob").await;
    let room = format!("tea@{SERVICE}");

    let own = join(&mut alice, &room, "Alice").await;
    let c = codes(&own);
    assert!(c.contains(&110) && c.contains(&201), "{c:?}");
    assert_eq!(item(&own).attr("affiliation"), Some("owner"));
    assert_eq!(item(&own).attr("role"), Some("moderator"));

    // Locked until configured: nobody else gets in (§10.1.1).
    assert_eq!(
        join_error(&mut bob, &room, "Bob", "").await,
        "item-not-found"
    );
    let answer = alice
        .iq(&format!(
            "<iq to='{room}' type='set'><query xmlns='http://jabber.org/protocol/muc#owner'>\
             <x xmlns='jabber:x:data' type='submit'/></query></iq>"
        ))
        .await;
    assert_eq!(answer.attr("type"), Some("result"));

    let (own, seen) = join_with(&mut bob, &room, "Bob", "").await;
    // Alice's presence comes before Bob's own, which is marked 110 but not 201.
    let alice_first = seen
        .iter()
        .position(|el| is_from(el, "presence", &format!("{room}/Alice")))
        .expect("alice's presence");
    let own_at = seen
        .iter()
        .position(|el| codes(el).contains(&110))
        .expect("own presence");
    assert!(alice_first < own_at);
    assert!(!codes(&own).contains(&201));
    assert_eq!(item(&own).attr("role"), Some("participant"));
    assert_eq!(item(&own).attr("affiliation"), Some("none"));
    // Semi-anonymous by default: Bob does not see Alice's JID, Alice (moderator) sees his.
    assert_eq!(item(&seen[alice_first]).attr("jid"), None);
    let bob_seen = alice
        .expect(|el| is_from(el, "presence", &format!("{room}/Bob")))
        .await;
    assert_eq!(item(&bob_seen).attr("jid"), Some("bob@localhost/r"));
    assert!(!codes(&bob_seen).contains(&110));
}

#[tokio::test]
async fn reserved_room_via_config_form() {
    let t = TestServer::start().await;
    let mut alice = online(&t, "alice").await;
    let mut bob = online(&t, "bob").await;
    let room = format!("council@{SERVICE}");
    let own = join(&mut alice, &room, "Alice").await;
    assert!(codes(&own).contains(&201));

    let form = alice
        .iq(&format!(
            "<iq to='{room}' type='get'><query xmlns='http://jabber.org/protocol/muc#owner'/></iq>"
        ))
        .await;
    assert_eq!(form.attr("type"), Some("result"));
    let x = form
        .get_child("query", "http://jabber.org/protocol/muc#owner")
        .and_then(|q| q.get_child("x", "jabber:x:data"))
        .expect("config form");
    let maxusers = x
        .children()
        .find(|f| f.attr("var") == Some("muc#roomconfig_maxusers"))
        .expect("maxusers field");
    let options: Vec<u32> = maxusers
        .children()
        .filter(|c| c.name() == "option")
        .filter_map(|o| o.get_child("value", "jabber:x:data"))
        .filter_map(|v| v.text().parse().ok())
        .collect();
    assert!(options.contains(&100), "{options:?}");
    assert!(options.iter().all(|n| *n <= 100), "{options:?}");
    for var in [
        "muc#roomconfig_roomname",
        "muc#roomconfig_persistentroom",
        "muc#roomconfig_membersonly",
        "muc#roomconfig_whois",
        "muc#roomconfig_allowpm",
    ] {
        assert!(x.children().any(|f| f.attr("var") == Some(var)), "{var}");
    }

    // Above the server's cap: refused, and the room stays locked.
    let refused = configure(&mut alice, &room, &[("muc#roomconfig_maxusers", "101")]).await;
    assert_eq!(error_condition(&refused).as_deref(), Some("not-acceptable"));
    assert_eq!(
        join_error(&mut bob, &room, "Bob", "").await,
        "item-not-found"
    );

    let done = configure(
        &mut alice,
        &room,
        &[
            ("muc#roomconfig_roomname", "The Council"),
            ("muc#roomconfig_maxusers", "20"),
            ("muc#roomconfig_whois", "anyone"),
        ],
    )
    .await;
    assert_eq!(done.attr("type"), Some("result"));
    let own = join(&mut bob, &room, "Bob").await;
    // Non-anonymous: status 100, and Bob sees his own JID.
    assert!(codes(&own).contains(&100));
    assert_eq!(item(&own).attr("jid"), Some("bob@localhost/r"));
    let info = disco_info(&mut bob, &room).await;
    assert_eq!(
        form_value(&info, "muc#roomconfig_roomname").as_deref(),
        Some("The Council")
    );
    assert!(features(&info).contains(&"muc_nonanonymous".to_owned()));
}

#[tokio::test]
async fn room_of_100_refuses_the_101st_with_service_unavailable() {
    let t = TestServer::start().await;
    let room = format!("crowd@{SERVICE}");
    let mut owner = online(&t, "u0").await;
    create_instant(&mut owner, &room, "u0").await;
    let mut sessions = Vec::new();
    for i in 1..100 {
        let name = format!("u{i}");
        let mut s = online(&t, &name).await;
        join(&mut s, &room, &name).await;
        sessions.push(s);
    }
    let mut late = online(&t, "u100").await;
    assert_eq!(
        join_error(&mut late, &room, "u100", "").await,
        "service-unavailable"
    );
    // The owner is not exempt either (owners_exempt_from_cap = false).
    let mut owner2 = Session::online(&t, "u0", "second").await;
    assert_eq!(
        join_error(&mut owner2, &room, "u0-again", "").await,
        "service-unavailable"
    );
    // One leaves; now there is room.
    let leaver = sessions.pop().expect("a session");
    drop(leaver);
    owner
        .expect(|el| {
            is_from(el, "presence", &format!("{room}/u99"))
                && el.attr("type") == Some("unavailable")
        })
        .await;
    join(&mut late, &room, "u100").await;
    let info = disco_info(&mut late, &room).await;
    assert_eq!(
        form_value(&info, "muc#roominfo_occupants").as_deref(),
        Some("100")
    );
}

#[tokio::test]
async fn owners_can_be_exempt_from_the_cap_when_configured() {
    let t = TestServer::start_with(|c| {
        c.muc.max_occupants = 2;
        c.muc.owners_exempt_from_cap = true;
    })
    .await;
    let room = format!("small@{SERVICE}");
    let mut alice = online(&t, "alice").await;
    let mut bob = online(&t, "bob").await;
    let mut carol = online(&t, "carol").await;
    create_instant(&mut alice, &room, "Alice").await;
    join(&mut bob, &room, "Bob").await;
    assert_eq!(
        join_error(&mut carol, &room, "Carol", "").await,
        "service-unavailable"
    );
    let mut alice2 = Session::online(&t, "alice", "two").await;
    join(&mut alice2, &room, "Alice2").await;
    // The configured cap also bounds what an owner may choose.
    let refused = configure(&mut alice, &room, &[("muc#roomconfig_maxusers", "3")]).await;
    assert_eq!(error_condition(&refused).as_deref(), Some("not-acceptable"));
}

#[tokio::test]
async fn history_on_join_with_maxstanzas_seconds_and_since() {
    let t = TestServer::start().await;
    let room = format!("chat@{SERVICE}");
    let mut alice = online(&t, "alice").await;
    create_instant(&mut alice, &room, "Alice").await;
    for i in 1..=5 {
        say(&mut alice, &room, &format!("msg{i}")).await;
        alice.expect(body_is(&format!("msg{i}"))).await;
    }
    let history_bodies = |seen: &[Element]| -> Vec<String> {
        seen.iter()
            .filter(|el| el.name() == "message" && el.has_child("delay", "urn:xmpp:delay"))
            .map(|el| {
                el.get_child("body", "jabber:client")
                    .map(|b| b.text())
                    .unwrap_or_default()
            })
            .collect()
    };
    let mut bob = online(&t, "bob").await;
    let (_, seen) = join_with(&mut bob, &room, "Bob", "<history maxstanzas='2'/>").await;
    assert_eq!(history_bodies(&seen), ["msg4", "msg5"]);
    let delayed = seen
        .iter()
        .find(|el| el.has_child("delay", "urn:xmpp:delay"))
        .expect("history");
    let delay = delayed.get_child("delay", "urn:xmpp:delay").expect("delay");
    assert_eq!(delay.attr("from"), Some(room.as_str()));
    assert_eq!(delayed.attr("from"), Some(format!("{room}/Alice").as_str()));
    // History comes before the subject, which is last.
    assert!(is_subject(seen.last().expect("subject")));

    let mut carol = online(&t, "carol").await;
    let (_, seen) = join_with(&mut carol, &room, "Carol", "<history seconds='3600'/>").await;
    assert_eq!(
        history_bodies(&seen),
        ["msg1", "msg2", "msg3", "msg4", "msg5"]
    );

    let mut dave = online(&t, "dave").await;
    let (_, seen) = join_with(
        &mut dave,
        &room,
        "Dave",
        "<history since='2999-01-01T00:00:00Z'/>",
    )
    .await;
    assert!(history_bodies(&seen).is_empty());

    let mut erin = online(&t, "erin").await;
    let (_, seen) = join_with(
        &mut erin,
        &room,
        "Erin",
        "<history since='2000-01-01T00:00:00Z' maxstanzas='3'/>",
    )
    .await;
    assert_eq!(history_bodies(&seen), ["msg3", "msg4", "msg5"]);

    let mut frank = online(&t, "frank").await;
    let (_, seen) = join_with(&mut frank, &room, "Frank", "<history maxchars='0'/>").await;
    assert!(history_bodies(&seen).is_empty());
}

#[tokio::test]
async fn subject_on_join_and_who_may_change_it() {
    let t = TestServer::start().await;
    let room = format!("topic@{SERVICE}");
    let mut alice = online(&t, "alice").await;
    create_instant(&mut alice, &room, "Alice").await;
    let mut bob = online(&t, "bob").await;
    let (_, seen) = join_with(&mut bob, &room, "Bob", "").await;
    // No subject yet: an empty one, from the room.
    let empty = seen.last().expect("subject");
    assert_eq!(
        empty
            .get_child("subject", "jabber:client")
            .map(|s| s.text())
            .as_deref(),
        Some("")
    );

    alice
        .send(&format!(
            "<message to='{room}' type='groupchat'><subject>Tea at five</subject></message>"
        ))
        .await;
    let changed = bob.expect(is_subject).await;
    assert_eq!(changed.attr("from"), Some(format!("{room}/Alice").as_str()));

    // A participant may not change it by default.
    bob.send(&format!(
        "<message to='{room}' type='groupchat' id='s1'><subject>Coffee</subject></message>"
    ))
    .await;
    let error = bob.expect(|el| el.attr("id") == Some("s1")).await;
    assert_eq!(error_condition(&error).as_deref(), Some("forbidden"));

    let mut carol = online(&t, "carol").await;
    let (_, seen) = join_with(&mut carol, &room, "Carol", "").await;
    let subject = seen.last().expect("subject");
    assert_eq!(
        subject
            .get_child("subject", "jabber:client")
            .map(|s| s.text())
            .as_deref(),
        Some("Tea at five")
    );
    assert_eq!(subject.attr("from"), Some(format!("{room}/Alice").as_str()));
    let info = disco_info(&mut carol, &room).await;
    assert_eq!(
        form_value(&info, "muc#roominfo_subject").as_deref(),
        Some("Tea at five")
    );
}

#[tokio::test]
async fn nick_conflict_is_refused() {
    let t = TestServer::start().await;
    let room = format!("nicks@{SERVICE}");
    let mut alice = online(&t, "alice").await;
    let mut bob = online(&t, "bob").await;
    create_instant(&mut alice, &room, "Alice").await;
    assert_eq!(join_error(&mut bob, &room, "Alice", "").await, "conflict");
    // Another session of the same account may not share the nick either (documented).
    let mut alice2 = Session::online(&t, "alice", "two").await;
    assert_eq!(
        join_error(&mut alice2, &room, "Alice", "").await,
        "conflict"
    );
    join(&mut bob, &room, "Bob").await;
}

#[tokio::test]
async fn nick_change_sends_303_then_the_new_presence() {
    let t = TestServer::start().await;
    let room = format!("rename@{SERVICE}");
    let mut alice = online(&t, "alice").await;
    let mut bob = online(&t, "bob").await;
    create_instant(&mut alice, &room, "Alice").await;
    join(&mut bob, &room, "Bob").await;
    alice
        .expect(|el| is_from(el, "presence", &format!("{room}/Bob")))
        .await;
    // Taken nick: conflict.
    bob.send(&format!("<presence to='{room}/Alice'/>")).await;
    let error = bob
        .expect(|el| is_from(el, "presence", &format!("{room}/Alice")))
        .await;
    assert_eq!(error_condition(&error).as_deref(), Some("conflict"));

    bob.send(&format!("<presence to='{room}/Robert'/>")).await;
    for s in [&mut alice, &mut bob] {
        let gone = s
            .expect(|el| is_from(el, "presence", &format!("{room}/Bob")))
            .await;
        assert_eq!(gone.attr("type"), Some("unavailable"));
        assert!(codes(&gone).contains(&303));
        assert_eq!(item(&gone).attr("nick"), Some("Robert"));
        let back = s
            .expect(|el| is_from(el, "presence", &format!("{room}/Robert")))
            .await;
        assert_eq!(back.attr("type"), None);
    }
    say(&mut bob, &room, "renamed").await;
    let said = alice.expect(body_is("renamed")).await;
    assert_eq!(said.attr("from"), Some(format!("{room}/Robert").as_str()));
}

#[tokio::test]
async fn leaving_tells_everyone_and_the_leaver_with_110() {
    let t = TestServer::start().await;
    let room = format!("leave@{SERVICE}");
    let mut alice = online(&t, "alice").await;
    let mut bob = online(&t, "bob").await;
    create_instant(&mut alice, &room, "Alice").await;
    join(&mut bob, &room, "Bob").await;
    bob.send(&format!(
        "<presence to='{room}/Bob' type='unavailable'><status>bye</status></presence>"
    ))
    .await;
    let own = bob
        .expect(|el| is_from(el, "presence", &format!("{room}/Bob")))
        .await;
    assert_eq!(own.attr("type"), Some("unavailable"));
    assert!(codes(&own).contains(&110));
    let seen = alice
        .expect(|el| {
            is_from(el, "presence", &format!("{room}/Bob"))
                && el.attr("type") == Some("unavailable")
        })
        .await;
    assert_eq!(item(&seen).attr("role"), Some("none"));
    assert_eq!(
        seen.get_child("status", "jabber:client")
            .map(|s| s.text())
            .as_deref(),
        Some("bye")
    );
    assert!(!codes(&seen).contains(&110));
    // Gone means gone: Bob's messages are refused now.
    bob.send(&format!(
        "<message to='{room}' type='groupchat' id='late'><body>x</body></message>"
    ))
    .await;
    let error = bob.expect(|el| el.attr("id") == Some("late")).await;
    assert_eq!(error_condition(&error).as_deref(), Some("not-acceptable"));
}

#[tokio::test]
async fn abrupt_disconnect_is_seen_as_unavailable_with_333() {
    let t = TestServer::start().await;
    let room = format!("drop@{SERVICE}");
    let mut alice = online(&t, "alice").await;
    let mut bob = online(&t, "bob").await;
    create_instant(&mut alice, &room, "Alice").await;
    join(&mut bob, &room, "Bob").await;
    drop(bob);
    let seen = alice
        .expect(|el| {
            is_from(el, "presence", &format!("{room}/Bob"))
                && el.attr("type") == Some("unavailable")
        })
        .await;
    assert_eq!(item(&seen).attr("role"), Some("none"));
    assert!(codes(&seen).contains(&333), "{:?}", codes(&seen));
    let info = disco_info(&mut alice, &room).await;
    assert_eq!(
        form_value(&info, "muc#roominfo_occupants").as_deref(),
        Some("1")
    );
}

/// A client that closes its stream without leaving first left like one that sent
/// unavailable: no status 333, which is for technical reasons (a lost connection).
#[tokio::test]
async fn closing_the_stream_leaves_without_333() {
    let t = TestServer::start().await;
    let room = format!("close@{SERVICE}");
    let mut alice = online(&t, "alice").await;
    let mut bob = online(&t, "bob").await;
    create_instant(&mut alice, &room, "Alice").await;
    join(&mut bob, &room, "Bob").await;
    bob.send("</stream:stream>").await;
    let seen = alice
        .expect(|el| {
            is_from(el, "presence", &format!("{room}/Bob"))
                && el.attr("type") == Some("unavailable")
        })
        .await;
    assert!(!codes(&seen).contains(&333), "{:?}", codes(&seen));
}

#[tokio::test]
async fn kick_and_ban_are_seen_by_all_and_the_banned_cannot_rejoin() {
    let t = TestServer::start().await;
    let room = format!("mod@{SERVICE}");
    let mut alice = online(&t, "alice").await;
    let mut bob = online(&t, "bob").await;
    let mut carol = online(&t, "carol").await;
    create_instant(&mut alice, &room, "Alice").await;
    join(&mut bob, &room, "Bob").await;
    join(&mut carol, &room, "Carol").await;

    // A participant may not kick.
    let refused = admin(&mut bob, &room, "<item nick='Carol' role='none'/>").await;
    assert_eq!(error_condition(&refused).as_deref(), Some("forbidden"));

    let kicked = admin(
        &mut alice,
        &room,
        "<item nick='Carol' role='none'><reason>noise</reason></item>",
    )
    .await;
    assert_eq!(kicked.attr("type"), Some("result"));
    for s in [&mut alice, &mut bob, &mut carol] {
        let p = s
            .expect(|el| {
                is_from(el, "presence", &format!("{room}/Carol"))
                    && el.attr("type") == Some("unavailable")
            })
            .await;
        assert!(codes(&p).contains(&307));
        assert_eq!(
            item(&p)
                .get_child("reason", MUC_USER)
                .map(|r| r.text())
                .as_deref(),
            Some("noise")
        );
    }
    // Kicked is not banned.
    join(&mut carol, &room, "Carol").await;

    let banned = admin(
        &mut alice,
        &room,
        "<item jid='carol@localhost' affiliation='outcast'><reason>spam</reason></item>",
    )
    .await;
    assert_eq!(banned.attr("type"), Some("result"));
    for s in [&mut alice, &mut bob, &mut carol] {
        let p = s
            .expect(|el| {
                is_from(el, "presence", &format!("{room}/Carol"))
                    && el.attr("type") == Some("unavailable")
            })
            .await;
        assert!(codes(&p).contains(&301));
        assert_eq!(item(&p).attr("affiliation"), Some("outcast"));
    }
    assert_eq!(
        join_error(&mut carol, &room, "Carol", "").await,
        "forbidden"
    );
    let list = alice
        .iq(&format!(
            "<iq to='{room}' type='get'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='outcast'/></query></iq>"
        ))
        .await;
    let listed: Vec<String> = list
        .get_child("query", "http://jabber.org/protocol/muc#admin")
        .expect("list")
        .children()
        .filter_map(|i| i.attr("jid").map(str::to_owned))
        .collect();
    assert_eq!(listed, ["carol@localhost"]);
    // Nobody may kick the owner, and the only owner cannot give up ownership.
    let refused = admin(
        &mut alice,
        &room,
        "<item jid='alice@localhost' affiliation='member'/>",
    )
    .await;
    assert_eq!(error_condition(&refused).as_deref(), Some("conflict"));
    let granted = admin(
        &mut alice,
        &room,
        "<item jid='bob@localhost' affiliation='admin'/>",
    )
    .await;
    assert_eq!(granted.attr("type"), Some("result"));
    let refused = admin(&mut bob, &room, "<item nick='Alice' role='none'/>").await;
    assert_eq!(error_condition(&refused).as_deref(), Some("not-allowed"));
    let refused = admin(
        &mut bob,
        &room,
        "<item jid='alice@localhost' affiliation='outcast'/>",
    )
    .await;
    assert_eq!(error_condition(&refused).as_deref(), Some("not-allowed"));
}

#[tokio::test]
async fn members_only_and_password_rooms() {
    let t = TestServer::start().await;
    let mut alice = online(&t, "alice").await;
    let mut bob = online(&t, "bob").await;
    let mut carol = online(&t, "carol").await;

    let club = format!("club@{SERVICE}");
    join(&mut alice, &club, "Alice").await;
    let done = configure(&mut alice, &club, &[("muc#roomconfig_membersonly", "1")]).await;
    assert_eq!(done.attr("type"), Some("result"));
    assert_eq!(
        join_error(&mut bob, &club, "Bob", "").await,
        "registration-required"
    );
    let added = admin(
        &mut alice,
        &club,
        "<item jid='bob@localhost' affiliation='member'/>",
    )
    .await;
    assert_eq!(added.attr("type"), Some("result"));
    join(&mut bob, &club, "Bob").await;
    // A mediated invitation by the owner makes Carol a member (§7.8.2), and reaches her.
    alice
        .send(&format!(
            "<message to='{club}'><x xmlns='{MUC_USER}'><invite to='carol@localhost'><reason>join us</reason></invite></x></message>"
        ))
        .await;
    let invitation = carol
        .expect(|el| el.name() == "message" && el.attr("from") == Some(club.as_str()))
        .await;
    let invite = muc_x(&invitation)
        .and_then(|x| x.get_child("invite", MUC_USER))
        .expect("invite");
    assert_eq!(invite.attr("from"), Some("alice@localhost/r"));
    join(&mut carol, &club, "Carol").await;

    let vault = format!("vault@{SERVICE}");
    join(&mut alice, &vault, "Alice").await;
    let done = configure(
        &mut alice,
        &vault,
        &[
            ("muc#roomconfig_passwordprotectedroom", "1"),
            ("muc#roomconfig_roomsecret", "s3cret"),
        ],
    )
    .await;
    assert_eq!(done.attr("type"), Some("result"));
    assert_eq!(
        join_error(&mut bob, &vault, "Bob", "").await,
        "not-authorized"
    );
    assert_eq!(
        join_error(&mut bob, &vault, "Bob", "<password>wrong</password>").await,
        "not-authorized"
    );
    join_with(&mut bob, &vault, "Bob", "<password>s3cret</password>").await;
    let info = disco_info(&mut bob, &vault).await;
    let f = features(&info);
    assert!(f.contains(&"muc_passwordprotected".to_owned()));
    let info = disco_info(&mut bob, &club).await;
    assert!(features(&info).contains(&"muc_membersonly".to_owned()));
}

#[tokio::test]
async fn moderated_room_visitor_cannot_speak_until_given_voice() {
    let t = TestServer::start().await;
    let room = format!("stage@{SERVICE}");
    let mut alice = online(&t, "alice").await;
    let mut bob = online(&t, "bob").await;
    join(&mut alice, &room, "Alice").await;
    let done = configure(&mut alice, &room, &[("muc#roomconfig_moderatedroom", "1")]).await;
    assert_eq!(done.attr("type"), Some("result"));
    let own = join(&mut bob, &room, "Bob").await;
    assert_eq!(item(&own).attr("role"), Some("visitor"));
    bob.send(&format!(
        "<message to='{room}' type='groupchat' id='v1'><body>hello?</body></message>"
    ))
    .await;
    let error = bob.expect(|el| el.attr("id") == Some("v1")).await;
    assert_eq!(error_condition(&error).as_deref(), Some("forbidden"));

    let voiced = admin(&mut alice, &room, "<item nick='Bob' role='participant'/>").await;
    assert_eq!(voiced.attr("type"), Some("result"));
    let p = bob
        .expect(|el| is_from(el, "presence", &format!("{room}/Bob")))
        .await;
    assert_eq!(item(&p).attr("role"), Some("participant"));
    say(&mut bob, &room, "now I speak").await;
    alice.expect(body_is("now I speak")).await;
}

/// §7.13 and §8.6: the visitor asks, the moderator gets the approval form and submits it.
#[tokio::test]
async fn voice_request_is_passed_to_moderators_and_granted() {
    let t = TestServer::start().await;
    let room = format!("ask@{SERVICE}");
    let mut alice = online(&t, "alice").await;
    let mut bob = online(&t, "bob").await;
    join(&mut alice, &room, "Alice").await;
    configure(&mut alice, &room, &[("muc#roomconfig_moderatedroom", "1")]).await;
    join(&mut bob, &room, "Bob").await;

    bob.send(&format!(
        "<message to='{room}'><x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#request</value></field>\
         <field var='muc#role' type='list-single'><value>participant</value></field>\
         </x></message>"
    ))
    .await;
    let request = alice
        .expect(|el| el.name() == "message" && el.has_child("x", "jabber:x:data"))
        .await;
    assert_eq!(request.attr("from"), Some(room.as_str()));
    let form = request.get_child("x", "jabber:x:data").expect("form");
    let value = |var: &str| {
        form.children()
            .find(|f| f.attr("var") == Some(var))
            .and_then(|f| f.children().next())
            .map(|v| v.text())
    };
    assert_eq!(value("muc#roomnick").as_deref(), Some("Bob"));
    assert_eq!(value("muc#jid").as_deref(), Some(bob.jid.as_str()));
    assert_eq!(value("muc#request_allow").as_deref(), Some("false"));

    alice
        .send(&format!(
            "<message to='{room}'><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#request</value></field>\
             <field var='muc#role'><value>participant</value></field>\
             <field var='muc#jid'><value>{}</value></field>\
             <field var='muc#roomnick'><value>Bob</value></field>\
             <field var='muc#request_allow'><value>true</value></field>\
             </x></message>",
            bob.jid
        ))
        .await;
    let p = bob
        .expect(|el| is_from(el, "presence", &format!("{room}/Bob")))
        .await;
    assert_eq!(item(&p).attr("role"), Some("participant"));
    say(&mut bob, &room, "thanks for the voice").await;
    alice.expect(body_is("thanks for the voice")).await;
}

/// An IQ to an occupant's nick reaches that occupant from the asker's room JID and the answer
/// comes back from the answerer's room JID with the asker's id; a vCard request is answered
/// by the occupant's account.
#[tokio::test]
async fn iqs_between_occupants_are_forwarded_both_ways() {
    let t = TestServer::start().await;
    let room = format!("fwd@{SERVICE}");
    let mut alice = online(&t, "alice").await;
    let mut bob = online(&t, "bob").await;
    create_instant(&mut alice, &room, "Alice").await;
    join(&mut bob, &room, "Bob").await;

    alice
        .send(&format!(
            "<iq type='get' id='v1' to='{room}/Bob'><query xmlns='jabber:iq:version'/></iq>"
        ))
        .await;
    let asked = bob
        .expect(|el| el.name() == "iq" && el.attr("type") == Some("get"))
        .await;
    assert_eq!(asked.attr("from"), Some(format!("{room}/Alice").as_str()));
    let id = asked.attr("id").expect("id").to_string();
    bob.send(&format!(
        "<iq type='result' id='{id}' to='{room}/Alice'><query xmlns='jabber:iq:version'>\
         <name>bobclient</name><version>1</version></query></iq>"
    ))
    .await;
    let answer = alice.expect(|el| el.attr("id") == Some("v1")).await;
    assert_eq!(answer.attr("type"), Some("result"));
    assert_eq!(answer.attr("from"), Some(format!("{room}/Bob").as_str()));
    assert!(corvid::xml::to_string(&answer).contains("bobclient"));

    let stored = bob
        .iq("<iq type='set'><vCard xmlns='vcard-temp'><FN>Bob B.</FN></vCard></iq>")
        .await;
    assert_eq!(stored.attr("type"), Some("result"));
    alice
        .send(&format!(
            "<iq type='get' id='vc1' to='{room}/Bob'><vCard xmlns='vcard-temp'/></iq>"
        ))
        .await;
    let card = alice.expect(|el| el.attr("id") == Some("vc1")).await;
    assert_eq!(card.attr("type"), Some("result"), "{card:?}");
    assert!(corvid::xml::to_string(&card).contains("Bob B."));
}

#[tokio::test]
async fn private_messages_between_occupants() {
    let t = TestServer::start().await;
    let room = format!("pm@{SERVICE}");
    let mut alice = online(&t, "alice").await;
    let mut bob = online(&t, "bob").await;
    let mut eve = online(&t, "eve").await;
    create_instant(&mut alice, &room, "Alice").await;
    join(&mut bob, &room, "Bob").await;
    bob.send(&format!(
        "<message to='{room}/Alice' type='chat'><body>psst</body></message>"
    ))
    .await;
    let pm = alice.expect(body_is("psst")).await;
    assert_eq!(pm.attr("from"), Some(format!("{room}/Bob").as_str()));
    assert_eq!(pm.attr("type"), Some("chat"));
    assert!(muc_x(&pm).is_some());
    // Not an occupant: not-acceptable; unknown nick: item-not-found.
    eve.send(&format!(
        "<message to='{room}/Alice' type='chat' id='e1'><body>hi</body></message>"
    ))
    .await;
    let error = eve.expect(|el| el.attr("id") == Some("e1")).await;
    assert_eq!(error_condition(&error).as_deref(), Some("not-acceptable"));
    bob.send(&format!(
        "<message to='{room}/Nobody' type='chat' id='b1'><body>hi</body></message>"
    ))
    .await;
    let error = bob.expect(|el| el.attr("id") == Some("b1")).await;
    assert_eq!(error_condition(&error).as_deref(), Some("item-not-found"));
    // Groupchat to a nick is a bad request.
    bob.send(&format!(
        "<message to='{room}/Alice' type='groupchat' id='b2'><body>hi</body></message>"
    ))
    .await;
    let error = bob.expect(|el| el.attr("id") == Some("b2")).await;
    assert_eq!(error_condition(&error).as_deref(), Some("bad-request"));
}

#[tokio::test]
async fn persistent_room_and_affiliations_survive_a_restart() {
    let first = TestServer::start().await;
    let db = first.db_path();
    let room = format!("lasting@{SERVICE}");
    set_up_lasting_room(&first, &room).await;
    let TestServer { server, dir, .. } = first;
    server.shutdown().await;

    let url = format!("sqlite://{}", db.display());
    let second = TestServer::start_with(|c| c.storage.url = url).await;
    check_lasting_room(&second, &room).await;
    drop(dir);
}

/// The same, on PostgreSQL (a fresh schema in `CORVID_TEST_POSTGRES`, dropped afterwards).
#[tokio::test]
async fn persistent_room_survives_a_restart_on_postgres() {
    let Ok(url) = std::env::var("CORVID_TEST_POSTGRES") else {
        println!("skipped: CORVID_TEST_POSTGRES not set");
        return;
    };
    let schema = format!("corvid_muc_{:016x}", rand::random::<u64>());
    let open = || async {
        let backend = corvid::storage::PostgresStorage::open_with_schema(&url, &schema)
            .await
            .expect("postgres opens");
        corvid::storage::Storage::from_backend(std::sync::Arc::new(backend))
    };
    let room = format!("lasting@{SERVICE}");
    let storage = open().await;
    let first = TestServer::start_custom(|_| {}, move |_| storage).await;
    set_up_lasting_room(&first, &room).await;
    first.server.shutdown().await;
    let storage = open().await;
    let second = TestServer::start_custom(|_| {}, move |_| storage).await;
    check_lasting_room(&second, &room).await;
    second.server.shutdown().await;
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(&mut conn)
        .await
        .expect("drop schema");
}

/// Alice makes `room` persistent, members-only and named, makes Bob a member and sets a
/// subject.
async fn set_up_lasting_room(t: &TestServer, room: &str) {
    for user in ["alice", "bob", "carol"] {
        t.add_user(user).await;
    }
    let mut alice = Session::online(t, "alice", "r").await;
    join(&mut alice, room, "Alice").await;
    let done = configure(
        &mut alice,
        room,
        &[
            ("muc#roomconfig_persistentroom", "1"),
            ("muc#roomconfig_roomname", "Lasting"),
            ("muc#roomconfig_membersonly", "1"),
        ],
    )
    .await;
    assert_eq!(done.attr("type"), Some("result"));
    let r = admin(
        &mut alice,
        room,
        "<item jid='bob@localhost' affiliation='member'/>",
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"));
    alice
        .send(&format!(
            "<message to='{room}' type='groupchat'><subject>Kept</subject></message>"
        ))
        .await;
    alice.expect(is_subject).await;
}

/// After a restart: the room, its configuration, affiliations and subject are all there.
async fn check_lasting_room(second: &TestServer, room: &str) {
    let mut bob = Session::online(second, "bob", "r").await;
    let (own, seen) = join_with(&mut bob, room, "Bob", "").await;
    assert!(!codes(&own).contains(&201), "the room still exists");
    assert_eq!(item(&own).attr("affiliation"), Some("member"));
    let subject = seen.last().expect("subject");
    assert_eq!(
        subject
            .get_child("subject", "jabber:client")
            .map(|s| s.text())
            .as_deref(),
        Some("Kept")
    );
    let mut carol = Session::online(second, "carol", "r").await;
    assert_eq!(
        join_error(&mut carol, room, "Carol", "").await,
        "registration-required"
    );
    let mut alice = Session::online(second, "alice", "r").await;
    let own = join(&mut alice, room, "Alice").await;
    assert_eq!(item(&own).attr("affiliation"), Some("owner"));
    let info = disco_info(&mut alice, room).await;
    assert!(features(&info).contains(&"muc_persistent".to_owned()));
    assert_eq!(
        form_value(&info, "muc#roomconfig_roomname").as_deref(),
        Some("Lasting")
    );
    // Listed on the service, even after everyone left.
    drop(bob);
    drop(alice);
    let items = carol
        .iq(&format!("<iq to='{SERVICE}' type='get'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>"))
        .await;
    let rooms: Vec<String> = items
        .get_child("query", "http://jabber.org/protocol/disco#items")
        .expect("items")
        .children()
        .filter_map(|i| i.attr("jid").map(str::to_owned))
        .collect();
    assert_eq!(rooms, vec![room.to_owned()]);
}

#[tokio::test]
async fn temporary_room_vanishes_when_the_last_occupant_leaves() {
    let t = TestServer::start().await;
    let room = format!("brief@{SERVICE}");
    let mut alice = online(&t, "alice").await;
    create_instant(&mut alice, &room, "Alice").await;
    let info = disco_info(&mut alice, &room).await;
    assert!(features(&info).contains(&"muc_temporary".to_owned()));
    alice
        .send(&format!("<presence to='{room}/Alice' type='unavailable'/>"))
        .await;
    alice
        .expect(|el| is_from(el, "presence", &format!("{room}/Alice")))
        .await;
    let info = disco_info(&mut alice, &room).await;
    assert_eq!(error_condition(&info).as_deref(), Some("item-not-found"));
    // Joining again creates a new room.
    let own = join(&mut alice, &room, "Alice").await;
    assert!(codes(&own).contains(&201));
}

#[tokio::test]
async fn destroy_with_alternate_venue() {
    let t = TestServer::start().await;
    let room = format!("doomed@{SERVICE}");
    let mut alice = online(&t, "alice").await;
    let mut bob = online(&t, "bob").await;
    join(&mut alice, &room, "Alice").await;
    configure(&mut alice, &room, &[("muc#roomconfig_persistentroom", "1")]).await;
    join(&mut bob, &room, "Bob").await;
    let refused = bob
        .iq(&format!(
            "<iq to='{room}' type='set'><query xmlns='http://jabber.org/protocol/muc#owner'><destroy/></query></iq>"
        ))
        .await;
    assert_eq!(error_condition(&refused).as_deref(), Some("forbidden"));
    let done = alice
        .iq(&format!(
            "<iq to='{room}' type='set'><query xmlns='http://jabber.org/protocol/muc#owner'>\
             <destroy jid='new@{SERVICE}'><reason>moved</reason></destroy></query></iq>"
        ))
        .await;
    assert_eq!(done.attr("type"), Some("result"));
    let p = bob
        .expect(|el| {
            is_from(el, "presence", &format!("{room}/Bob"))
                && el.attr("type") == Some("unavailable")
        })
        .await;
    let destroy = muc_x(&p)
        .and_then(|x| x.get_child("destroy", MUC_USER))
        .expect("destroy");
    assert_eq!(destroy.attr("jid"), Some(format!("new@{SERVICE}").as_str()));
    assert_eq!(
        destroy
            .get_child("reason", MUC_USER)
            .map(|r| r.text())
            .as_deref(),
        Some("moved")
    );
    let info = disco_info(&mut bob, &room).await;
    assert_eq!(error_condition(&info).as_deref(), Some("item-not-found"));
    let stored = t.storage().muc.muc_rooms().await.expect("rooms");
    assert!(stored.is_empty(), "destroyed room left in storage");
}

#[tokio::test]
async fn disco_info_on_the_service_and_the_room() {
    let t = TestServer::start().await;
    let mut alice = online(&t, "alice").await;
    let service = disco_info(&mut alice, SERVICE).await;
    let identity = service
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .and_then(|q| q.get_child("identity", "http://jabber.org/protocol/disco#info"))
        .expect("identity");
    assert_eq!(identity.attr("category"), Some("conference"));
    assert_eq!(identity.attr("type"), Some("text"));
    assert!(features(&service).contains(&MUC.to_owned()));
    // The server lists the service.
    let items = alice
        .iq("<iq to='localhost' type='get'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
        .await;
    assert!(corvid::xml::to_string(&items).contains(SERVICE));

    let room = format!("info@{SERVICE}");
    join(&mut alice, &room, "Alice").await;
    configure(
        &mut alice,
        &room,
        &[
            ("muc#roomconfig_roomdesc", "All about it"),
            ("muc#roomconfig_publicroom", "0"),
        ],
    )
    .await;
    let info = disco_info(&mut alice, &room).await;
    assert_eq!(
        form_value(&info, "FORM_TYPE").as_deref(),
        Some("http://jabber.org/protocol/muc#roominfo")
    );
    assert_eq!(
        form_value(&info, "muc#roominfo_occupants").as_deref(),
        Some("1")
    );
    assert_eq!(
        form_value(&info, "muc#roominfo_description").as_deref(),
        Some("All about it")
    );
    let f = features(&info);
    for var in [
        "muc_temporary",
        "muc_open",
        "muc_unmoderated",
        "muc_semianonymous",
        "muc_unsecured",
        "muc_hidden",
        "urn:xmpp:occupant-id:0",
        "http://jabber.org/protocol/muc#self-ping-optimization",
    ] {
        assert!(f.contains(&var.to_owned()), "{var} in {f:?}");
    }
    // Hidden rooms are not listed on the service.
    let items = alice
        .iq(&format!("<iq to='{SERVICE}' type='get'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>"))
        .await;
    assert!(!corvid::xml::to_string(&items).contains(&room));
}

#[tokio::test]
async fn self_ping_is_answered_by_the_room() {
    let t = TestServer::start().await;
    let room = format!("ping@{SERVICE}");
    let mut alice = online(&t, "alice").await;
    let mut bob = online(&t, "bob").await;
    create_instant(&mut alice, &room, "Alice").await;
    let pong = alice
        .iq(&format!(
            "<iq to='{room}/Alice' type='get'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await;
    assert_eq!(pong.attr("type"), Some("result"));
    assert_eq!(pong.attr("from"), Some(format!("{room}/Alice").as_str()));
    let refused = bob
        .iq(&format!(
            "<iq to='{room}/Alice' type='get'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await;
    assert_eq!(error_condition(&refused).as_deref(), Some("not-acceptable"));
}

#[tokio::test]
async fn groupchat_carries_stanza_id_and_occupant_id() {
    let t = TestServer::start().await;
    let room = format!("ids@{SERVICE}");
    let mut alice = online(&t, "alice").await;
    let mut bob = online(&t, "bob").await;
    create_instant(&mut alice, &room, "Alice").await;
    let own = join(&mut bob, &room, "Bob").await;
    let bob_id = own
        .get_child("occupant-id", "urn:xmpp:occupant-id:0")
        .and_then(|o| o.attr("id"))
        .expect("occupant-id on presence")
        .to_owned();
    bob.send(&format!(
        "<message to='{room}' type='groupchat'><body>one</body>\
         <stanza-id xmlns='urn:xmpp:sid:0' id='forged' by='{room}'/>\
         <occupant-id xmlns='urn:xmpp:occupant-id:0' id='forged'/></message>"
    ))
    .await;
    let got = alice.expect(body_is("one")).await;
    let ids: Vec<&Element> = got
        .children()
        .filter(|c| c.is("stanza-id", "urn:xmpp:sid:0"))
        .collect();
    assert_eq!(ids.len(), 1, "{}", corvid::xml::to_string(&got));
    assert_eq!(ids[0].attr("by"), Some(room.as_str()));
    assert_ne!(ids[0].attr("id"), Some("forged"));
    let occupant: Vec<&Element> = got
        .children()
        .filter(|c| c.is("occupant-id", "urn:xmpp:occupant-id:0"))
        .collect();
    assert_eq!(occupant.len(), 1);
    assert_eq!(occupant[0].attr("id"), Some(bob_id.as_str()));
    // Stable per account: another session of Bob gets the same id.
    say(&mut bob, &room, "two").await;
    let second = alice.expect(body_is("two")).await;
    let first_id = ids[0].attr("id").map(str::to_owned);
    let second_id = second
        .get_child("stanza-id", "urn:xmpp:sid:0")
        .and_then(|s| s.attr("id"))
        .map(str::to_owned);
    assert_ne!(first_id, second_id);
    let mut bob2 = Session::online(&t, "bob", "two").await;
    let own2 = join(&mut bob2, &room, "Bob2").await;
    assert_eq!(
        own2.get_child("occupant-id", "urn:xmpp:occupant-id:0")
            .and_then(|o| o.attr("id")),
        Some(bob_id.as_str())
    );
}

#[tokio::test]
async fn direct_and_mediated_invitations_arrive() {
    let t = TestServer::start().await;
    let room = format!("party@{SERVICE}");
    let mut alice = online(&t, "alice").await;
    let mut bob = online(&t, "bob").await;
    create_instant(&mut alice, &room, "Alice").await;
    // XEP-0249: client to client, the server only routes it.
    alice
        .send(&format!(
            "<message to='bob@localhost'><x xmlns='jabber:x:conference' jid='{room}' reason='come'/></message>"
        ))
        .await;
    let direct = bob
        .expect(|el| el.name() == "message" && el.has_child("x", "jabber:x:conference"))
        .await;
    assert_eq!(
        direct
            .get_child("x", "jabber:x:conference")
            .and_then(|x| x.attr("jid")),
        Some(room.as_str())
    );
    // Only occupants invite through the room.
    bob.send(&format!(
        "<message to='{room}' id='i1'><x xmlns='{MUC_USER}'><invite to='alice@localhost'/></x></message>"
    ))
    .await;
    let error = bob.expect(|el| el.attr("id") == Some("i1")).await;
    assert_eq!(error_condition(&error).as_deref(), Some("not-acceptable"));
}

#[tokio::test]
async fn a_stalled_occupant_does_not_delay_the_others() {
    // A small session queue, so that the stalled occupant's queue is full early; alice sends
    // as fast as the room echoes, well past the default rate of one occupant, and ~9.6 MB on
    // purpose: unshaped, or the default 64 KiB/s would make this take minutes.
    let t = TestServer::start_with(|c| {
        c.limits.session_queue = 16;
        c.muc.occupant_messages_per_second = 0;
        c.limits.bytes_rate_per_session = 0;
    })
    .await;
    let room = format!("busy@{SERVICE}");
    let mut alice = online(&t, "alice").await;
    let mut bob = online(&t, "bob").await;
    let mut stalled = online(&t, "stalled").await;
    create_instant(&mut alice, &room, "Alice").await;
    join(&mut bob, &room, "Bob").await;
    join(&mut stalled, &room, "Stalled").await;
    // From here on, nobody reads `stalled`'s socket. 600 messages of 16 KiB are ~9.6 MB for
    // it: far more than an unread loopback socket and a 16-stanza queue hold, so a fan-out
    // that waited for it would stop here and the others would time out.
    let filler = "x".repeat(16 * 1024);
    let stalled_nick = format!("{room}/Stalled");
    let left = |el: &Element| {
        el.name() == "presence"
            && el.attr("type") == Some("unavailable")
            && el.attr("from") == Some(stalled_nick.as_str())
    };
    let mut stalled_left = false;
    for i in 0..600 {
        let body = format!("m{i}-{filler}");
        say(&mut alice, &room, &body).await;
        alice.expect(body_is(&body)).await;
        loop {
            let el = bob.next().await;
            stalled_left |= left(&el);
            if body_is(&body)(&el) {
                break;
            }
        }
    }
    // The occupant that could not keep up was disconnected, not fed a gap: the room saw it
    // leave.
    if !stalled_left {
        bob.expect(left).await;
    }
    drop(stalled);
}

const RETRACT: &str = "urn:xmpp:message-retract:1";
const MODERATE: &str = "urn:xmpp:message-moderate:1";

fn room_stanza_id(el: &Element) -> String {
    el.get_child("stanza-id", "urn:xmpp:sid:0")
        .and_then(|s| s.attr("id"))
        .expect("stanza-id")
        .to_owned()
}

fn retraction_of<'a>(el: &'a Element, id: &str) -> Option<&'a Element> {
    el.get_child("retract", RETRACT)
        .filter(|r| r.attr("id") == Some(id))
}

#[tokio::test]
async fn moderators_retract_any_message_and_history_keeps_a_tombstone() {
    let t = TestServer::start().await;
    let room = format!("moderated@{SERVICE}");
    let mut alice = online(&t, "alice").await;
    let mut bob = online(&t, "bob").await;
    create_instant(&mut alice, &room, "Alice").await;
    join(&mut bob, &room, "Bob").await;
    say(&mut bob, &room, "spam spam").await;
    let spam = alice.expect(body_is("spam spam")).await;
    let id = room_stanza_id(&spam);
    bob.expect(body_is("spam spam")).await;

    // A participant may not moderate; an unknown id is item-not-found.
    let refused = bob
        .iq(&format!(
            "<iq to='{room}' type='set'><moderate id='{id}' xmlns='{MODERATE}'><retract xmlns='{RETRACT}'/></moderate></iq>"
        ))
        .await;
    assert_eq!(error_condition(&refused).as_deref(), Some("forbidden"));
    let unknown = alice
        .iq(&format!(
            "<iq to='{room}' type='set'><moderate id='no-such-id' xmlns='{MODERATE}'><retract xmlns='{RETRACT}'/></moderate></iq>"
        ))
        .await;
    assert_eq!(error_condition(&unknown).as_deref(), Some("item-not-found"));

    let done = alice
        .iq(&format!(
            "<iq to='{room}' type='set'><moderate id='{id}' xmlns='{MODERATE}'><retract xmlns='{RETRACT}'/><reason>off topic</reason></moderate></iq>"
        ))
        .await;
    assert_eq!(done.attr("type"), Some("result"), "{done:?}");
    for session in [&mut alice, &mut bob] {
        let announcement = session.expect(|el| retraction_of(el, &id).is_some()).await;
        assert_eq!(announcement.attr("from"), Some(room.as_str()));
        assert_eq!(announcement.attr("type"), Some("groupchat"));
        let retract = retraction_of(&announcement, &id).unwrap();
        let moderated = retract.get_child("moderated", MODERATE).expect("moderated");
        assert_eq!(moderated.attr("by"), Some(format!("{room}/Alice").as_str()));
        assert!(moderated.has_child("occupant-id", "urn:xmpp:occupant-id:0"));
        assert_eq!(
            retract
                .get_child("reason", MODERATE)
                .map(|r| r.text())
                .as_deref(),
            Some("off topic")
        );
    }
    // The room's archive has the announcement, so a client catching up through MAM learns
    // of the retraction too.
    let fin = alice
        .iq(&format!(
            "<iq to='{room}' type='set'><query xmlns='urn:xmpp:mam:2' queryid='q1'/></iq>"
        ))
        .await;
    assert_eq!(fin.attr("type"), Some("result"), "{fin:?}");
    let results = alice.drain().await;
    assert!(
        results.iter().any(|el| {
            el.get_child("result", "urn:xmpp:mam:2")
                .and_then(|r| r.get_child("forwarded", "urn:xmpp:forward:0"))
                .and_then(|f| f.get_child("message", "jabber:client"))
                .is_some_and(|m| retraction_of(m, &id).is_some())
        }),
        "{results:?}"
    );
    // A newcomer's history has the tombstone, not the text.
    let mut carol = online(&t, "carol").await;
    let (_, seen) = join_with(&mut carol, &room, "Carol", "").await;
    let kept: Vec<&Element> = seen
        .iter()
        .filter(|el| {
            el.get_child("stanza-id", "urn:xmpp:sid:0")
                .and_then(|s| s.attr("id"))
                == Some(id.as_str())
        })
        .collect();
    assert_eq!(kept.len(), 1, "{seen:?}");
    assert!(!kept[0].has_child("body", "jabber:client"));
    assert!(kept[0].has_child("retracted", RETRACT));
    assert!(seen.iter().all(|el| !body_is("spam spam")(el)));
}

const FASTEN: &str = "urn:xmpp:fasten:0";
const MODERATE_0: &str = "urn:xmpp:message-moderate:0";
const RETRACT_0: &str = "urn:xmpp:message-retract:0";

/// The legacy (XEP-0425 before 0.3) announcement for `id`: its `<moderated/>`.
fn legacy_moderation_of<'a>(el: &'a Element, id: &str) -> Option<&'a Element> {
    el.get_child("apply-to", FASTEN)
        .filter(|a| a.attr("id") == Some(id))?
        .get_child("moderated", MODERATE_0)
        .filter(|m| m.has_child("retract", RETRACT_0))
}

#[tokio::test]
async fn legacy_moderation_requests_work_and_every_announcement_has_both_forms() {
    let t = TestServer::start().await;
    let room = format!("legacy@{SERVICE}");
    let mut alice = online(&t, "alice").await;
    let mut bob = online(&t, "bob").await;
    create_instant(&mut alice, &room, "Alice").await;
    join(&mut bob, &room, "Bob").await;
    let info = alice
        .iq(&format!(
            "<iq to='{room}' type='get'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
        ))
        .await;
    let features: Vec<&str> = info
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .expect("disco#info")
        .children()
        .filter_map(|f| f.attr("var"))
        .collect();
    assert!(
        features.contains(&MODERATE_0) && features.contains(&MODERATE),
        "{features:?}"
    );

    // A current request: the announcement also speaks the legacy form.
    say(&mut bob, &room, "first spam").await;
    let first = room_stanza_id(&alice.expect(body_is("first spam")).await);
    let done = alice
        .iq(&format!(
            "<iq to='{room}' type='set'><moderate id='{first}' xmlns='{MODERATE}'><retract xmlns='{RETRACT}'/><reason>spam</reason></moderate></iq>"
        ))
        .await;
    assert_eq!(done.attr("type"), Some("result"), "{done:?}");
    let announcement = bob.expect(|el| retraction_of(el, &first).is_some()).await;
    let legacy = legacy_moderation_of(&announcement, &first).expect("legacy form");
    assert_eq!(legacy.attr("by"), Some(format!("{room}/Alice").as_str()));
    assert_eq!(
        legacy
            .get_child("reason", MODERATE_0)
            .map(|r| r.text())
            .as_deref(),
        Some("spam")
    );

    // A legacy request from an older client: same effect, both forms announced.
    say(&mut bob, &room, "second spam").await;
    let second = room_stanza_id(&alice.expect(body_is("second spam")).await);
    let refused = bob
        .iq(&format!(
            "<iq to='{room}' type='set'><apply-to xmlns='{FASTEN}' id='{second}'><moderate xmlns='{MODERATE_0}'><retract xmlns='{RETRACT_0}'/></moderate></apply-to></iq>"
        ))
        .await;
    assert_eq!(error_condition(&refused).as_deref(), Some("forbidden"));
    let done = alice
        .iq(&format!(
            "<iq to='{room}' type='set'><apply-to xmlns='{FASTEN}' id='{second}'><moderate xmlns='{MODERATE_0}'><retract xmlns='{RETRACT_0}'/><reason>again</reason></moderate></apply-to></iq>"
        ))
        .await;
    assert_eq!(done.attr("type"), Some("result"), "{done:?}");
    let announcement = bob.expect(|el| retraction_of(el, &second).is_some()).await;
    assert_eq!(
        legacy_moderation_of(&announcement, &second)
            .and_then(|m| m.get_child("reason", MODERATE_0))
            .map(|r| r.text())
            .as_deref(),
        Some("again")
    );
    let retract = retraction_of(&announcement, &second).unwrap();
    assert!(retract.has_child("moderated", MODERATE));
    // A legacy request without <retract/> is refused as the current one is.
    let bad = alice
        .iq(&format!(
            "<iq to='{room}' type='set'><apply-to xmlns='{FASTEN}' id='{second}'><moderate xmlns='{MODERATE_0}'/></apply-to></iq>"
        ))
        .await;
    assert_eq!(error_condition(&bad).as_deref(), Some("bad-request"));
}

#[tokio::test]
async fn occupants_retract_only_their_own_messages() {
    let t = TestServer::start().await;
    let room = format!("retract@{SERVICE}");
    let mut alice = online(&t, "alice").await;
    let mut bob = online(&t, "bob").await;
    create_instant(&mut alice, &room, "Alice").await;
    join(&mut bob, &room, "Bob").await;
    say(&mut alice, &room, "typo").await;
    let id = room_stanza_id(&bob.expect(body_is("typo")).await);
    alice.expect(body_is("typo")).await;

    // Bob cannot retract Alice's message.
    bob.send(&format!(
        "<message to='{room}' type='groupchat' id='r1'><retract id='{id}' xmlns='{RETRACT}'/></message>"
    ))
    .await;
    let error = bob
        .expect(|el| el.attr("type") == Some("error") && el.attr("id") == Some("r1"))
        .await;
    assert_eq!(error_condition(&error).as_deref(), Some("forbidden"));

    alice
        .send(&format!(
            "<message to='{room}' type='groupchat' id='r2'><retract id='{id}' xmlns='{RETRACT}'/>\
             <fallback xmlns='urn:xmpp:fallback:0' for='{RETRACT}'/>\
             <body>This person attempted to retract a previous message</body></message>"
        ))
        .await;
    let relayed = bob.expect(|el| retraction_of(el, &id).is_some()).await;
    assert_eq!(relayed.attr("from"), Some(format!("{room}/Alice").as_str()));
    let mut carol = online(&t, "carol").await;
    let (_, seen) = join_with(&mut carol, &room, "Carol", "").await;
    assert!(seen.iter().all(|el| !body_is("typo")(el)), "{seen:?}");
    // The retraction itself is not history either.
    assert!(seen
        .iter()
        .all(|el| el.get_child("retract", RETRACT).is_none()));
    let info = disco_info(&mut carol, &room).await;
    let vars = features(&info);
    assert!(vars.iter().any(|v| v == MODERATE) && vars.iter().any(|v| v == RETRACT));
}

#[tokio::test]
async fn occupant_ids_survive_a_restart() {
    let first = TestServer::start().await;
    first.add_user("alice").await;
    let db = first.db_path();
    let room = format!("ids-kept@{SERVICE}");
    let occupant_id = |own: &Element| {
        own.get_child("occupant-id", "urn:xmpp:occupant-id:0")
            .and_then(|o| o.attr("id"))
            .map(str::to_owned)
            .expect("occupant-id")
    };
    let before = {
        let mut alice = Session::online(&first, "alice", "r").await;
        occupant_id(&join(&mut alice, &room, "Alice").await)
    };
    let TestServer { server, dir, .. } = first;
    server.shutdown().await;
    let url = format!("sqlite://{}", db.display());
    let second = TestServer::start_with(|c| c.storage.url = url).await;
    let mut alice = Session::online(&second, "alice", "r").await;
    let after = occupant_id(&join(&mut alice, &room, "Alice").await);
    assert_eq!(before, after);
    drop(dir);
}
