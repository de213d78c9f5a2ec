//! Soak (hardening issue): a bounded churn of logins and logouts, roster pushes, room joins
//! and leaves, XEP-0198 resumptions and 1:1 messages against one server, then two checks:
//!
//! * no leak: the server runtime's alive tasks and the process's open descriptors return to
//!   their baseline once every client is gone, and RSS does not keep growing with the run;
//! * no lost message: every 1:1 message sent is found exactly once as delivered live,
//!   delivered from offline storage or bounced to its sender (a second delivery is allowed
//!   only where XEP-0198 allows it: the first copy was received and never acknowledged).
//!
//! Short by default (CI); the real run is 10 minutes:
//!
//! ```text
//! CORVID_SOAK_SECS=600 cargo test --release --test soak -- --nocapture
//! ```
//!
//! Its figures are in benches/README.md under "Soak".
//!
//! The churn: 24 virtual users (one account each, at most one session at a time, a quarter
//! of the connections over WebSocket, the rest TCP with STARTTLS) pick at random: 1-3 chat
//! messages to random users (one in fifty to an account that does not exist, which bounces),
//! a roster set and remove (pushed back), a join, groupchat message and leave of one of three
//! persistent rooms, the same in a fresh temporary room, killing the connection and resuming
//! the session (possibly on the other transport) with the counted `h`, killing it and never
//! resuming (the session waits detached until the resumption timeout or the next login
//! replaces it), a clean logout, or nothing; then they read for 50-400 ms. Logged-out users
//! come back after 0.1-0.8 s, with stream management three times in five. Every `<r/>` is
//! answered with the exact count; a clean logout acknowledges everything first and reads
//! until the server closes.
//!
//! The accounting: a message received with a `urn:xmpp:delay` stamp came from offline
//! storage, without one it was delivered live, an error carrying its id is a bounce. At the
//! end every user logs in once more (after the resumption timeout, so abandoned sessions have
//! handed their queues on) and takes its offline messages.
//!
//! The baseline is taken after a short warm-up churn and its settling, not before the first
//! login: SQLite pool connections, the persistent rooms and the allocator's first arenas are
//! made on first use and kept, bounded; anything above the baseline afterwards is what the
//! churn left behind. The clients run in the same process (on the test's runtime, the server
//! on a one-worker runtime of its own, whose alive tasks are counted); all their state is
//! dropped before the end figures. Descriptors of the SQLite files are counted apart: sqlx
//! opens pool connections on demand and keeps them. RSS is compared without SQLite's own
//! allocations (its page cache, up to 64 MiB per connection, fills as the archive grows).

mod common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use corvid::xml::Frame;
use minidom::Element;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rustls::ClientConfig;

const SM: &str = "urn:xmpp:sm:3";
const MUC: &str = "http://jabber.org/protocol/muc";
const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const SERVICE: &str = "conference.localhost";
const DELAY: &str = "urn:xmpp:delay";
/// Virtual users, each with an account of its own and at most one session at a time (so a
/// message to the bare JID has one possible live recipient and duplicates mean something).
const USERS: usize = 24;
/// Persistent rooms everyone joins and leaves; temporary rooms come and go besides.
const ROOMS: [&str; 3] = ["lobby", "den", "attic"];
/// Short, so sessions a client abandons (dropped and never resumed) end within the run and
/// their queues reach offline storage before the final drain.
const RESUME_TIMEOUT_SECS: u64 = 4;
/// The warm-up before the baseline: long enough to touch every path once.
const WARM_UP: Duration = Duration::from_secs(4);
const MIB: f64 = 1024.0 * 1024.0;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Outcome {
    Live,
    Offline,
    Bounced,
}

/// Kept small, as it lives in the process whose RSS is measured and grows with every message
/// by design: a message is its sequence number (in its body and id, `m-<sender>-<seq>`), an
/// account is its index (`GHOST` for the account that does not exist).
#[derive(Default)]
struct Ledger {
    /// Sequence -> (sender, recipient).
    sent: HashMap<u64, (u8, u8)>,
    /// Sequence -> the first outcome and how many more copies arrived.
    outcomes: HashMap<u64, (Outcome, u32)>,
    /// Bodies received on a stream-management stream that ended before acknowledging them:
    /// the server hands those on again (XEP-0198 §5), so a second copy is no loss of order.
    unacked: HashSet<u64>,
    /// Deliveries to someone other than the recipient (or a bounce to a non-sender).
    misrouted: Vec<String>,
    /// Bodies received that nobody sent.
    unknown: Vec<String>,
}

impl Ledger {
    /// Roughly what the ledger's tables hold on the heap (hashbrown: a slot and a control
    /// byte per bucket, buckets a power of two at most 7/8 full), to be told apart from the
    /// server's own growth.
    fn heap_bytes(&self) -> u64 {
        fn table<T>(capacity: usize) -> u64 {
            (capacity as u64 * 8 / 7 + 1) * (std::mem::size_of::<T>() as u64 + 1)
        }
        table::<(u64, (u8, u8))>(self.sent.capacity())
            + table::<(u64, (Outcome, u32))>(self.outcomes.capacity())
            + table::<u64>(self.unacked.capacity())
    }
}

const GHOST: u8 = u8::MAX;

fn account_index(name: &str) -> u8 {
    match name {
        "ghost" => GHOST,
        // The owner of the rooms sends and receives no 1:1 message.
        "owner" => GHOST - 1,
        _ => name[1..].parse().expect("uNN"),
    }
}

/// The sequence number of a soak message, from its body or id.
fn message_seq(text: &str) -> Option<u64> {
    text.strip_prefix("m-")?.rsplit('-').next()?.parse().ok()
}

#[derive(Default)]
struct Stats {
    logins: AtomicU64,
    sm_logins: AtomicU64,
    logouts: AtomicU64,
    resumes: AtomicU64,
    resent: AtomicU64,
    abandons: AtomicU64,
    roster_sets: AtomicU64,
    room_joins: AtomicU64,
    temp_rooms: AtomicU64,
    groupchat_in: AtomicU64,
    /// Logins and resumptions over WebSocket.
    websocket: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

struct World {
    addr: SocketAddr,
    http: SocketAddr,
    tls: Arc<ClientConfig>,
    ledger: Mutex<Ledger>,
    stats: Stats,
    seq: AtomicU64,
}

impl World {
    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }
}

/// The framing of RFC 7395 (XMPP over WebSocket).
const FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";

type WebSocket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// What a connection yields: the stream (re)opened, an element, the stream closed.
enum Incoming {
    Open,
    Element(Element),
    Close,
}

/// A client connection: TCP with STARTTLS (through `Raw`), or a WebSocket (RFC 7395) on the
/// HTTP listener, where each element is a message of its own.
enum Conn {
    Tcp(Box<Raw>),
    Ws(Box<WebSocket>),
}

impl Conn {
    /// Connects, authenticates with PLAIN and restarts the stream: ready for bind or resume.
    async fn authenticated(world: &World, user: &str, websocket: bool) -> Conn {
        if !websocket {
            let (raw, _features) = Raw::authenticated(world.addr, world.tls.clone(), user).await;
            return Conn::Tcp(Box::new(raw));
        }
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://{}/xmpp-websocket", world.http)
            .into_client_request()
            .expect("request");
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "xmpp".parse().expect("header value"),
        );
        let tcp = tokio::net::TcpStream::connect(world.http)
            .await
            .expect("connect");
        let (ws, _) = tokio_tungstenite::client_async(request, tcp)
            .await
            .expect("websocket handshake");
        let mut conn = Conn::Ws(Box::new(ws));
        let open = format!("<open xmlns='{FRAMING}' to='localhost' version='1.0'/>");
        conn.write(&open).await;
        conn.element().await;
        use base64::Engine;
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{PASSWORD}"));
        conn.write(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
        ))
        .await;
        let success = conn.element().await;
        assert_eq!(success.name(), "success", "login of {user}: {success:?}");
        conn.write(&open).await;
        conn.element().await;
        conn
    }

    async fn write(&mut self, xml: &str) {
        match self {
            Conn::Tcp(raw) => raw.write(xml).await,
            Conn::Ws(ws) => {
                use futures::SinkExt;
                let message = tokio_tungstenite::tungstenite::Message::Text(
                    with_client_namespace(xml).into(),
                );
                ws.send(message).await.expect("websocket send");
            }
        }
    }

    /// The next thing the server sent, or None once the connection is closed.
    async fn frame(&mut self) -> Option<Incoming> {
        match self {
            Conn::Tcp(raw) => match raw.frame().await? {
                Frame::StreamOpen(_) => Some(Incoming::Open),
                Frame::Element(el) => Some(Incoming::Element(el)),
                Frame::StreamClose => Some(Incoming::Close),
            },
            Conn::Ws(ws) => loop {
                use futures::StreamExt;
                use tokio_tungstenite::tungstenite::Message;
                let message = match tokio::time::timeout(WAIT, ws.next()).await {
                    Ok(Some(Ok(message))) => message,
                    Ok(_) => return None,
                    Err(_) => panic!("no data within {WAIT:?}"),
                };
                let text = match message {
                    Message::Text(text) => text,
                    Message::Close(_) => return None,
                    _ => continue,
                };
                let el =
                    corvid::xml::parse_standalone(text.as_bytes(), corvid::xml::XmlLimits::STORED)
                        .expect("the server sends well-formed XML");
                return Some(if el.is("open", FRAMING) {
                    Incoming::Open
                } else if el.is("close", FRAMING) {
                    Incoming::Close
                } else {
                    Incoming::Element(el)
                });
            },
        }
    }

    async fn element(&mut self) -> Element {
        loop {
            match self.frame().await {
                Some(Incoming::Element(el)) => return el,
                Some(Incoming::Open) => continue,
                Some(Incoming::Close) => panic!("stream closed"),
                None => panic!("connection closed"),
            }
        }
    }

    /// `</stream:stream>`, or RFC 7395's `<close/>`.
    async fn close(&mut self) {
        match self {
            Conn::Tcp(raw) => raw.write("</stream:stream>").await,
            Conn::Ws(_) => self.write(&format!("<close xmlns='{FRAMING}'/>")).await,
        }
    }
}

/// RFC 7395 §3.3.3: a stanza alone in a WebSocket message carries its namespace.
fn with_client_namespace(xml: &str) -> String {
    for name in ["message", "presence", "iq"] {
        if let Some(rest) = xml.strip_prefix(&format!("<{name}")) {
            if rest.starts_with([' ', '/', '>']) {
                return format!("<{name} xmlns='jabber:client'{rest}");
            }
        }
    }
    xml.to_owned()
}

/// XEP-0198 state of a client: what it received (`h_in`, and which bodies since its last
/// `<a/>`) and what it sent that the server has not acknowledged yet.
struct Sm {
    previd: String,
    h_in: u32,
    acked_in: u32,
    recent: Vec<(u32, u64)>,
    out_acked: u32,
    out_queue: VecDeque<String>,
}

impl Sm {
    fn acked_by_server(&mut self, h: u32) {
        let newly = h.wrapping_sub(self.out_acked) as usize;
        assert!(
            newly <= self.out_queue.len(),
            "the server acknowledged {newly} stanzas, {} were sent",
            self.out_queue.len()
        );
        self.out_queue.drain(..newly);
        self.out_acked = h;
    }

    fn acknowledge(&mut self) -> u32 {
        self.acked_in = self.h_in;
        let h = self.h_in;
        self.recent.retain(|(n, _)| *n > h);
        h
    }
}

/// One virtual user's session: a raw client that answers `<r/>`, replies to IQs, counts its
/// `h` and books every 1:1 message it receives into the ledger.
struct Client {
    conn: Conn,
    user: String,
    jid: String,
    sm: Option<Sm>,
    world: Arc<World>,
    /// `</stream:stream>` sent: nothing more may be written.
    closing: bool,
}

impl Client {
    async fn login(
        world: &Arc<World>,
        user: &str,
        resource: &str,
        sm: bool,
        websocket: bool,
    ) -> Client {
        let mut conn = Conn::authenticated(world, user, websocket).await;
        conn.write(&format!(
            "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>{resource}</resource></bind></iq>"
        ))
        .await;
        let bound = conn.element().await;
        let jid = bound
            .get_child("bind", corvid::xml::ns::BIND)
            .and_then(|b| b.get_child("jid", corvid::xml::ns::BIND))
            .map(|j| j.text())
            .expect("bound jid");
        let mut client = Client {
            conn,
            user: user.to_owned(),
            jid,
            sm: None,
            world: world.clone(),
            closing: false,
        };
        if sm {
            // Not Raw::enable_resumption: stanzas may come first. When this login replaced
            // a session of the same resource, what that one never acknowledged is routed
            // again to the same full JID, i.e. here. They are booked, not counted in `h`.
            client
                .conn
                .write(&format!("<enable xmlns='{SM}' resume='true'/>"))
                .await;
            let enabled = client.until(|el| el.ns() == SM).await;
            assert!(enabled.is("enabled", SM), "{enabled:?}");
            add(&world.stats.sm_logins, 1);
            client.sm = Some(Sm {
                previd: enabled.attr("id").expect("resumable").to_owned(),
                h_in: 0,
                acked_in: 0,
                recent: Vec::new(),
                out_acked: 0,
                out_queue: VecDeque::new(),
            });
        }
        // Fetching the roster makes the session interested in roster pushes.
        let roster = client
            .iq("<iq type='get'><query xmlns='jabber:iq:roster'/></iq>")
            .await;
        assert_eq!(roster.attr("type"), Some("result"));
        client.stanza("<presence/>").await;
        // Offline messages are queued when the presence is handled, before this answer.
        client.ping().await;
        add(&world.stats.logins, 1);
        if websocket {
            add(&world.stats.websocket, 1);
        }
        client
    }

    /// Sends a stanza (kept for retransmission until the server acknowledges it).
    async fn stanza(&mut self, xml: &str) {
        if let Some(sm) = self.sm.as_mut() {
            sm.out_queue.push_back(xml.to_owned());
        }
        self.conn.write(xml).await;
    }

    async fn iq(&mut self, xml_without_id: &str) -> Element {
        let id = format!("q{}", self.world.next_seq());
        let xml = xml_without_id.replacen("<iq ", &format!("<iq id='{id}' "), 1);
        self.stanza(&xml).await;
        self.until(|el| {
            el.name() == "iq"
                && el.attr("id") == Some(id.as_str())
                && matches!(el.attr("type"), Some("result" | "error"))
        })
        .await
    }

    /// A round trip: whatever the server routed for this client's earlier stanzas (bounces
    /// included) is queued before the answer.
    async fn ping(&mut self) {
        let answer = self
            .iq("<iq type='get' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
            .await;
        assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    }

    async fn next(&mut self) -> Element {
        let el = self.conn.element().await;
        self.process(&el).await;
        el
    }

    async fn until(&mut self, pred: impl Fn(&Element) -> bool) -> Element {
        loop {
            let el = self.next().await;
            if pred(&el) {
                return el;
            }
        }
    }

    /// Reads and handles whatever arrives for `time`.
    async fn idle(&mut self, time: Duration) {
        let deadline = tokio::time::Instant::now() + time;
        loop {
            match tokio::time::timeout_at(deadline, self.conn.frame()).await {
                Err(_) => return,
                Ok(Some(Incoming::Element(el))) => self.process(&el).await,
                Ok(Some(Incoming::Open)) => {}
                Ok(Some(Incoming::Close) | None) => {
                    panic!("{}: the server closed the stream", self.jid)
                }
            }
        }
    }

    async fn process(&mut self, el: &Element) {
        if el.is("r", SM) {
            if !self.closing {
                if let Some(sm) = self.sm.as_mut() {
                    let h = sm.acknowledge();
                    self.conn.write(&format!("<a xmlns='{SM}' h='{h}'/>")).await;
                }
            }
            return;
        }
        if el.is("a", SM) {
            let h = el.attr("h").and_then(|h| h.parse().ok()).expect("h");
            if let Some(sm) = self.sm.as_mut() {
                sm.acked_by_server(h);
            }
            return;
        }
        if el.ns() != "jabber:client" {
            return;
        }
        if let Some(sm) = self.sm.as_mut() {
            sm.h_in = sm.h_in.wrapping_add(1);
        }
        match el.name() {
            "message" => self.on_message(el),
            "iq" if matches!(el.attr("type"), Some("get" | "set")) && !self.closing => {
                let id = el.attr("id").unwrap_or_default();
                let to = el
                    .attr("from")
                    .map(|f| format!(" to='{f}'"))
                    .unwrap_or_default();
                // Roster pushes are acknowledged; nothing else is asked of a soak client.
                let reply = if el.has_child("query", "jabber:iq:roster") {
                    format!("<iq type='result' id='{id}'{to}/>")
                } else {
                    format!(
                        "<iq type='error' id='{id}'{to}><error type='cancel'>\
                         <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
                         </error></iq>"
                    )
                };
                self.stanza(&reply).await;
            }
            _ => {}
        }
    }

    fn on_message(&mut self, el: &Element) {
        let (key, outcome) = match el.attr("type") {
            Some("error") => match el.attr("id").and_then(message_seq) {
                Some(seq) => (seq, Outcome::Bounced),
                None => return,
            },
            Some("chat") => {
                let Some(seq) = message_seq(&body(el)) else {
                    return;
                };
                let outcome = if el.has_child("delay", DELAY) {
                    Outcome::Offline
                } else {
                    Outcome::Live
                };
                (seq, outcome)
            }
            Some("groupchat") => {
                add(&self.world.stats.groupchat_in, 1);
                return;
            }
            _ => return,
        };
        if let Some(sm) = self.sm.as_mut() {
            sm.recent.push((sm.h_in, key));
        }
        let mut ledger = self.world.ledger.lock().expect("ledger");
        let Some((from, to)) = ledger.sent.get(&key).copied() else {
            ledger.unknown.push(corvid::xml::to_string(el));
            return;
        };
        let expected = if outcome == Outcome::Bounced {
            from
        } else {
            to
        };
        if expected != account_index(&self.user) {
            ledger
                .misrouted
                .push(format!("{key} ({outcome:?}) reached {}", self.user));
        }
        ledger
            .outcomes
            .entry(key)
            .and_modify(|(_, again)| *again += 1)
            .or_insert((outcome, 0));
    }

    /// Books what this stream received and never acknowledged: the server hands it on again.
    fn finish(&mut self) {
        if let Some(sm) = self.sm.as_ref() {
            let mut ledger = self.world.ledger.lock().expect("ledger");
            for (n, seq) in &sm.recent {
                if *n > sm.acked_in {
                    ledger.unacked.insert(*seq);
                }
            }
        }
    }

    async fn chat(&mut self, rng: &mut StdRng) {
        // One in fifty goes to an account that does not exist and must come back as an error.
        let to = if rng.gen_ratio(1, 50) {
            "ghost".to_owned()
        } else {
            format!("u{:02}", rng.gen_range(0..USERS))
        };
        let seq = self.world.next_seq();
        let text = format!("m-{}-{seq}", self.user);
        self.world
            .ledger
            .lock()
            .expect("ledger")
            .sent
            .insert(seq, (account_index(&self.user), account_index(&to)));
        self.stanza(&format!(
            "<message to='{to}@localhost' type='chat' id='{text}'><body>{text}</body></message>"
        ))
        .await;
    }

    /// Adds a contact and removes it: two roster sets, each pushed to this session.
    async fn roster_churn(&mut self) {
        let contact = format!("c{}@localhost", self.world.next_seq());
        for item in [
            format!("<item jid='{contact}' name='soak'><group>Soak</group></item>"),
            format!("<item jid='{contact}' subscription='remove'/>"),
        ] {
            let answer = self
                .iq(&format!(
                    "<iq type='set'><query xmlns='jabber:iq:roster'>{item}</query></iq>"
                ))
                .await;
            assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
            add(&self.world.stats.roster_sets, 1);
        }
    }

    /// Joins `room` (up to the subject, after any history); returns the own presence.
    async fn join(&mut self, room: &str, nick: &str) -> Element {
        self.stanza(&format!(
            "<presence to='{room}/{nick}'><x xmlns='{MUC}'/></presence>"
        ))
        .await;
        let me = format!("{room}/{nick}");
        let own = self
            .until(|el| el.name() == "presence" && el.attr("from") == Some(me.as_str()))
            .await;
        assert_ne!(own.attr("type"), Some("error"), "join refused: {own:?}");
        self.until(|el| {
            el.name() == "message"
                && el.has_child("subject", "jabber:client")
                && el.attr("from").is_some_and(|f| f.starts_with(room))
        })
        .await;
        add(&self.world.stats.room_joins, 1);
        own
    }

    async fn say_and_leave(&mut self, room: &str, nick: &str) {
        let text = format!("g-{}", self.world.next_seq());
        self.stanza(&format!(
            "<message to='{room}' type='groupchat'><body>{text}</body></message>"
        ))
        .await;
        self.until(|el| el.name() == "message" && body(el) == text)
            .await;
        self.stanza(&format!(
            "<presence to='{room}/{nick}' type='unavailable'/>"
        ))
        .await;
        let me = format!("{room}/{nick}");
        self.until(|el| {
            el.name() == "presence"
                && el.attr("from") == Some(me.as_str())
                && el.attr("type") == Some("unavailable")
        })
        .await;
    }

    async fn shared_room(&mut self, room: &str) {
        let room = format!("{room}@{SERVICE}");
        let nick = self.user.clone();
        self.join(&room, &nick).await;
        self.say_and_leave(&room, &nick).await;
    }

    /// Creates an instant room, speaks in it and leaves it: the room is gone after.
    async fn temp_room(&mut self) {
        let room = format!("tmp{}@{SERVICE}", self.world.next_seq());
        let nick = self.user.clone();
        let own = self.join(&room, &nick).await;
        assert!(status_codes(&own).contains(&201), "a new room: {own:?}");
        let answer = self
            .iq(&format!(
                "<iq to='{room}' type='set'><query xmlns='http://jabber.org/protocol/muc#owner'>\
                 <x xmlns='jabber:x:data' type='submit'/></query></iq>"
            ))
            .await;
        assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
        self.say_and_leave(&room, &nick).await;
        add(&self.world.stats.temp_rooms, 1);
    }

    /// Closes the stream cleanly and reads until the server has closed the connection.
    async fn logout(mut self) {
        self.ping().await;
        if let Some(sm) = self.sm.as_mut() {
            let h = sm.acknowledge();
            self.conn.write(&format!("<a xmlns='{SM}' h='{h}'/>")).await;
        }
        self.closing = true;
        self.conn.close().await;
        while let Some(frame) = self.conn.frame().await {
            if let Incoming::Element(el) = frame {
                self.process(&el).await;
            }
        }
        self.finish();
        add(&self.world.stats.logouts, 1);
    }

    /// Kills the connection without a word and resumes on a new one with the `h` counted;
    /// resends what the server says it has not handled.
    async fn drop_and_resume(self, websocket: bool) -> Client {
        let Client {
            conn,
            user,
            jid,
            sm,
            world,
            ..
        } = self;
        drop(conn);
        let mut sm = sm.expect("resumable");
        let mut conn = Conn::authenticated(&world, &user, websocket).await;
        conn.write(&format!(
            "<resume xmlns='{SM}' previd='{}' h='{}'/>",
            sm.previd, sm.h_in
        ))
        .await;
        let answer = conn.element().await;
        assert!(answer.is("resumed", SM), "{jid}: {answer:?}");
        sm.acknowledge();
        let h = answer.attr("h").and_then(|h| h.parse().ok()).expect("h");
        sm.acked_by_server(h);
        for xml in &sm.out_queue {
            conn.write(xml).await;
        }
        add(&world.stats.resent, sm.out_queue.len() as u64);
        add(&world.stats.resumes, 1);
        if websocket {
            add(&world.stats.websocket, 1);
        }
        Client {
            conn,
            user,
            jid,
            sm: Some(sm),
            world,
            closing: false,
        }
    }

    /// Kills the connection and never resumes: the session waits detached until the
    /// resumption timeout (or a new login replacing it), then its queue goes on.
    async fn abandon(mut self) {
        // So that no bounce is still on its way to a session nobody will read.
        self.ping().await;
        self.finish();
        add(&self.world.stats.abandons, 1);
    }
}

fn status_codes(el: &Element) -> Vec<u16> {
    el.get_child("x", MUC_USER)
        .map(|x| {
            x.children()
                .filter(|c| c.name() == "status")
                .filter_map(|c| c.attr("code").and_then(|v| v.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

async fn virtual_user(world: Arc<World>, user: String, stop: Arc<AtomicBool>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut client: Option<Client> = None;
    // The resource of a session this user abandoned: the next login binds it again and so
    // replaces the detached session at once. Otherwise every login has a resource of its
    // own, so that state kept per full JID would pile up here if it were never removed.
    // (Two sessions at once, one live and one detached, would both get messages to the
    // bare JID: a copy for each, which this accounting does not model.)
    let mut abandoned: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        let Some(mut c) = client.take() else {
            // Offline for a while: messages to it go to offline storage meanwhile.
            tokio::time::sleep(ms(rng.gen_range(100..800))).await;
            let resource = abandoned
                .take()
                .unwrap_or_else(|| format!("r{}", world.next_seq()));
            // A quarter over WebSocket; a resumption may change the transport.
            let websocket = rng.gen_ratio(1, 4);
            let sm = rng.gen_bool(0.6);
            client = Some(Client::login(&world, &user, &resource, sm, websocket).await);
            continue;
        };
        let resumable = c.sm.is_some();
        client = match rng.gen_range(0..100) {
            0..=39 => {
                for _ in 0..rng.gen_range(1..=3) {
                    c.chat(&mut rng).await;
                }
                Some(c)
            }
            40..=47 => {
                c.roster_churn().await;
                Some(c)
            }
            48..=57 => {
                c.shared_room(ROOMS[rng.gen_range(0..ROOMS.len())]).await;
                Some(c)
            }
            58..=60 => {
                c.temp_room().await;
                Some(c)
            }
            61..=67 if resumable => Some(c.drop_and_resume(rng.gen_ratio(1, 4)).await),
            68..=69 if resumable => {
                abandoned = c.jid.split_once('/').map(|(_, r)| r.to_owned());
                c.abandon().await;
                None
            }
            70..=75 => {
                c.logout().await;
                None
            }
            _ => Some(c),
        };
        if let Some(c) = client.as_mut() {
            c.idle(ms(rng.gen_range(50..400))).await;
        }
    }
    if let Some(c) = client {
        c.logout().await;
    }
}

fn user_names() -> Vec<String> {
    (0..USERS).map(|i| format!("u{i:02}")).collect()
}

/// Runs the virtual users for `time`; `checkpoints` are taken (by `sample`) at those
/// fractions of it while the load is on.
async fn churn(
    world: &Arc<World>,
    time: Duration,
    seed: u64,
    checkpoints: &[f64],
    mut sample: impl FnMut(usize),
) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut users = tokio::task::JoinSet::new();
    for (i, user) in user_names().into_iter().enumerate() {
        users.spawn(virtual_user(
            world.clone(),
            user,
            stop.clone(),
            seed + i as u64,
        ));
    }
    let start = tokio::time::Instant::now();
    let mut marks: Vec<tokio::time::Instant> = checkpoints
        .iter()
        .map(|f| start + time.mul_f64(*f))
        .collect();
    marks.push(start + time);
    for (i, mark) in marks.iter().enumerate() {
        // A virtual user that fails fails the test now, not at the end of the run.
        tokio::select! {
            _ = tokio::time::sleep_until(*mark) => {}
            Some(result) = users.join_next() => {
                result.expect("a virtual user failed");
                panic!("a virtual user stopped early");
            }
        }
        if i < checkpoints.len() {
            sample(i);
        }
    }
    stop.store(true, Ordering::Relaxed);
    while let Some(result) = users.join_next().await {
        result.expect("a virtual user failed");
    }
}

/// After a churn: abandoned sessions time out (their queues go to offline storage), then
/// every user logs in once, without stream management, and takes its offline messages.
async fn settle(world: &Arc<World>) {
    tokio::time::sleep(Duration::from_secs(RESUME_TIMEOUT_SECS + 2)).await;
    let mut drains = tokio::task::JoinSet::new();
    for user in user_names() {
        let world = world.clone();
        drains.spawn(async move {
            let resource = format!("r{}", world.next_seq());
            Client::login(&world, &user, &resource, false, false)
                .await
                .logout()
                .await;
        });
    }
    while let Some(result) = drains.join_next().await {
        result.expect("drain");
    }
}

/// The owner creates the persistent rooms the virtual users share.
async fn create_rooms(world: &Arc<World>) {
    let mut owner = Client::login(world, "owner", "rooms", false, false).await;
    for name in ROOMS {
        let room = format!("{name}@{SERVICE}");
        let own = owner.join(&room, "owner").await;
        assert!(status_codes(&own).contains(&201), "{own:?}");
        let answer = owner
            .iq(&format!(
                "<iq to='{room}' type='set'><query xmlns='http://jabber.org/protocol/muc#owner'>\
                 <x xmlns='jabber:x:data' type='submit'>\
                 <field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>\
                 <field var='muc#roomconfig_persistentroom'><value>1</value></field>\
                 </x></query></iq>"
            ))
            .await;
        assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
        owner
            .stanza(&format!("<presence to='{room}/owner' type='unavailable'/>"))
            .await;
        let me = format!("{room}/owner");
        owner
            .until(|el| el.name() == "presence" && el.attr("from") == Some(me.as_str()))
            .await;
    }
    owner.logout().await;
}

// ---------------------------------------------------------------------------------------------
// What the process holds.

#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    rss: u64,
    /// Bytes allocated and not freed (glibc's count, all arenas and mmapped blocks): RSS
    /// without what the allocator keeps after frees. 0 where unknown (not glibc).
    live: u64,
    sqlite: u64,
    fds: usize,
    /// Descriptors of the SQLite files (database, WAL, shared memory): sqlx opens pool
    /// connections on demand and keeps them, up to its pool size.
    db_fds: usize,
    tasks: usize,
}

impl Sample {
    fn take(server_runtime: &tokio::runtime::Handle) -> Sample {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        let rss = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS")
            * 1024;
        let mut fds = 0;
        let mut db_fds = 0;
        for entry in std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd") {
            let Ok(entry) = entry else { continue };
            fds += 1;
            if std::fs::read_link(entry.path())
                .is_ok_and(|target| target.to_string_lossy().contains("corvid.db"))
            {
                db_fds += 1;
            }
        }
        // SAFETY: reads a counter of the SQLite library sqlx links; no arguments, no state.
        let sqlite = unsafe { libsqlite3_sys::sqlite3_memory_used() }.max(0) as u64;
        Sample {
            rss,
            live: live_heap(),
            sqlite,
            fds,
            db_fds,
            tasks: server_runtime.metrics().num_alive_tasks(),
        }
    }

    /// RSS without SQLite's own allocations (mostly its page cache, bounded per connection).
    fn heap(&self) -> u64 {
        self.rss.saturating_sub(self.sqlite)
    }

    fn other_fds(&self) -> usize {
        self.fds - self.db_fds
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn live_heap() -> u64 {
    // SAFETY: mallinfo2 takes no arguments and returns a plain struct of counters.
    let info = unsafe { libc::mallinfo2() };
    (info.uordblks + info.hblkhd) as u64
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn live_heap() -> u64 {
    0
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_leaks_nothing_and_loses_no_message() {
    let secs: u64 = std::env::var("CORVID_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let mut accounts = user_names();
    accounts.push("owner".into());
    let accounts: Vec<&str> = accounts.iter().map(String::as_str).collect();
    let server = IsolatedServer::start(
        |c| {
            // Every virtual user logs in from 127.0.0.1, up to two dozen SASL exchanges at
            // once, which the per-address login throttle (exchanges in flight count against
            // the failure budget too) would refuse; the per-address connection limits are
            // already off in tests/common. Everything else keeps its default: the churn
            // stays under the stanza and byte rates and the per-account caps.
            c.auth.max_concurrent_per_address = 10_000;
            c.auth.max_failures_per_window = 10_000;
            c.stream_management.resume_timeout_secs = RESUME_TIMEOUT_SECS;
        },
        &accounts,
    );
    let world = Arc::new(World {
        addr: server.c2s,
        http: server.http,
        tls: server.tls_config(),
        ledger: Mutex::default(),
        stats: Stats::default(),
        seq: AtomicU64::new(0),
    });

    // Baseline after a warm-up churn and its settling: the server's lazily made, bounded
    // state (SQLite pool connections, the persistent rooms, caches, the allocator's first
    // arenas) is then in place, and everything above it afterwards is what the churn left.
    create_rooms(&world).await;
    churn(&world, WARM_UP, 1, &[], |_| {}).await;
    settle(&world).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let base = Sample::take(&server.runtime);
    let (sent_in_warm_up, base_ledger) = {
        let ledger = world.ledger.lock().expect("ledger");
        (ledger.sent.len(), ledger.heap_bytes())
    };

    // The churn, with a sampler for the peaks.
    let sampling = Arc::new(AtomicBool::new(true));
    let peak = Arc::new(Mutex::new(base));
    let sampler = {
        let sampling = sampling.clone();
        let peak = peak.clone();
        let runtime = server.runtime.clone();
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                let s = Sample::take(&runtime);
                {
                    let mut p = peak.lock().expect("peak");
                    p.rss = p.rss.max(s.rss);
                    p.sqlite = p.sqlite.max(s.sqlite);
                    p.fds = p.fds.max(s.fds);
                    p.db_fds = p.db_fds.max(s.db_fds);
                    p.tasks = p.tasks.max(s.tasks);
                }
                tokio::time::sleep(ms(500)).await;
            }
        })
    };
    let started = Instant::now();
    // A trace every tenth of the run (a leak shows as a slope), the middle and the end of
    // the load kept for the check below.
    let checkpoints = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.98];
    let mut under_load = [Sample::default(); 10];
    churn(&world, Duration::from_secs(secs), 1000, &checkpoints, |i| {
        let s = Sample::take(&server.runtime);
        let sent = world.ledger.lock().expect("ledger").sent.len();
        println!(
            "SOAK t={:.0}s sent={sent} logins={} rss={:.1} MiB (outside SQLite {:.1}, \
                 SQLite {:.1}) live heap={:.2} MiB fds={} ({} db) tasks={}",
            started.elapsed().as_secs_f64(),
            get(&world.stats.logins),
            mib(s.rss),
            mib(s.heap()),
            mib(s.sqlite),
            mib(s.live),
            s.fds,
            s.db_fds,
            s.tasks
        );
        under_load[i] = s;
    })
    .await;
    let churned = started.elapsed();
    settle(&world).await;
    sampling.store(false, Ordering::Relaxed);
    sampler.await.expect("sampler");
    let (mid, late) = (under_load[4], under_load[9]);

    // Every client is gone: the server's tasks and the descriptors must come back.
    let mut end = Sample::take(&server.runtime);
    for _ in 0..300 {
        if end.tasks <= base.tasks && end.other_fds() <= base.other_fds() {
            break;
        }
        tokio::time::sleep(ms(100)).await;
        end = Sample::take(&server.runtime);
    }
    let peak = *peak.lock().expect("peak");

    // The accounting.
    let ledger = world.ledger.lock().expect("ledger");
    let sent = ledger.sent.len();
    let (mut live, mut offline, mut bounced, mut again) = (0, 0, 0, 0);
    let mut missing = Vec::new();
    let mut duplicated = Vec::new();
    for (seq, (from, to)) in &ledger.sent {
        match ledger.outcomes.get(seq) {
            None => missing.push(format!("m-u{from:02}-{seq} to {to}")),
            Some((first, more)) => {
                match first {
                    Outcome::Live => live += 1,
                    Outcome::Offline => offline += 1,
                    Outcome::Bounced => bounced += 1,
                }
                if *more > 0 {
                    if ledger.unacked.contains(seq) {
                        again += *more as usize;
                    } else {
                        duplicated.push(format!("m-u{from:02}-{seq}: {first:?} and {more} more"));
                    }
                }
            }
        }
    }
    // What is allocated outside SQLite and the test's ledger: the server's state, the
    // runtimes, and the clients' (all dropped by now).
    let end_ledger = ledger.heap_bytes();
    let kept = |sample: &Sample, ledger: u64| {
        sample
            .live
            .saturating_sub(sample.sqlite)
            .saturating_sub(ledger)
    };
    let (kept_base, kept_end) = (kept(&base, base_ledger), kept(&end, end_ledger));
    let s = &world.stats;
    println!(
        "SOAK secs={secs} (churned {:.0}s) users={USERS} | logins={} (sm {}) logouts={} \
         resumes={} (resent {}) websocket={} abandoned={} roster_sets={} room_joins={} temp_rooms={} \
         groupchat_in={} | messages sent={sent} (warm-up {sent_in_warm_up}) live={live} \
         offline={offline} bounced={bounced} again_after_unacked={again} missing={} \
         duplicated={} misrouted={} | rss MiB base={:.1} mid={:.1} late={:.1} peak={:.1} \
         end={:.1} | rss-sqlite MiB base={:.1} mid={:.1} late={:.1} end={:.1} | sqlite MiB \
         base={:.1} end={:.1} | fds base={} ({} db) peak={} ({} db) end={} ({} db) | tasks \
         base={} mid={} peak={} end={} | live heap MiB base={:.2} mid={:.2} late={:.2} end={:.2} \
         (ledger {:.2}) outside SQLite and the ledger base={:.2} end={:.2}",
        churned.as_secs_f64(),
        get(&s.logins),
        get(&s.sm_logins),
        get(&s.logouts),
        get(&s.resumes),
        get(&s.resent),
        get(&s.websocket),
        get(&s.abandons),
        get(&s.roster_sets),
        get(&s.room_joins),
        get(&s.temp_rooms),
        get(&s.groupchat_in),
        missing.len(),
        duplicated.len(),
        ledger.misrouted.len(),
        mib(base.rss),
        mib(mid.rss),
        mib(late.rss),
        mib(peak.rss),
        mib(end.rss),
        mib(base.heap()),
        mib(mid.heap()),
        mib(late.heap()),
        mib(end.heap()),
        mib(base.sqlite),
        mib(end.sqlite),
        base.fds,
        base.db_fds,
        peak.fds,
        peak.db_fds,
        end.fds,
        end.db_fds,
        base.tasks,
        mid.tasks,
        peak.tasks,
        end.tasks,
        mib(base.live),
        mib(mid.live),
        mib(late.live),
        mib(end.live),
        mib(end_ledger),
        mib(kept_base),
        mib(kept_end),
    );

    assert!(
        missing.is_empty(),
        "lost: {:?}",
        &missing[..missing.len().min(20)]
    );
    assert!(duplicated.is_empty(), "delivered twice: {duplicated:?}");
    assert!(ledger.misrouted.is_empty(), "{:?}", ledger.misrouted);
    assert!(ledger.unknown.is_empty(), "{:?}", ledger.unknown);
    assert_eq!(sent, live + offline + bounced);
    assert!(bounced > 0, "the churn sent nothing to the missing account");
    assert!(
        offline > 0 && live > 0,
        "the churn did not exercise both paths"
    );
    assert!(get(&s.resumes) > 0 && get(&s.abandons) > 0, "no resumption");

    assert!(
        end.tasks <= base.tasks,
        "server tasks: {} at the baseline, {} after the load",
        base.tasks,
        end.tasks
    );
    assert!(
        end.other_fds() <= base.other_fds(),
        "descriptors other than SQLite's: {} at the baseline, {} after the load",
        base.other_fds(),
        end.other_fds()
    );
    // sqlx's default pool: at most 10 connections, each with the database, its WAL and the
    // shared-memory file open.
    assert!(end.db_fds <= 30, "SQLite descriptors: {}", end.db_fds);
    // A leak grows with the run; the allocator's retention and caches do not. So the second
    // half of the churn must not add what the first did: between the middle and the end of
    // the load, RSS outside SQLite may grow by a tenth or 16 MiB, whichever is more.
    let allowance = (mid.heap() / 10).max(16 << 20);
    assert!(
        late.heap() <= mid.heap() + allowance,
        "RSS outside SQLite grew from {:.1} MiB at mid-run to {:.1} MiB at the end of the load",
        mib(mid.heap()),
        mib(late.heap())
    );
    assert!(
        end.heap() <= late.heap().max(mid.heap()) + allowance,
        "RSS outside SQLite grew after the load: {:.1} MiB",
        mib(end.heap())
    );
    // The tighter check, where glibc tells: what is still allocated once the load is gone,
    // outside SQLite and the ledger, against the baseline. What may legitimately stay is
    // bounded: the ids and final `h` of ended resumable sessions (kept for `<failed h/>`, at
    // most 10,000), sqlx's statement caches, rustls' session caches, rooms' history. 4 MiB
    // is over twice what a 10-minute run keeps; a leak of 100 bytes per message or 1 KiB per
    // login would pass it there.
    if base.live > 0 {
        assert!(
            kept_end <= kept_base + (4 << 20),
            "heap in use outside SQLite and the ledger: {:.2} MiB at the baseline, {:.2} MiB \
             after the load",
            mib(kept_base),
            mib(kept_end)
        );
    }
}
