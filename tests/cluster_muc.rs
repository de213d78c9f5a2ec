//! Multi-User Chat on a cluster of three nodes (one PostgreSQL schema, one Redis key prefix,
//! each node on its own runtime so that a test can kill one where it stands): a room with
//! occupants on every node, the node serving it dying (self-ping answers `not-acceptable`,
//! occupants join again on another node, the persistent room keeps its configuration), and
//! a node that is not serving it dying (its occupants leave with status 333).
//!
//! Needs CORVID_TEST_POSTGRES and a Redis server on 127.0.0.1:6379; skipped (with a word
//! said) without the first.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::cluster::{start_one_node, LOCAL_REDIS};
use common::xmpp::{error_condition, Session};
use common::TestServer;
use minidom::Element;

const MUC: &str = "http://jabber.org/protocol/muc";
const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const SERVICE: &str = "conference.localhost";
const NODE_TIMEOUT_SECS: u64 = 3;

/// A node on a runtime of its own: killing it stops every task of it at once, heartbeat
/// included, and closes its connections without a word, as a crash would.
struct Node {
    server: Option<Arc<TestServer>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Node {
    async fn start(url: &str, schema: &str, prefix: &str, name: &str, ip: [u8; 4]) -> Node {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("node runtime");
        let (url, schema, prefix, name) = (
            url.to_owned(),
            schema.to_owned(),
            prefix.to_owned(),
            name.to_owned(),
        );
        let server = runtime
            .spawn(async move {
                start_one_node(&url, &schema, &prefix, &name, ip, LOCAL_REDIS, |c| {
                    c.cluster.node_timeout_secs = NODE_TIMEOUT_SECS
                })
                .await
            })
            .await
            .expect("node starts");
        Node {
            server: Some(Arc::new(server)),
            runtime: Some(runtime),
        }
    }

    fn server(&self) -> &Arc<TestServer> {
        self.server.as_ref().expect("node running")
    }

    async fn add_user(&self, name: &'static str) {
        let server = self.server().clone();
        self.runtime
            .as_ref()
            .expect("node running")
            .spawn(async move { server.add_user(name).await })
            .await
            .expect("user added");
    }

    fn router(&self) -> &Arc<corvid::router::Router> {
        &self.server().server.ctx.router
    }

    fn number(&self) -> corvid::router::NodeId {
        self.router().cluster().expect("a cluster node").node()
    }

    /// Stops the node as `corvid` does on SIGTERM.
    async fn shut_down(&mut self) {
        let server = self.server.take().expect("node running");
        let Ok(server) = Arc::try_unwrap(server) else {
            panic!("the node is still in use");
        };
        self.runtime
            .as_ref()
            .expect("node running")
            .spawn(async move { server.server.shutdown().await })
            .await
            .expect("shut down");
    }

    fn crash(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // A runtime may not be dropped inside another one (the test's) but may be shut down.
        self.crash();
    }
}

/// Three nodes on a fresh schema and Redis prefix; `None` (said why) without PostgreSQL.
async fn cluster(first_ip: u8) -> Option<(String, [Node; 3])> {
    cluster_with_prefix(first_ip)
        .await
        .map(|(schema, _, nodes)| (schema, nodes))
}

/// `cluster`, with the Redis key prefix.
async fn cluster_with_prefix(first_ip: u8) -> Option<(String, String, [Node; 3])> {
    let Ok(url) = std::env::var("CORVID_TEST_POSTGRES") else {
        eprintln!("skipped: CORVID_TEST_POSTGRES is not set");
        return None;
    };
    let suffix: u64 = rand::random();
    let schema = format!("corvid_cmuc_{suffix:016x}");
    let prefix = format!("cmuc{suffix:016x}");
    let mut nodes = Vec::new();
    for (i, name) in ["n1", "n2", "n3"].into_iter().enumerate() {
        let ip = [127, 0, 0, first_ip + i as u8];
        nodes.push(Node::start(&url, &schema, &prefix, name, ip).await);
    }
    let nodes: [Node; 3] = nodes.try_into().ok()?;
    Some((schema, prefix, nodes))
}

/// Online on `node` and seen bound by every node of `all`.
async fn online(node: &Node, all: &[&Node], user: &str) -> Session {
    let session = Session::online(node.server(), user, "r").await;
    let jid: jid::FullJid = session.jid.parse().expect("jid");
    let deadline = tokio::time::Instant::now() + common::WAIT;
    for other in all {
        while !other.router().is_bound(&jid) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{jid} never visible on every node"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    session
}

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

fn item(el: &Element) -> Option<&Element> {
    el.get_child("x", MUC_USER)
        .and_then(|x| x.get_child("item", MUC_USER))
}

fn is_presence_from(el: &Element, from: &str, kind: Option<&str>) -> bool {
    el.name() == "presence" && el.attr("from") == Some(from) && el.attr("type") == kind
}

fn body_is<'a>(text: &'a str) -> impl Fn(&Element) -> bool + 'a {
    move |el| {
        el.name() == "message"
            && el
                .get_child("body", "jabber:client")
                .is_some_and(|b| b.text() == text)
    }
}

/// Joins `room` as `nick`: the own presence (status 110), after everything up to the subject.
async fn join(s: &mut Session, room: &str, nick: &str) -> Element {
    s.send(&format!(
        "<presence to='{room}/{nick}'><x xmlns='{MUC}'/></presence>"
    ))
    .await;
    let mut own = None;
    loop {
        let el = s.next().await;
        assert_ne!(
            el.attr("type"),
            Some("error"),
            "join of {nick} refused: {}",
            corvid::xml::to_string(&el)
        );
        if el.name() == "presence" && codes(&el).contains(&110) {
            own = Some(el.clone());
        }
        if el.name() == "message" && el.has_child("subject", "jabber:client") {
            return own.expect("own presence before the subject");
        }
    }
}

/// An IQ and its answer, or `None` when none came within `wait` (what a client sees of a
/// room whose node just died).
async fn iq_within(s: &mut Session, xml_without_id: &str, wait: Duration) -> Option<Element> {
    let id = Session::marker();
    s.send(&xml_without_id.replacen("<iq ", &format!("<iq id='{id}' "), 1))
        .await;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let el = tokio::time::timeout_at(deadline, s.next()).await.ok()?;
        if el.name() == "iq" && el.attr("id") == Some(id.as_str()) {
            return Some(el);
        }
    }
}

fn self_ping(room: &str, nick: &str) -> String {
    format!("<iq to='{room}/{nick}' type='get'><ping xmlns='urn:xmpp:ping'/></iq>")
}

/// XEP-0410 as a client runs it after losing touch: pings its own occupant JID until the
/// room answers something else than silence or "try later".
async fn self_ping_until_answered(s: &mut Session, room: &str, nick: &str) -> Element {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(NODE_TIMEOUT_SECS + 15);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the room never answered {nick}'s self-ping"
        );
        let answer = iq_within(s, &self_ping(room, nick), Duration::from_secs(2)).await;
        match answer {
            Some(answer)
                if error_condition(&answer).as_deref() != Some("remote-server-timeout") =>
            {
                return answer
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn form_value(info: &Element, var: &str) -> Option<String> {
    let query = info.get_child("query", "http://jabber.org/protocol/disco#info")?;
    let form = query.get_child("x", "jabber:x:data")?;
    let field = form
        .children()
        .find(|f| f.name() == "field" && f.attr("var") == Some(var))?;
    field.get_child("value", "jabber:x:data").map(|v| v.text())
}

fn has_feature(info: &Element, feature: &str) -> bool {
    info.get_child("query", "http://jabber.org/protocol/disco#info")
        .is_some_and(|q| {
            q.children()
                .any(|f| f.name() == "feature" && f.attr("var") == Some(feature))
        })
}

#[tokio::test]
async fn a_room_spans_three_nodes_and_outlives_the_node_serving_it() {
    let Some((schema, [mut n1, n2, n3])) = cluster(61).await else {
        return;
    };
    for user in ["alice", "bob", "carol", "dave"] {
        n1.add_user(user).await;
    }
    let all = [&n1, &n2, &n3];
    let mut alice = online(&n1, &all, "alice").await;
    let mut bob = online(&n2, &all, "bob").await;
    let mut carol = online(&n3, &all, "carol").await;
    let mut dave = online(&n3, &all, "dave").await;
    let room = format!("council@{SERVICE}");

    // Created on n1, which therefore serves it; made persistent and named.
    let own = join(&mut alice, &room, "Alice").await;
    assert!(codes(&own).contains(&201), "a new room");
    let configured = alice
        .iq(&format!(
            "<iq to='{room}' type='set'><query xmlns='http://jabber.org/protocol/muc#owner'>\
             <x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>\
             <field var='muc#roomconfig_persistentroom'><value>1</value></field>\
             <field var='muc#roomconfig_publicroom'><value>1</value></field>\
             <field var='muc#roomconfig_roomname'><value>The Council</value></field>\
             </x></query></iq>"
        ))
        .await;
    assert_eq!(configured.attr("type"), Some("result"));

    // Joins from the two other nodes: everyone sees everyone.
    let own = join(&mut bob, &room, "Bob").await;
    assert!(!codes(&own).contains(&201));
    alice
        .expect(|el| is_presence_from(el, &format!("{room}/Bob"), None))
        .await;
    join(&mut carol, &room, "Carol").await;
    for s in [&mut alice, &mut bob] {
        s.expect(|el| is_presence_from(el, &format!("{room}/Carol"), None))
            .await;
    }
    join(&mut dave, &room, "Dave").await;
    for s in [&mut alice, &mut bob, &mut carol] {
        s.expect(|el| is_presence_from(el, &format!("{room}/Dave"), None))
            .await;
    }

    // Leaving from n3.
    dave.send(&format!("<presence to='{room}/Dave' type='unavailable'/>"))
        .await;
    let gone = dave
        .expect(|el| is_presence_from(el, &format!("{room}/Dave"), Some("unavailable")))
        .await;
    assert!(codes(&gone).contains(&110));
    for s in [&mut alice, &mut bob, &mut carol] {
        let gone = s
            .expect(|el| is_presence_from(el, &format!("{room}/Dave"), Some("unavailable")))
            .await;
        assert!(!codes(&gone).contains(&333), "left, not lost");
    }

    // XEP-0410 from an occupant that left, on a node that does not serve the room.
    let refused = dave.iq(&self_ping(&room, "Dave")).await;
    assert_eq!(error_condition(&refused).as_deref(), Some("not-acceptable"));

    // Groupchat from n2: one copy each, wherever the occupant is.
    bob.send(&format!(
        "<message to='{room}' type='groupchat'><body>hello all</body></message>"
    ))
    .await;
    bob.send(&format!(
        "<message to='{room}' type='groupchat'><body>second</body></message>"
    ))
    .await;
    for s in [&mut alice, &mut bob, &mut carol] {
        let mut copies = 0;
        loop {
            let el = s.next().await;
            if body_is("hello all")(&el) {
                assert_eq!(el.attr("from"), Some(format!("{room}/Bob").as_str()));
                copies += 1;
            }
            if body_is("second")(&el) {
                break;
            }
        }
        assert_eq!(copies, 1, "{} got one copy", s.jid);
    }

    // A private message from an occupant on n3 to one on n2, through the room on n1.
    carol
        .send(&format!(
            "<message to='{room}/Bob' type='chat'><body>psst</body></message>"
        ))
        .await;
    let private = bob.expect(body_is("psst")).await;
    assert_eq!(private.attr("from"), Some(format!("{room}/Carol").as_str()));

    // An IQ between occupants on n2 and n3 (through the room on n1), and its answer back.
    bob.send(&format!(
        "<iq id='ask-carol' to='{room}/Carol' type='get'><query xmlns='jabber:iq:version'/></iq>"
    ))
    .await;
    let asked = carol
        .expect(|el| el.name() == "iq" && el.attr("type") == Some("get"))
        .await;
    assert_eq!(asked.attr("from"), Some(format!("{room}/Bob").as_str()));
    carol
        .send(&format!(
            "<iq id='{}' to='{room}/Bob' type='result'><query xmlns='jabber:iq:version'>\
             <name>test</name></query></iq>",
            asked.attr("id").expect("id")
        ))
        .await;
    let answer = bob
        .expect(|el| el.name() == "iq" && el.attr("id") == Some("ask-carol"))
        .await;
    assert_eq!(answer.attr("type"), Some("result"));
    assert_eq!(answer.attr("from"), Some(format!("{room}/Carol").as_str()));

    // A nick change from n3.
    carol
        .send(&format!("<presence to='{room}/Caroline'/>"))
        .await;
    for s in [&mut alice, &mut bob, &mut carol] {
        let old = s
            .expect(|el| is_presence_from(el, &format!("{room}/Carol"), Some("unavailable")))
            .await;
        assert!(codes(&old).contains(&303));
        assert_eq!(item(&old).and_then(|i| i.attr("nick")), Some("Caroline"));
        s.expect(|el| is_presence_from(el, &format!("{room}/Caroline"), None))
            .await;
    }

    // Self-ping while joined, from a node that does not serve the room.
    let pong = carol.iq(&self_ping(&room, "Caroline")).await;
    assert_eq!(pong.attr("type"), Some("result"));

    // Every node lists the persistent room, named.
    for s in [&mut bob, &mut carol] {
        let items = s
            .iq(&format!(
                "<iq to='{SERVICE}' type='get'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>"
            ))
            .await;
        let listed = corvid::xml::to_string(&items);
        assert!(
            listed.contains(&room) && listed.contains("The Council"),
            "{listed}"
        );
    }

    // The node serving the room dies.
    let dead = n1.number();
    n1.crash();
    drop(alice);

    // Clients that self-ping learn they are no longer in the room: XEP-0410's not-acceptable
    // once a surviving node took the room over.
    let answer = self_ping_until_answered(&mut bob, &room, "Bob").await;
    assert_eq!(
        error_condition(&answer).as_deref(),
        Some("not-acceptable"),
        "{}",
        corvid::xml::to_string(&answer)
    );
    let answer = self_ping_until_answered(&mut carol, &room, "Caroline").await;
    assert_eq!(
        error_condition(&answer).as_deref(),
        Some("not-acceptable"),
        "{}",
        corvid::xml::to_string(&answer)
    );
    assert!(!n2.router().cluster().expect("cluster").is_alive(dead));

    // They join again, on another node; the room is the same room, configured as it was.
    let own = join(&mut bob, &room, "Bob").await;
    assert!(
        !codes(&own).contains(&201),
        "the stored room, not a new one"
    );
    join(&mut carol, &room, "Caroline").await;
    bob.expect(|el| is_presence_from(el, &format!("{room}/Caroline"), None))
        .await;
    let info = carol
        .iq(&format!(
            "<iq to='{room}' type='get'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
        ))
        .await;
    assert_eq!(
        form_value(&info, "muc#roomconfig_roomname").as_deref(),
        Some("The Council")
    );
    assert!(has_feature(&info, "muc_persistent"));
    assert!(has_feature(&info, "muc_public"));
    assert_eq!(
        form_value(&info, "muc#roominfo_occupants").as_deref(),
        Some("2")
    );
    carol
        .send(&format!(
            "<message to='{room}' type='groupchat'><body>back</body></message>"
        ))
        .await;
    bob.expect(body_is("back")).await;
    carol.expect(body_is("back")).await;

    drop((n2, n3));
    common::drop_schema(&schema).await;
}

#[tokio::test]
async fn occupants_of_a_dead_node_leave_the_room_with_status_333() {
    let Some((schema, [n1, n2, mut n3])) = cluster(71).await else {
        return;
    };
    for user in ["alice", "bob", "carol", "dave"] {
        n1.add_user(user).await;
    }
    let all = [&n1, &n2, &n3];
    let mut alice = online(&n1, &all, "alice").await;
    let mut bob = online(&n2, &all, "bob").await;
    let mut carol = online(&n3, &all, "carol").await;
    let room = format!("lounge@{SERVICE}");

    // A temporary room, served by n1 where it was created.
    let own = join(&mut alice, &room, "Alice").await;
    assert!(codes(&own).contains(&201));
    let created = alice
        .iq(&format!(
            "<iq to='{room}' type='set'><query xmlns='http://jabber.org/protocol/muc#owner'>\
             <x xmlns='jabber:x:data' type='submit'/></query></iq>"
        ))
        .await;
    assert_eq!(created.attr("type"), Some("result"));
    join(&mut bob, &room, "Bob").await;
    join(&mut carol, &room, "Carol").await;
    for s in [&mut alice, &mut bob] {
        s.expect(|el| is_presence_from(el, &format!("{room}/Carol"), None))
            .await;
    }

    // A session lost on a node that does not serve the room: 333 too, as on a single node.
    let mut dave = online(&n2, &all, "dave").await;
    join(&mut dave, &room, "Dave").await;
    alice
        .expect(|el| is_presence_from(el, &format!("{room}/Dave"), None))
        .await;
    drop(dave);
    let gone = alice
        .expect(|el| is_presence_from(el, &format!("{room}/Dave"), Some("unavailable")))
        .await;
    assert!(
        codes(&gone).contains(&333),
        "{}",
        corvid::xml::to_string(&gone)
    );

    n3.crash();
    drop(carol);
    let within = Duration::from_secs(NODE_TIMEOUT_SECS + 5);
    for s in [&mut alice, &mut bob] {
        let gone = tokio::time::timeout(
            within,
            s.expect(|el| is_presence_from(el, &format!("{room}/Carol"), Some("unavailable"))),
        )
        .await
        .expect("Carol left the room within the node timeout and a few seconds");
        assert!(
            codes(&gone).contains(&333),
            "{}",
            corvid::xml::to_string(&gone)
        );
    }

    // The room goes on for the others.
    bob.send(&format!(
        "<message to='{room}' type='groupchat'><body>still here</body></message>"
    ))
    .await;
    alice.expect(body_is("still here")).await;
    let info = bob
        .iq(&format!(
            "<iq to='{room}' type='get'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
        ))
        .await;
    assert_eq!(
        form_value(&info, "muc#roominfo_occupants").as_deref(),
        Some("2")
    );

    drop((n1, n2));
    common::drop_schema(&schema).await;
}

/// Joins, trying again while the room is between nodes (a wait error): what a client does
/// after status 332.
async fn join_again(s: &mut Session, room: &str, nick: &str) -> Element {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(NODE_TIMEOUT_SECS + 15);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{nick} never joined again"
        );
        s.send(&format!(
            "<presence to='{room}/{nick}'><x xmlns='{MUC}'/></presence>"
        ))
        .await;
        let answer = tokio::time::timeout(
            Duration::from_secs(2),
            s.expect(|el| {
                el.name() == "presence"
                    && el.attr("from") == Some(format!("{room}/{nick}").as_str())
            }),
        )
        .await;
        match answer {
            Ok(el) if el.attr("type") == Some("error") => {
                assert_eq!(
                    error_condition(&el).as_deref(),
                    Some("remote-server-timeout"),
                    "{}",
                    corvid::xml::to_string(&el)
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(el) => {
                // The rest of the join, up to the subject.
                s.expect(|el| el.name() == "message" && el.has_child("subject", "jabber:client"))
                    .await;
                return el;
            }
            Err(_) => {}
        }
    }
}

#[tokio::test]
async fn a_node_shutting_down_sends_its_rooms_occupants_elsewhere() {
    let Some((schema, [mut n1, n2, n3])) = cluster(81).await else {
        return;
    };
    for user in ["alice", "bob", "carol"] {
        n1.add_user(user).await;
    }
    let all = [&n1, &n2, &n3];
    let mut alice = online(&n1, &all, "alice").await;
    let mut bob = online(&n2, &all, "bob").await;
    let mut carol = online(&n3, &all, "carol").await;
    let room = format!("hall@{SERVICE}");
    let own = join(&mut alice, &room, "Alice").await;
    assert!(codes(&own).contains(&201));
    let created = alice
        .iq(&format!(
            "<iq to='{room}' type='set'><query xmlns='http://jabber.org/protocol/muc#owner'>\
             <x xmlns='jabber:x:data' type='submit'/></query></iq>"
        ))
        .await;
    assert_eq!(created.attr("type"), Some("result"));
    join(&mut bob, &room, "Bob").await;
    join(&mut carol, &room, "Carol").await;
    bob.expect(|el| is_presence_from(el, &format!("{room}/Carol"), None))
        .await;

    // n1 stops as on SIGTERM: occupants elsewhere hear the service here is going (332).
    drop(alice);
    n1.shut_down().await;
    for (s, nick) in [(&mut bob, "Bob"), (&mut carol, "Carol")] {
        let out = s
            .expect(|el| is_presence_from(el, &format!("{room}/{nick}"), Some("unavailable")))
            .await;
        let codes = codes(&out);
        assert!(
            codes.contains(&332) && codes.contains(&110),
            "{}",
            corvid::xml::to_string(&out)
        );
    }

    // They join again, and the room is served by a node that stays. It was temporary, so it
    // is new there: the first back creates it.
    let own = join_again(&mut bob, &room, "Bob").await;
    assert!(codes(&own).contains(&201));
    let created = bob
        .iq(&format!(
            "<iq to='{room}' type='set'><query xmlns='http://jabber.org/protocol/muc#owner'>\
             <x xmlns='jabber:x:data' type='submit'/></query></iq>"
        ))
        .await;
    assert_eq!(created.attr("type"), Some("result"));
    join_again(&mut carol, &room, "Carol").await;
    bob.expect(|el| is_presence_from(el, &format!("{room}/Carol"), None))
        .await;
    carol
        .send(&format!(
            "<message to='{room}' type='groupchat'><body>moved</body></message>"
        ))
        .await;
    bob.expect(body_is("moved")).await;

    drop((n2, n3));
    common::drop_schema(&schema).await;
}

#[tokio::test]
async fn a_node_whose_room_was_taken_over_sends_its_occupants_to_the_new_one() {
    let Some((schema, prefix, [n1, n2, n3])) = cluster_with_prefix(91).await else {
        return;
    };
    for user in ["alice", "bob"] {
        n1.add_user(user).await;
    }
    let all = [&n1, &n2, &n3];
    let mut alice = online(&n1, &all, "alice").await;
    let mut bob = online(&n2, &all, "bob").await;
    let room = format!("attic@{SERVICE}");
    let own = join(&mut alice, &room, "Alice").await;
    assert!(codes(&own).contains(&201));
    let configured = alice
        .iq(&format!(
            "<iq to='{room}' type='set'><query xmlns='http://jabber.org/protocol/muc#owner'>\
             <x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>\
             <field var='muc#roomconfig_persistentroom'><value>1</value></field>\
             <field var='muc#roomconfig_roomname'><value>The Attic</value></field>\
             </x></query></iq>"
        ))
        .await;
    assert_eq!(configured.attr("type"), Some("result"));
    join(&mut bob, &room, "Bob").await;

    // What Redis says after n1 was cut off long enough for n2 to take the room over.
    let redis = redis::Client::open("redis://127.0.0.1:6379/").expect("redis url");
    let mut conn = redis
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}:owner:muc:{room}"))
        .arg(n2.number().0)
        .query_async(&mut conn)
        .await
        .expect("owner set");
    // n1 asks again once the node timeout has passed since it last did.
    tokio::time::sleep(Duration::from_secs(NODE_TIMEOUT_SECS + 1)).await;

    alice
        .send(&format!(
            "<message to='{room}' type='groupchat'><body>anyone?</body></message>"
        ))
        .await;
    for (s, nick) in [(&mut alice, "Alice"), (&mut bob, "Bob")] {
        let out = s
            .expect(|el| is_presence_from(el, &format!("{room}/{nick}"), Some("unavailable")))
            .await;
        assert!(
            codes(&out).contains(&332),
            "{}",
            corvid::xml::to_string(&out)
        );
    }
    // The message went on to n2, where Alice is no occupant.
    let refused = alice
        .expect(|el| el.name() == "message" && el.attr("type") == Some("error"))
        .await;
    assert_eq!(
        error_condition(&refused).as_deref(),
        Some("not-acceptable"),
        "{}",
        corvid::xml::to_string(&refused)
    );

    // Both join again: one room, on n2, as configured.
    let own = join(&mut alice, &room, "Alice").await;
    assert!(!codes(&own).contains(&201));
    join(&mut bob, &room, "Bob").await;
    alice
        .expect(|el| is_presence_from(el, &format!("{room}/Bob"), None))
        .await;
    let info = alice
        .iq(&format!(
            "<iq to='{room}' type='get'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
        ))
        .await;
    assert_eq!(
        form_value(&info, "muc#roomconfig_roomname").as_deref(),
        Some("The Attic")
    );
    assert_eq!(
        form_value(&info, "muc#roominfo_occupants").as_deref(),
        Some("2")
    );
    assert!(n2.router().cluster().is_some());

    drop((n1, n2, n3));
    common::drop_schema(&schema).await;
}
