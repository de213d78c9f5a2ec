//! Issue 15: a proptest-driven harness over real sockets. mallory (the attacker) sends batches
//! of generated stanzas (any kind, valid / empty / garbage types, hostile `to` and `from`, real
//! XEP payloads including carbons claiming to be from alice, attribute noise) into the router
//! while alice (two resources, carbons on) and bob sit behind it. After each batch markers
//! flush every queue and the harness checks that nothing reached alice or bob with a `from`
//! mallory does not own (unless the server may use it), that no carbon mallory forged reached
//! alice, and that every iq get/set mallory sent to the server or a bare JID was answered
//! (or its stream ended). Afterwards the server still serves alice and bob.
//!
//! `CORVID_HARNESS_CASES` sets the number of batches (128 by default).

mod common;

use std::cell::RefCell;
use std::collections::HashSet;
use std::time::Duration;

use common::xmpp::Session;
use common::*;
use minidom::Element;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};

const CARBONS: &str = "urn:xmpp:carbons:2";
const FORWARD: &str = "urn:xmpp:forward:0";
const STREAMS: &str = "http://etherx.jabber.org/streams";

const KINDS: &[&str] = &["message", "message", "presence", "iq", "iq"];

/// Valid values of all three kinds (valid for one kind is garbage for another), empty, garbage.
const TYPES: &[&str] = &[
    "",
    "",
    "chat",
    "normal",
    "groupchat",
    "headline",
    "error",
    "unavailable",
    "subscribe",
    "subscribed",
    "unsubscribe",
    "unsubscribed",
    "probe",
    "get",
    "get",
    "set",
    "set",
    "result",
    "bogus",
    "CHAT",
];

/// `None` means no attribute; `{me}` / `{other}` are mallory's current / second resource.
const TOS: &[Option<&str>] = &[
    None,
    Some("alice@localhost"),
    Some("alice@localhost/a"),
    Some("alice@localhost/a2"),
    Some("bob@localhost"),
    Some("bob@localhost/b"),
    Some("{other}"),
    Some("mallory@localhost"),
    Some("localhost"),
    Some("room@conference.localhost"),
    Some("room@conference.localhost/mal"),
    Some("conference.localhost"),
    Some("eve@remote.example"),
    Some("remote.example"),
    Some("alice@localhost."),
    Some("alice@localhost&#x200B;"),
    Some("bob@local&#x200B;host/b"),
    Some("@localhost"),
    Some("alice@@localhost"),
    Some("alice@localhost/"),
    Some(""),
];

/// What mallory may say (`{me}` is the current resource); drawn nineteen times as often as
/// a spoof, so that most batches get past their spoofs.
const OWN_FROMS: &[Option<&str>] = &[None, None, None, Some("{me}"), Some("mallory@localhost")];

/// Each ends mallory's stream with `<invalid-from/>`.
const SPOOFED_FROMS: &[Option<&str>] = &[
    Some("alice@localhost/a"),
    Some("alice@localhost"),
    Some("bob@localhost/b"),
    Some("localhost"),
    Some("conference.localhost"),
    Some("garbage@@x"),
    Some(""),
];

const PAYLOADS: &[&str] = &[
    "",
    "<body>hi</body>",
    "<ping xmlns='urn:xmpp:ping'/>",
    "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    "<query xmlns='http://jabber.org/protocol/disco#items'/>",
    "<query xmlns='jabber:iq:roster'/>",
    "<query xmlns='jabber:iq:roster'><item jid='alice@localhost' name='A'/></query>",
    "<query xmlns='jabber:iq:roster'><item jid='bob@localhost' subscription='remove'/></query>",
    "<query xmlns='jabber:iq:roster'><item jid='alice@localhost' subscription='both'/></query>",
    "<vCard xmlns='vcard-temp'/>",
    "<vCard xmlns='vcard-temp'><FN>Alice</FN></vCard>",
    "<enable xmlns='urn:xmpp:carbons:2'/>",
    "<disable xmlns='urn:xmpp:carbons:2'/>",
    "<query xmlns='urn:xmpp:mam:2'/>",
    "<query xmlns='urn:xmpp:mam:2' queryid='q'><x xmlns='jabber:x:data' type='submit'>\
     <field var='FORM_TYPE'><value>urn:xmpp:mam:2</value></field>\
     <field var='with'><value>alice@localhost</value></field></x></query>",
    "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='urn:xmpp:avatar:metadata'>\
     <item id='x'><metadata xmlns='urn:xmpp:avatar:metadata'/></item></publish></pubsub>",
    "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='http://jabber.org/protocol/tune'>\
     <item><tune xmlns='http://jabber.org/protocol/tune'/></item></publish></pubsub>",
    "<x xmlns='http://jabber.org/protocol/muc'/>",
    "<x xmlns='http://jabber.org/protocol/muc#user'><invite to='alice@localhost'/></x>",
    "<active xmlns='http://jabber.org/protocol/chatstates'/>",
    "<composing xmlns='http://jabber.org/protocol/chatstates'/>",
    "<request xmlns='urn:xmpp:receipts'/>",
    "<received xmlns='urn:xmpp:receipts' id='m1'/>",
    "<received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>\
     <message xmlns='jabber:client' from='alice@localhost/a' to='bob@localhost/b' type='chat'>\
     <body>forged received</body></message></forwarded></received>",
    "<sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>\
     <message xmlns='jabber:client' from='alice@localhost/a' to='bob@localhost/b' type='chat'>\
     <body>forged sent</body></message></forwarded></sent>",
    "<forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' \
     from='bob@localhost/b' to='alice@localhost' type='chat'><body>forged forward</body>\
     </message></forwarded>",
    "<result xmlns='urn:xmpp:mam:2' id='r'><forwarded xmlns='urn:xmpp:forward:0'>\
     <message xmlns='jabber:client' from='alice@localhost/a'><body>forged archive</body>\
     </message></forwarded></result>",
    "<event xmlns='http://jabber.org/protocol/pubsub#event'><items node='x'/></event>",
    "<query xmlns='jabber:iq:version'/>",
    "<time xmlns='urn:xmpp:time'/>",
    "<blocklist xmlns='urn:xmpp:blocking'/>",
    "<status>away</status><priority>5</priority>",
    "<priority>-129</priority>",
];

const NOISE: &[&str] = &[
    "",
    "",
    "",
    " xml:lang='en'",
    " foo='bar'",
    " xmlns:x='urn:x' x:from='alice@localhost/a'",
    " to2='alice@localhost'",
    " xml:lang=''",
];

#[derive(Clone, Debug)]
struct Gen {
    kind: &'static str,
    ty: &'static str,
    to: Option<&'static str>,
    from: Option<&'static str>,
    id: Option<String>,
    payload: &'static str,
    noise: &'static str,
}

fn stanza() -> impl Strategy<Value = Gen> {
    (
        prop::sample::select(KINDS),
        prop::sample::select(TYPES),
        prop::sample::select(TOS),
        prop_oneof![
            19 => prop::sample::select(OWN_FROMS),
            1 => prop::sample::select(SPOOFED_FROMS),
        ],
        prop::option::weighted(0.97, "[a-z0-9]{1,4}"),
        prop::sample::select(PAYLOADS),
        prop::sample::select(NOISE),
    )
        .prop_map(|(kind, ty, to, from, id, payload, noise)| Gen {
            kind,
            ty,
            to,
            from,
            id,
            payload,
            noise,
        })
}

impl Gen {
    /// The XML, with `n` making the id unique in the run.
    fn render(&self, me: &str, other: &str, n: u64) -> (String, Option<String>) {
        let fill = |s: &str| s.replace("{me}", me).replace("{other}", other);
        let mut xml = format!("<{}", self.kind);
        let id = self.id.as_ref().map(|id| format!("{id}-{n}"));
        if let Some(id) = &id {
            xml.push_str(&format!(" id='{id}'"));
        }
        if !self.ty.is_empty() {
            xml.push_str(&format!(" type='{}'", self.ty));
        }
        if let Some(to) = self.to {
            xml.push_str(&format!(" to='{}'", fill(to)));
        }
        if let Some(from) = self.from {
            xml.push_str(&format!(" from='{}'", fill(from)));
        }
        xml.push_str(self.noise);
        xml.push('>');
        xml.push_str(self.payload);
        xml.push_str(&format!("</{}>", self.kind));
        (xml, id)
    }

    /// An iq get/set the server (or a bare JID's account) has to answer.
    fn needs_answer(&self) -> bool {
        let addressed_to_a_session = self.to.is_some_and(|to| {
            to == "{other}"
                || (to.contains('/') && !to.contains("conference") && !to.ends_with('/'))
        });
        self.kind == "iq"
            && matches!(self.ty, "get" | "set")
            && self.id.is_some()
            && !addressed_to_a_session
            && !self.to.is_some_and(|to| to.contains("conference"))
    }
}

fn is_mallory(jid: &str) -> bool {
    jid == "mallory@localhost" || jid.starts_with("mallory@localhost/")
}

fn is_conference(jid: &str) -> bool {
    jid == "conference.localhost"
        || jid.ends_with("@conference.localhost")
        || jid.contains("@conference.localhost/")
}

fn carbon(el: &Element) -> Option<&Element> {
    el.get_child("received", CARBONS)
        .or_else(|| el.get_child("sent", CARBONS))
}

/// The invariants for one stanza that reached `user` (alice or bob) during the run.
fn check_delivered(user: &str, el: &Element) -> Result<(), String> {
    let own_bare = format!("{user}@localhost");
    let from = el.attr("from");
    let legit = match from {
        None => true,
        Some("localhost") => true,
        Some(f) if is_mallory(f) || is_conference(f) => true,
        // The user's own bare JID: roster pushes and carbons only (alice and bob send nothing
        // during the run).
        Some(f) if f == own_bare => {
            (el.name() == "iq" && el.has_child("query", "jabber:iq:roster"))
                || (el.name() == "message" && carbon(el).is_some())
        }
        Some(_) => false,
    };
    if !legit {
        return Err(format!(
            "{user} got a stanza with a from mallory does not own: {el:?}"
        ));
    }
    if el.name() == "message" {
        if let Some(wrapper) = carbon(el) {
            if from != Some(own_bare.as_str()) {
                return Err(format!(
                    "{user} got a carbon not from her own account: {el:?}"
                ));
            }
            if wrapper.name() == "sent" {
                return Err(format!(
                    "{user} got a sent carbon though she sent nothing: {el:?}"
                ));
            }
            let inner_from = wrapper
                .get_child("forwarded", FORWARD)
                .and_then(|f| f.get_child("message", "jabber:client"))
                .and_then(|m| m.attr("from"));
            if !inner_from.is_some_and(|f| is_mallory(f) || is_conference(f)) {
                return Err(format!("{user} got a carbon with forged content: {el:?}"));
            }
        }
    }
    Ok(())
}

struct Harness {
    server: TestServer,
    mallory: Option<Session>,
    other: Session,
    alice: Session,
    alice2: Session,
    bob: Session,
    logins: u64,
    batches: u64,
    sent: u64,
    stream_ends: u64,
    /// Stanzas alice's and bob's sessions received and the invariants were checked on.
    checked: u64,
    /// Stream error conditions mallory got, with how often.
    end_reasons: std::collections::BTreeMap<String, u64>,
}

impl Harness {
    async fn start() -> Harness {
        let server = TestServer::start_with(|c| {
            c.limits.bytes_rate_per_session = 0;
            c.limits.stanza_rate_per_session = 0;
            c.limits.subscription_requests_per_minute = 0;
            c.muc.occupant_messages_per_second = 0;
        })
        .await;
        for user in ["mallory", "alice", "bob"] {
            server.add_user(user).await;
        }
        server.make_mutual("mallory", "alice").await;
        server.make_mutual("mallory", "bob").await;
        let mut alice = Session::online(&server, "alice", "a").await;
        let mut alice2 = Session::online(&server, "alice", "a2").await;
        for a in [&mut alice, &mut alice2] {
            let on = a
                .iq("<iq type='set'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
                .await;
            assert_eq!(on.attr("type"), Some("result"), "{on:?}");
        }
        let bob = Session::online(&server, "bob", "b").await;
        let other = Session::online(&server, "mallory", "m2").await;
        let mut h = Harness {
            server,
            mallory: None,
            other,
            alice,
            alice2,
            bob,
            logins: 0,
            batches: 0,
            sent: 0,
            stream_ends: 0,
            checked: 0,
            end_reasons: Default::default(),
        };
        h.connect_mallory().await;
        // Everything the logins caused, out of the way.
        h.flush().await.expect("setup flushes");
        h
    }

    async fn connect_mallory(&mut self) {
        self.logins += 1;
        let resource = format!("m1-{}", self.logins);
        self.mallory = Some(Session::online(&self.server, "mallory", &resource).await);
    }

    /// Markers from mallory to every resource of alice and bob; what came before them.
    async fn flush(&mut self) -> Result<Vec<(&'static str, Element)>, String> {
        if self.mallory.is_none() {
            self.connect_mallory().await;
        }
        let mallory = self.mallory.as_mut().expect("connected");
        let marker = Session::marker();
        for to in ["alice@localhost/a", "alice@localhost/a2", "bob@localhost/b"] {
            mallory.send_marker(to, &marker).await;
        }
        let mut seen = Vec::new();
        for (user, s) in [
            ("alice", &mut self.alice),
            ("alice", &mut self.alice2),
            ("bob", &mut self.bob),
        ] {
            seen.extend(
                s.until_marker(&marker)
                    .await
                    .into_iter()
                    .map(|el| (user, el)),
            );
        }
        self.other.drain().await;
        Ok(seen)
    }

    async fn run_batch(&mut self, batch: &[Gen]) -> Result<(), String> {
        self.batches += 1;
        if self.batches.is_multiple_of(8) {
            // Mallory's roster sets may have undone it: mutual contacts again for a while.
            self.server.make_mutual("mallory", "alice").await;
            self.server.make_mutual("mallory", "bob").await;
        }
        if self.mallory.is_none() {
            self.connect_mallory().await;
        }
        let mallory = self.mallory.as_mut().expect("connected");
        let me = mallory.jid.clone();
        let mut pending: HashSet<String> = HashSet::new();
        let mut log = Vec::new();
        for g in batch {
            self.sent += 1;
            let (xml, id) = g.render(&me, &self.other.jid, self.sent);
            if g.needs_answer() {
                pending.insert(id.expect("has an id"));
            }
            log.push(xml.clone());
            // A write may fail once the server has ended the stream; the read below sees it.
            let _ = tokio::io::AsyncWriteExt::write_all(&mut mallory.raw.io, xml.as_bytes()).await;
        }
        let ping = format!("final-{}", self.sent);
        let _ = tokio::io::AsyncWriteExt::write_all(
            &mut mallory.raw.io,
            format!("<iq type='get' id='{ping}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
                .as_bytes(),
        )
        .await;
        let _ = tokio::io::AsyncWriteExt::flush(&mut mallory.raw.io).await;
        // Mallory's own stream: every iq get/set answered, and the ping, or the stream ends.
        let mut ended = false;
        let mut pinged = false;
        let deadline = tokio::time::Instant::now() + WAIT;
        while !ended && (!pinged || !pending.is_empty()) {
            let frame = match tokio::time::timeout_at(deadline, mallory.raw.frame()).await {
                Ok(frame) => frame,
                Err(_) => {
                    return Err(format!(
                        "mallory got silence: ping answered {pinged}, unanswered {pending:?}, \
                         batch {log:#?}"
                    ))
                }
            };
            match frame {
                None | Some(corvid::xml::Frame::StreamClose) => ended = true,
                Some(corvid::xml::Frame::Element(el))
                    if el.name() == "error" && el.ns() == STREAMS =>
                {
                    let condition = el
                        .children()
                        .find(|c| c.name() != "text")
                        .map(|c| c.name().to_string())
                        .unwrap_or_default();
                    *self.end_reasons.entry(condition).or_default() += 1;
                    ended = true
                }
                Some(corvid::xml::Frame::Element(el)) => {
                    if el.name() == "iq" && matches!(el.attr("type"), Some("result" | "error")) {
                        if let Some(id) = el.attr("id") {
                            if id == ping {
                                pinged = true;
                            }
                            pending.remove(id);
                        }
                    }
                }
                Some(_) => {}
            }
        }
        if ended {
            self.stream_ends += 1;
            self.mallory = None;
        }
        for (user, el) in self.flush().await? {
            self.checked += 1;
            check_delivered(user, &el).map_err(|e| format!("{e}\nbatch {log:#?}"))?;
        }
        Ok(())
    }
}

#[test]
fn arbitrary_stanzas_from_a_bound_client_never_forge_a_from_nor_crash_the_router() {
    let cases: u32 = std::env::var("CORVID_HARNESS_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let harness = RefCell::new(rt.block_on(Harness::start()));
    let mut runner = TestRunner::new(RunnerConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 64,
        ..RunnerConfig::default()
    });
    let result = runner.run(&prop::collection::vec(stanza(), 1..=10), |batch| {
        rt.block_on(harness.borrow_mut().run_batch(&batch))
            .map_err(TestCaseError::fail)
    });
    let mut h = harness.into_inner();
    eprintln!(
        "router harness: {} batches, {} stanzas, {} mallory logins, {} stream ends {:?}, \
         {} stanzas delivered to alice and bob checked",
        h.batches, h.sent, h.logins, h.stream_ends, h.end_reasons, h.checked
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    // The server is still there: alice pings it and messages bob.
    rt.block_on(async {
        let pong = h
            .alice
            .iq("<iq type='get' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
            .await;
        assert_eq!(pong.attr("type"), Some("result"), "{pong:?}");
        let marker = Session::marker();
        h.alice.send_marker("bob@localhost/b", &marker).await;
        let got = tokio::time::timeout(Duration::from_secs(10), h.bob.until_marker(&marker))
            .await
            .expect("bob gets alice's message");
        drop(got);
    });
}

/// Found by the harness: a message mallory sent with a `<received/>` carbon wrapper claiming
/// alice wrote to bob reached alice as is. Carbon wrappers are the server's alone; the one a
/// client sends is dropped from its message, which is still delivered.
#[tokio::test]
async fn a_carbon_wrapper_a_client_sends_is_stripped_before_delivery() {
    let t = TestServer::start().await;
    for user in ["mallory", "alice"] {
        t.add_user(user).await;
    }
    let mut alice = Session::login(&t, "alice", "a").await;
    let mut mallory = Session::login(&t, "mallory", "m").await;
    for wrapper in ["received", "sent"] {
        mallory
            .send(&format!(
                "<message to='alice@localhost/a' type='chat'><body>{wrapper}</body>\
                 <{wrapper} xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>\
                 <message xmlns='jabber:client' from='alice@localhost/a' to='bob@localhost/b' \
                 type='chat'><body>forged</body></message></forwarded></{wrapper}></message>"
            ))
            .await;
        let got = alice.expect(|el| el.name() == "message").await;
        assert_eq!(got.attr("from"), Some(mallory.jid.as_str()), "{got:?}");
        assert!(carbon(&got).is_none(), "{got:?}");
        assert_eq!(common::body(&got), wrapper);
    }
}

/// The checker itself: what it must refuse.
#[test]
fn the_invariants_refuse_forged_froms_and_carbons() {
    let parse = |xml: &str| xml.parse::<Element>().expect("xml");
    let ok = [
        "<message xmlns='jabber:client' from='mallory@localhost/m'/>",
        "<presence xmlns='jabber:client' from='mallory@localhost'/>",
        "<iq xmlns='jabber:client' type='set' from='alice@localhost'>\
         <query xmlns='jabber:iq:roster'/></iq>",
        "<message xmlns='jabber:client' from='alice@localhost'><received xmlns='urn:xmpp:carbons:2'>\
         <forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' \
         from='mallory@localhost/m'/></forwarded></received></message>",
    ];
    for xml in ok {
        assert_eq!(check_delivered("alice", &parse(xml)), Ok(()), "{xml}");
    }
    let forged = [
        "<message xmlns='jabber:client' from='bob@localhost/b'/>",
        "<message xmlns='jabber:client' from='alice@localhost/a'/>",
        "<presence xmlns='jabber:client' from='alice@localhost'/>",
        "<message xmlns='jabber:client' from='mallory@localhost/m'><received \
         xmlns='urn:xmpp:carbons:2'/></message>",
        "<message xmlns='jabber:client' from='alice@localhost'><received xmlns='urn:xmpp:carbons:2'>\
         <forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' \
         from='alice@localhost/a'/></forwarded></received></message>",
    ];
    for xml in forged {
        assert!(check_delivered("alice", &parse(xml)).is_err(), "{xml}");
    }
}
