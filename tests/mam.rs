//! XEP-0313 message archive with XEP-0359 stanza-ids and XEP-0059 paging, over real sockets.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::xmpp::{error_condition, Session};
use common::TestServer;
use minidom::Element;

const MAM: &str = "urn:xmpp:mam:2";
const RSM: &str = "http://jabber.org/protocol/rsm";
const SID: &str = "urn:xmpp:sid:0";
const FORWARD: &str = "urn:xmpp:forward:0";

static IDS: AtomicU64 = AtomicU64::new(0);

/// The id of the `<stanza-id/>` `by` gave the message, if exactly one.
fn stanza_id_by(message: &Element, by: &str) -> Option<String> {
    let ids: Vec<_> = message
        .children()
        .filter(|c| c.is("stanza-id", SID) && c.attr("by") == Some(by))
        .map(|c| c.attr("id").unwrap_or_default().to_string())
        .collect();
    assert!(ids.len() <= 1, "several stanza-ids by {by}: {message:?}");
    ids.into_iter().next()
}

fn body_of(message: &Element) -> Option<String> {
    message.get_child("body", "jabber:client").map(|b| b.text())
}

struct Answer {
    /// (archive id, archived message) in the order they arrived.
    results: Vec<(String, Element)>,
    iq: Element,
}

impl Answer {
    fn ids(&self) -> Vec<String> {
        self.results.iter().map(|(id, _)| id.clone()).collect()
    }
    fn bodies(&self) -> Vec<String> {
        self.results
            .iter()
            .map(|(_, m)| body_of(m).unwrap_or_default())
            .collect()
    }
    fn fin(&self) -> &Element {
        self.iq
            .get_child("fin", MAM)
            .unwrap_or_else(|| panic!("no <fin/>: {:?}", self.iq))
    }
    fn complete(&self) -> bool {
        self.fin().attr("complete") == Some("true")
    }
    fn set_child(&self, name: &str) -> Option<String> {
        self.fin()
            .get_child("set", RSM)
            .and_then(|s| s.get_child(name, RSM))
            .map(|e| e.text())
    }
    fn count(&self) -> u64 {
        self.set_child("count").unwrap().parse().unwrap()
    }
    fn first_index(&self) -> Option<String> {
        self.fin()
            .get_child("set", RSM)
            .and_then(|s| s.get_child("first", RSM))
            .and_then(|f| f.attr("index").map(str::to_owned))
    }
}

/// Sends an IQ and collects every MAM result for its queryid until the answer.
async fn iq_collect(s: &mut Session, payload: &str, queryid: &str) -> Answer {
    let id = format!("mamq-{}", IDS.fetch_add(1, Ordering::Relaxed));
    s.send(&format!("<iq type='set' id='{id}'>{payload}</iq>"))
        .await;
    let mut results = Vec::new();
    loop {
        let el = s.raw.element().await;
        if el.name() == "iq" && el.attr("id") == Some(id.as_str()) {
            return Answer { results, iq: el };
        }
        let Some(result) = el.get_child("result", MAM) else {
            continue;
        };
        assert_eq!(result.attr("queryid"), Some(queryid));
        assert_eq!(
            el.attr("from"),
            Some(s.bare()),
            "results come from the archive"
        );
        assert_eq!(el.attr("to"), Some(s.jid.as_str()));
        let forwarded = result.get_child("forwarded", FORWARD).expect("forwarded");
        assert!(forwarded
            .get_child("delay", "urn:xmpp:delay")
            .and_then(|d| d.attr("stamp"))
            .is_some());
        let message = forwarded
            .get_child("message", "jabber:client")
            .expect("archived message")
            .clone();
        results.push((result.attr("id").unwrap().to_string(), message));
    }
}

/// A query with form `fields` (besides FORM_TYPE) and RSM `set` contents.
async fn query(s: &mut Session, fields: &str, set: &str) -> Answer {
    query_with(s, fields, set, "").await
}

async fn query_with(s: &mut Session, fields: &str, set: &str, extra: &str) -> Answer {
    let qid = format!("q{}", IDS.fetch_add(1, Ordering::Relaxed));
    let payload = format!(
        "<query xmlns='{MAM}' queryid='{qid}'><x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>{MAM}</value></field>{fields}</x>\
         <set xmlns='{RSM}'>{set}</set>{extra}</query>"
    );
    iq_collect(s, &payload, &qid).await
}

fn field(var: &str, value: &str) -> String {
    format!("<field var='{var}'><value>{value}</value></field>")
}

async fn send_bodies(s: &mut Session, to: &str, bodies: impl IntoIterator<Item = String>) {
    for body in bodies {
        s.send(&format!(
            "<message to='{to}' type='chat'><body>{body}</body></message>"
        ))
        .await;
    }
}

fn numbered(prefix: &str, range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

#[tokio::test]
async fn stanza_ids_on_live_and_offline_copies_spoofs_stripped_both_archives() {
    let server = TestServer::start().await;
    for user in ["alice", "bob", "carol"] {
        server.add_user(user).await;
    }
    let mut alice = Session::online(&server, "alice", "a").await;
    let mut bob = Session::online(&server, "bob", "b").await;
    alice
        .send(
            "<message to='bob@localhost' type='chat' id='m1'><body>hello</body>\
             <stanza-id xmlns='urn:xmpp:sid:0' id='forged' by='bob@localhost'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' id='other' by='elsewhere.example'/></message>",
        )
        .await;
    let got = bob
        .expect(|el| body_of(el).as_deref() == Some("hello"))
        .await;
    let bob_id = stanza_id_by(&got, "bob@localhost").expect("stanza-id by the recipient");
    assert_ne!(bob_id, "forged");
    assert!(bob_id.parse::<i64>().is_ok());
    assert_eq!(
        stanza_id_by(&got, "elsewhere.example").as_deref(),
        Some("other")
    );
    // The sender's archive id travels too (what carbons of sent messages carry).
    let alice_id = stanza_id_by(&got, "alice@localhost").expect("sender's stanza-id");
    assert_ne!(alice_id, bob_id, "each archive has its own id");

    let bobs = query(&mut bob, "", "").await;
    assert_eq!(bobs.ids(), vec![bob_id.clone()]);
    assert_eq!(bobs.bodies(), vec!["hello"]);
    assert!(bobs.complete());
    let archived = &bobs.results[0].1;
    assert_eq!(archived.attr("from"), Some(alice.jid.as_str()));
    assert!(
        stanza_id_by(archived, "bob@localhost").is_none(),
        "the forged id is not archived"
    );
    let alices = query(&mut alice, "", "").await;
    assert_eq!(alices.ids(), vec![alice_id]);
    assert_eq!(alices.bodies(), vec!["hello"]);

    // Offline: the stored copy carries the recipient's stanza-id too.
    alice
        .send("<message to='carol@localhost' type='chat'><body>while away</body></message>")
        .await;
    alice.drain().await;
    let mut carol = Session::login(&server, "carol", "c").await;
    carol.roster_get().await;
    carol.send("<presence/>").await;
    let offline = carol
        .expect(|el| body_of(el).as_deref() == Some("while away"))
        .await;
    let carol_id = stanza_id_by(&offline, "carol@localhost").expect("offline copy has it");
    let carols = query(&mut carol, "", "").await;
    assert_eq!(carols.ids(), vec![carol_id]);
}

#[tokio::test]
async fn rsm_pages_forward_and_backward_with_counts() {
    let server = TestServer::start().await;
    server.add_user("alice").await;
    server.add_user("bob").await;
    let mut alice = Session::online(&server, "alice", "a").await;
    send_bodies(&mut alice, "bob@localhost", numbered("m", 1..=25)).await;

    // Forward.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let set = match &after {
            Some(a) => format!("<max>10</max><after>{a}</after>"),
            None => "<max>10</max>".into(),
        };
        let page = query(&mut alice, "", &set).await;
        assert_eq!(page.count(), 25);
        assert_eq!(page.set_child("first"), page.ids().first().cloned());
        assert_eq!(page.set_child("last"), page.ids().last().cloned());
        assert_eq!(page.first_index(), Some(seen.len().to_string()));
        seen.extend(page.bodies());
        after = page.set_child("last");
        pages.push((page.results.len(), page.complete()));
        if page.complete() {
            break;
        }
    }
    assert_eq!(pages, vec![(10, false), (10, false), (5, true)]);
    assert_eq!(seen, numbered("m", 1..=25));

    // Backward from the end: each page still chronological.
    let mut before = String::new();
    let mut backward = Vec::new();
    let mut pages = Vec::new();
    loop {
        let page = query(
            &mut alice,
            "",
            &format!("<max>10</max><before>{before}</before>"),
        )
        .await;
        assert_eq!(page.count(), 25);
        let ids: Vec<i64> = page.ids().iter().map(|i| i.parse().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "chronological page");
        pages.push((page.bodies(), page.complete()));
        backward.splice(0..0, page.bodies());
        before = page.set_child("first").unwrap();
        if page.complete() {
            break;
        }
    }
    assert_eq!(
        pages,
        vec![
            (numbered("m", 16..=25), false),
            (numbered("m", 6..=15), false),
            (numbered("m", 1..=5), true)
        ]
    );
    assert_eq!(backward, numbered("m", 1..=25));

    // <flip-page/> reverses the order within the page.
    let flipped = query_with(&mut alice, "", "<max>3</max>", "<flip-page/>").await;
    assert_eq!(flipped.bodies(), vec!["m3", "m2", "m1"]);

    // max=0: just the count. Huge max: clamped.
    let counted = query(&mut alice, "", "<max>0</max>").await;
    assert!(counted.results.is_empty());
    assert_eq!(counted.count(), 25);
    let all = query(&mut alice, "", "<max>100000</max>").await;
    assert_eq!(all.results.len(), 25);
    assert!(all.complete());
}

/// slixmpp 1.17's `ResultIterator` (xep_0059/rsm.py), as its MAM `iterate(reverse=True)`
/// drives it: `<before/>` then `<before>first</before>`, stopping on a page without
/// first/last or once `first index + items on the page == count`.
async fn slixmpp_reverse_iteration(s: &mut Session, page_size: u32) -> (Vec<String>, u32) {
    let mut before = String::new();
    let mut collected = Vec::new();
    let mut requests = 0;
    loop {
        requests += 1;
        assert!(requests < 100, "the iteration never ends");
        let page = query(
            s,
            "",
            &format!("<max>{page_size}</max><before>{before}</before>"),
        )
        .await;
        let (first, last) = (page.set_child("first"), page.set_child("last"));
        if first.is_none() && last.is_none() {
            return (collected, requests);
        }
        let mut bodies = page.bodies();
        bodies.reverse();
        collected.extend(bodies);
        if let Some(index) = page.first_index() {
            let index: u64 = index.parse().unwrap();
            if index + page.results.len() as u64 == page.count() {
                return (collected, requests);
            }
        }
        before = first.unwrap();
    }
}

#[tokio::test]
async fn slixmpp_reverse_iteration_with_pages_of_one_reaches_every_message() {
    let server = TestServer::start().await;
    server.add_user("alice").await;
    server.add_user("bob").await;
    let mut alice = Session::online(&server, "alice", "a").await;
    send_bodies(&mut alice, "bob@localhost", numbered("m", 1..=5)).await;

    let (newest_first, requests) = slixmpp_reverse_iteration(&mut alice, 1).await;
    let mut expected = numbered("m", 1..=5);
    expected.reverse();
    assert_eq!(newest_first, expected);
    // Five pages, then the empty one that ends it.
    assert_eq!(requests, 6);

    // The newest page is not complete (older ones remain); a page read forwards still says where it
    // starts, and Gajim's/Conversations' forward catch-up (`after` + max) ends complete.
    let oldest = query(&mut alice, "", "<max>1</max><before/>").await;
    assert!(!oldest.complete());
    let forward = query(&mut alice, "", "<max>2</max>").await;
    assert_eq!(forward.first_index().as_deref(), Some("0"));
    let after = forward.set_child("last").unwrap();
    let rest = query(
        &mut alice,
        "",
        &format!("<max>10</max><after>{after}</after>"),
    )
    .await;
    assert_eq!(rest.bodies(), numbered("m", 3..=5));
    assert_eq!(rest.first_index().as_deref(), Some("2"));
    assert!(rest.complete());
    let first_id = forward.ids()[0].clone();
    let start = query(
        &mut alice,
        "",
        &format!("<max>10</max><before>{first_id}</before>"),
    )
    .await;
    assert!(start.results.is_empty() && start.complete());
}

#[tokio::test]
async fn filters_errors_form_and_metadata() {
    let server = TestServer::start().await;
    for user in ["alice", "bob", "carol"] {
        server.add_user(user).await;
    }
    let mut alice = Session::online(&server, "alice", "a").await;

    let empty = alice
        .iq(&format!("<iq type='get'><metadata xmlns='{MAM}'/></iq>"))
        .await;
    let md = empty.get_child("metadata", MAM).expect("metadata");
    assert_eq!(
        md.children().count(),
        0,
        "an empty archive has no start/end"
    );

    send_bodies(&mut alice, "bob@localhost", numbered("b", 1..=3)).await;
    send_bodies(&mut alice, "carol@localhost", numbered("c", 1..=3)).await;
    let all = query(&mut alice, "", "").await;
    assert_eq!(all.bodies(), vec!["b1", "b2", "b3", "c1", "c2", "c3"]);
    let ids = all.ids();

    let with_carol = query(&mut alice, &field("with", "carol@localhost"), "").await;
    assert_eq!(with_carol.bodies(), vec!["c1", "c2", "c3"]);
    assert_eq!(with_carol.count(), 3);

    let after = query(&mut alice, &field("after-id", &ids[1]), "").await;
    assert_eq!(after.bodies(), vec!["b3", "c1", "c2", "c3"]);
    let between = query(
        &mut alice,
        &(field("after-id", &ids[0]) + &field("before-id", &ids[4])),
        "",
    )
    .await;
    assert_eq!(between.bodies(), vec!["b2", "b3", "c1"]);
    let picked = query(
        &mut alice,
        &format!(
            "<field var='ids'><value>{}</value><value>{}</value><value>nonsense</value></field>",
            ids[5], ids[2]
        ),
        "",
    )
    .await;
    assert_eq!(picked.bodies(), vec!["b3", "c3"]);

    // start/end: nothing before the first message, everything up to now.
    let future = query(&mut alice, &field("start", "2999-01-01T00:00:00Z"), "").await;
    assert!(future.results.is_empty() && future.complete());
    let past = query(&mut alice, &field("end", "2000-01-01T00:00:00Z"), "").await;
    assert!(past.results.is_empty());
    let window = query(
        &mut alice,
        &(field("start", "2000-01-01T00:00:00Z") + &field("end", "2999-01-01T00:00:00.000+01:00")),
        "",
    )
    .await;
    assert_eq!(window.results.len(), 6);

    // Metadata names the first and last ids.
    let md = alice
        .iq(&format!("<iq type='get'><metadata xmlns='{MAM}'/></iq>"))
        .await;
    let md = md.get_child("metadata", MAM).unwrap();
    assert_eq!(
        md.get_child("start", MAM).unwrap().attr("id"),
        Some(ids[0].as_str())
    );
    assert_eq!(
        md.get_child("end", MAM).unwrap().attr("id"),
        Some(ids[5].as_str())
    );
    assert!(md
        .get_child("end", MAM)
        .unwrap()
        .attr("timestamp")
        .is_some());

    // Errors.
    let unknown = query(&mut alice, &field("after-id", "12345"), "").await;
    assert_eq!(
        error_condition(&unknown.iq).as_deref(),
        Some("item-not-found")
    );
    let unknown = query(&mut alice, "", "<after>999</after>").await;
    assert_eq!(
        error_condition(&unknown.iq).as_deref(),
        Some("item-not-found")
    );
    let unknown = query(&mut alice, "", "<before>not-an-id</before>").await;
    assert_eq!(
        error_condition(&unknown.iq).as_deref(),
        Some("item-not-found")
    );
    let bad = query(&mut alice, &field("fulltext", "hi"), "").await;
    assert_eq!(error_condition(&bad.iq).as_deref(), Some("bad-request"));
    let bad = query(&mut alice, &field("start", "last tuesday"), "").await;
    assert_eq!(error_condition(&bad.iq).as_deref(), Some("bad-request"));

    // Someone else's archive.
    let other = alice
        .iq(&format!(
            "<iq type='set' to='bob@localhost'><query xmlns='{MAM}' queryid='x'/></iq>"
        ))
        .await;
    assert_eq!(error_condition(&other).as_deref(), Some("forbidden"));

    // Form discovery and disco features.
    let form = alice
        .iq(&format!("<iq type='get'><query xmlns='{MAM}'/></iq>"))
        .await;
    let x = form
        .get_child("query", MAM)
        .and_then(|q| q.get_child("x", "jabber:x:data"))
        .expect("form");
    let vars: Vec<_> = x.children().filter_map(|f| f.attr("var")).collect();
    for var in [
        "FORM_TYPE",
        "with",
        "start",
        "end",
        "after-id",
        "before-id",
        "ids",
    ] {
        assert!(vars.contains(&var), "{var} missing from {vars:?}");
    }
    let disco = alice
        .iq("<iq type='get' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    let features: Vec<_> = disco
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .unwrap()
        .children()
        .filter_map(|f| f.attr("var"))
        .collect();
    for feature in [MAM, "urn:xmpp:mam:2#extended", SID] {
        assert!(features.contains(&feature), "{feature} not advertised");
    }
}

async fn set_prefs(s: &mut Session, default: &str, always: &[&str], never: &[&str]) -> Element {
    let list = |jids: &[&str]| {
        jids.iter()
            .map(|j| format!("<jid>{j}</jid>"))
            .collect::<String>()
    };
    let answer = s
        .iq(&format!(
            "<iq type='set'><prefs xmlns='{MAM}' default='{default}'><always>{}</always>\
             <never>{}</never></prefs></iq>",
            list(always),
            list(never)
        ))
        .await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    answer
}

#[tokio::test]
async fn preferences_and_no_store_decide_what_is_archived() {
    let server = TestServer::start().await;
    for user in ["alice", "bob", "carol", "dave"] {
        server.add_user(user).await;
    }
    let mut alice = Session::online(&server, "alice", "a").await;
    let prefs = alice
        .iq(&format!("<iq type='get'><prefs xmlns='{MAM}'/></iq>"))
        .await;
    assert_eq!(
        prefs
            .get_child("prefs", MAM)
            .and_then(|p| p.attr("default")),
        Some("always")
    );

    // never, with bob always-listed.
    let answer = set_prefs(&mut alice, "never", &["Bob@localhost/phone"], &[]).await;
    let always = answer
        .get_child("prefs", MAM)
        .unwrap()
        .get_child("always", MAM)
        .unwrap();
    assert_eq!(
        always.get_child("jid", MAM).unwrap().text(),
        "bob@localhost"
    );
    alice
        .send("<message to='bob@localhost' type='chat'><body>n-bob</body></message>")
        .await;
    alice
        .send("<message to='carol@localhost' type='chat'><body>n-carol</body></message>")
        .await;

    // roster: only carol is in alice's roster; dave never-listed, bob not in roster.
    for contact in ["carol@localhost", "dave@localhost"] {
        let added = alice
            .iq(&format!(
                "<iq type='set'><query xmlns='jabber:iq:roster'><item jid='{contact}'/></query></iq>"
            ))
            .await;
        assert_eq!(added.attr("type"), Some("result"));
    }
    set_prefs(&mut alice, "roster", &[], &["dave@localhost"]).await;
    for to in ["bob", "carol", "dave"] {
        alice
            .send(&format!(
                "<message to='{to}@localhost' type='chat'><body>r-{to}</body></message>"
            ))
            .await;
    }

    // always, with carol never-listed (never wins even if also always-listed).
    set_prefs(
        &mut alice,
        "always",
        &["carol@localhost"],
        &["carol@localhost"],
    )
    .await;
    for to in ["bob", "carol", "dave"] {
        alice
            .send(&format!(
                "<message to='{to}@localhost' type='chat'><body>a-{to}</body></message>"
            ))
            .await;
    }
    // Hints and body-less messages.
    alice
        .send("<message to='bob@localhost' type='chat'><body>secret</body><no-store xmlns='urn:xmpp:hints'/></message>")
        .await;
    alice
        .send("<message to='bob@localhost' type='chat'><body>transient</body><no-permanent-store xmlns='urn:xmpp:hints'/></message>")
        .await;
    alice
        .send("<message to='bob@localhost' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
        .await;
    alice
        .send("<message to='bob@localhost' type='chat'><encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'/></encrypted></message>")
        .await;

    let all = query(&mut alice, "", "<max>50</max>").await;
    assert_eq!(
        all.bodies(),
        vec!["n-bob", "r-carol", "a-bob", "a-dave", ""],
        "the last one is the OMEMO message"
    );
    assert!(all.results[4]
        .1
        .has_child("encrypted", "eu.siacs.conversations.axolotl"));

    // Bob (default always) archived what he received, except the no-store ones.
    let mut bob = Session::login(&server, "bob", "b").await;
    let bobs = query(&mut bob, "", "<max>50</max>").await;
    assert_eq!(bobs.bodies(), vec!["n-bob", "r-bob", "a-bob", ""]);
}

#[tokio::test]
async fn retention_keeps_the_newest_messages() {
    let server = TestServer::start_with(|c| c.mam.max_messages_per_user = 5).await;
    server.add_user("alice").await;
    server.add_user("bob").await;
    let mut alice = Session::online(&server, "alice", "a").await;
    let mut bob = Session::online(&server, "bob", "b").await;
    send_bodies(&mut alice, "bob@localhost", numbered("m", 1..=12)).await;
    let first = bob.expect(|el| body_of(el).as_deref() == Some("m1")).await;
    let oldest_id = stanza_id_by(&first, "bob@localhost").unwrap();
    bob.expect(|el| body_of(el).as_deref() == Some("m12")).await;
    // Trimming runs in the writer after the appends; give it a moment.
    let mut kept = Vec::new();
    for _ in 0..100 {
        kept = query(&mut bob, "", "").await.bodies();
        if kept.len() == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(kept, numbered("m", 8..=12));
    // A device that last saw a trimmed message learns it must resynchronise.
    let gone = query(&mut bob, &field("after-id", &oldest_id), "").await;
    assert_eq!(error_condition(&gone.iq).as_deref(), Some("item-not-found"));
}

/// The catch-up guarantee: a device paging with `after-id` while messages keep arriving sees
/// every message exactly once, in the order the live session saw them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_id_catch_up_during_concurrent_sending_has_no_gap_or_duplicate() {
    const N: u32 = 300;
    let server = TestServer::start().await;
    server.add_user("alice").await;
    server.add_user("bob").await;
    let mut alice = Session::online(&server, "alice", "a").await;
    let mut live = Session::online(&server, "bob", "live").await;
    let mut sync = Session::login(&server, "bob", "sync").await;

    let sender = tokio::spawn(async move {
        for i in 1..=N {
            alice
                .send(&format!(
                    "<message to='bob@localhost' type='chat'><body>c{i}</body></message>"
                ))
                .await;
            if i % 16 == 0 {
                tokio::task::yield_now().await;
            }
        }
        alice
    });
    let watcher = tokio::spawn(async move {
        let mut ids = Vec::new();
        while ids.len() < N as usize {
            let el = live.next().await;
            if body_of(&el).is_some_and(|b| b.starts_with('c')) {
                ids.push(stanza_id_by(&el, "bob@localhost").expect("live copy has a stanza-id"));
            }
        }
        ids
    });

    let mut synced: Vec<String> = Vec::new();
    let mut last: Option<String> = None;
    let mut pages = 0;
    while synced.len() < N as usize {
        let fields = field("with", "alice@localhost")
            + &last
                .as_ref()
                .map(|l| field("after-id", l))
                .unwrap_or_default();
        let page = query(&mut sync, &fields, "<max>7</max>").await;
        assert_eq!(page.iq.attr("type"), Some("result"), "{:?}", page.iq);
        pages += 1;
        synced.extend(page.ids());
        if let Some(l) = page.set_child("last") {
            last = Some(l);
        }
        if page.complete() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(pages < 10_000, "catch-up does not converge");
    }
    sender.await.unwrap();
    let live_ids = watcher.await.unwrap();
    let unique: HashSet<_> = synced.iter().collect();
    assert_eq!(unique.len(), synced.len(), "duplicates in catch-up");
    let numeric: Vec<i64> = synced.iter().map(|i| i.parse().unwrap()).collect();
    assert!(numeric.windows(2).all(|w| w[0] < w[1]), "ids ascend");
    assert_eq!(synced, live_ids, "catch-up == what the live session saw");
    assert!(pages > 1);
}

/// XEP-0313 on a MUC room: the room's groupchat messages, queried on the room's JID, carry
/// the stanza-ids the occupants saw; a gone room takes its archive along.
#[tokio::test]
async fn room_archive_is_queried_on_the_room_jid() {
    const ROOM: &str = "den@conference.localhost";
    let server = TestServer::start().await;
    server.add_user("alice").await;
    server.add_user("bob").await;
    let mut alice = Session::online(&server, "alice", "a").await;
    let mut bob = Session::online(&server, "bob", "b").await;
    alice
        .send(&format!(
            "<presence to='{ROOM}/al'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
        ))
        .await;
    alice
        .expect(|el| el.name() == "message" && el.has_child("subject", "jabber:client"))
        .await;
    let created = alice
        .iq(&format!(
            "<iq to='{ROOM}' type='set'><query xmlns='http://jabber.org/protocol/muc#owner'>\
             <x xmlns='jabber:x:data' type='submit'/></query></iq>"
        ))
        .await;
    assert_eq!(created.attr("type"), Some("result"));
    for i in 1..=3 {
        alice
            .send(&format!(
                "<message to='{ROOM}' type='groupchat'><body>g{i}</body></message>"
            ))
            .await;
    }
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let el = alice.next().await;
        if el.attr("type") == Some("groupchat") && body_of(&el).is_some() {
            seen.push(stanza_id_by(&el, ROOM).expect("room stanza-id"));
        }
    }
    // An occupant reads the room's archive from the room's JID.
    let qid = "room1";
    alice
        .send(&format!(
            "<iq type='set' id='rq' to='{ROOM}'><query xmlns='{MAM}' queryid='{qid}'/></iq>"
        ))
        .await;
    let mut results = Vec::new();
    let fin = loop {
        let el = alice.next().await;
        if el.name() == "iq" && el.attr("id") == Some("rq") {
            break el;
        }
        if let Some(result) = el.get_child("result", MAM) {
            assert_eq!(el.attr("from"), Some(ROOM));
            let message = result
                .get_child("forwarded", FORWARD)
                .and_then(|f| f.get_child("message", "jabber:client"))
                .unwrap();
            assert_eq!(message.attr("from"), Some(&*format!("{ROOM}/al")));
            results.push((
                result.attr("id").unwrap().to_string(),
                body_of(message).unwrap(),
            ));
        }
    };
    assert_eq!(fin.attr("type"), Some("result"), "{fin:?}");
    assert_eq!(
        results,
        seen.iter()
            .cloned()
            .zip(["g1", "g2", "g3"].map(String::from))
            .collect::<Vec<_>>()
    );
    // Not archived in the users' archives, and outsiders of a members-only room cannot read
    // it; here the room is open, so bob (not an occupant) may.
    let own = query(&mut alice, "", "").await;
    assert!(own.results.is_empty());
    let outsider = bob
        .iq(&format!(
            "<iq type='set' to='{ROOM}'><query xmlns='{MAM}' queryid='b'/></iq>"
        ))
        .await;
    assert_eq!(outsider.attr("type"), Some("result"));
    // The temporary room goes when its last occupant leaves, and its archive with it.
    alice
        .send(&format!("<presence to='{ROOM}/al' type='unavailable'/>"))
        .await;
    alice.drain().await;
    alice
        .send(&format!(
            "<presence to='{ROOM}/al'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
        ))
        .await;
    alice
        .expect(|el| el.name() == "message" && el.has_child("subject", "jabber:client"))
        .await;
    alice
        .iq(&format!(
            "<iq to='{ROOM}' type='set'><query xmlns='http://jabber.org/protocol/muc#owner'>\
             <x xmlns='jabber:x:data' type='submit'/></query></iq>"
        ))
        .await;
    let fresh = alice
        .iq(&format!(
            "<iq type='set' to='{ROOM}'><query xmlns='{MAM}' queryid='f'/></iq>"
        ))
        .await;
    let fin = fresh.get_child("fin", MAM).expect("fin");
    let count = fin
        .get_child("set", RSM)
        .and_then(|s| s.get_child("count", RSM))
        .map(|c| c.text());
    assert_eq!(
        count.as_deref(),
        Some("0"),
        "the new room starts with an empty archive"
    );
}

/// XEP-0198 §5: what a session never acknowledged goes back to the router when it ends. The
/// message was archived when it was first routed; going back must not archive it again (the
/// user would see it twice on every device that catches up), on a clean close as after a
/// resumption timeout.
#[tokio::test]
async fn unacknowledged_messages_sent_on_are_archived_once() {
    let server = TestServer::start_with(|c| c.stream_management.resume_timeout_secs = 1).await;
    for user in ["alice", "bob"] {
        server.add_user(user).await;
    }
    let mut bob = Session::online(&server, "bob", "b").await;
    for (how, body) in [("close", "unacked-close"), ("timeout", "unacked-timeout")] {
        let (mut raw, jid) =
            common::Raw::login(server.c2s(), server.tls_config(), "alice", how).await;
        raw.enable_resumption().await;
        raw.write("<presence/>").await;
        bob.send(&format!(
            "<message to='{jid}' type='chat'><body>{body}</body></message>"
        ))
        .await;
        // Received, never acknowledged.
        loop {
            let el = raw.element().await;
            if body_of(&el).as_deref() == Some(body) {
                break;
            }
        }
        match how {
            "close" => {
                raw.write("</stream:stream>").await;
                assert!(raw.closed().await);
            }
            _ => {
                drop(raw);
                server.until_detached(&jid).await;
            }
        }
    }
    let mut alice = Session::login(&server, "alice", "again").await;
    alice.roster_get().await;
    alice.send("<presence/>").await;
    let mut offline = Vec::new();
    while offline.len() < 2 {
        let el = alice.next().await;
        if let Some(body) = body_of(&el) {
            offline.push(body);
        }
    }
    // The second session may have taken the first message from offline storage after or
    // before the live one: their order is not the point.
    offline.sort();
    assert_eq!(offline, ["unacked-close", "unacked-timeout"]);
    let archive = query(&mut alice, "", "").await;
    assert_eq!(
        archive.bodies(),
        ["unacked-close", "unacked-timeout"],
        "each message archived once"
    );
}
