//! muc-fanout: groupchat fan-out through a MUC service.
//!
//! Setup (protocol only, the same on every server): R rooms x N occupants,
//! one distinct user per occupant (PREFIX1..PREFIX(R*N), occupant j of room k
//! is user k*N+j+1, nick `nJ`). Every occupant logs in and sends initial
//! presence. In each room the first occupant joins alone (history
//! maxstanzas=0); when its self-presence (110) says the room was created (201)
//! it submits an instant configuration and waits for the result; then the
//! others join. Measurement starts when every occupant has seen the presence
//! of all N occupants, its own with status 110 among them.
//!
//! Measured: the first S occupants of each room send groupchat messages whose
//! body is `J SEQ NANOS` (sender's index in the room, its sequence number, the
//! tool's monotonic clock at send). Either each sender keeps up to W messages
//! in flight (a message is done when the sender reads its own reflection), or
//! the senders send at a fixed total delivery rate. Every occupant counts
//! every delivery and checks each sender's sequence for gaps; messages sent in
//! the measured interval must reach all N occupants, so
//! `lost = sent_measured * N - received_measured` is exact.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::modes::{base_json, login_json, login_spread, merge, require_all};
use crate::stats::{self, emit, latency_json, now_ns, CpuSample};
use crate::xml::{self, Ev};
use crate::xmpp::{self, Session};
use crate::MucArgs;

type Result<T> = std::result::Result<T, String>;

// ---------------------------------------------------------------- parsing

/// Does a MUC presence carry `<status code='CODE'/>` (either quote style)?
fn has_status(el: &[u8], code: &[u8]) -> bool {
    let mut from = 0;
    while let Some(i) = xml::find(&el[from..], b"<status") {
        let at = from + i;
        from = at + 7;
        if xml::attr(&el[at..], b"code") == Some(code) {
            return true;
        }
    }
    false
}

/// Index of the occupant from `room_jid/nJ` (J < n), if it is one of ours.
fn occupant_of(from: &[u8], room_jid: &[u8], n: usize) -> Option<usize> {
    let rest = from.strip_prefix(room_jid)?.strip_prefix(b"/n")?;
    if rest.is_empty()
        || (rest.len() > 1 && rest[0] == b'0')
        || !rest.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    let j: usize = std::str::from_utf8(rest).ok()?.parse().ok()?;
    (j < n).then_some(j)
}

/// A benchmark message body: (sender index in the room, sequence, send time).
fn parse_body(body: &[u8]) -> Option<(usize, u64, u64)> {
    let mut it = body.split(|&b| b == b' ');
    let mut num = || -> Option<u64> { std::str::from_utf8(it.next()?).ok()?.parse().ok() };
    let j = num()? as usize;
    let seq = num()?;
    let ts = num()?;
    Some((j, seq, ts))
}

fn push_groupchat(out: &mut Vec<u8>, room: &str, j: usize, seq: u64, ts: u64) {
    use std::io::Write;
    let _ = write!(
        out,
        "<message to='{room}' type='groupchat' id='g{j}-{seq}'><body>{j} {seq} {ts}</body></message>"
    );
}

/// Period of each sender for a total delivery rate: each message reaches the
/// N occupants of its room, so rooms*senders senders share rate/N messages/s.
fn sender_period(rate: f64, rooms: usize, occupants: usize, senders: usize) -> Duration {
    let msgs_per_s = rate / occupants as f64;
    Duration::from_secs_f64((rooms * senders) as f64 / msgs_per_s)
}

// ---------------------------------------------------------------- occupants

/// What every occupant shares with the coordinator.
#[derive(Default)]
struct Shared {
    /// Deliveries of benchmark messages to any occupant (sampled per second).
    delivered: AtomicU64,
    /// Benchmark messages sent by any sender.
    sent: AtomicU64,
    failed: AtomicUsize,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    fn fail(&self, e: String) {
        if self.failed.fetch_add(1, Relaxed) == 0 {
            eprintln!("muc-fanout: occupant failed: {e}");
        }
        if let Ok(mut f) = self.first_error.lock() {
            f.get_or_insert(e);
        }
    }
    fn first_error(&self) -> String {
        self.first_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_default()
    }
}

/// The measured interval, known once every occupant is ready.
#[derive(Clone, Copy, Debug)]
struct Plan {
    t0: Instant,
    warm_end_ns: u64,
    end_ns: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Run,
    /// Stop sending (the end time is past); keep reading.
    Drain,
    /// Close the stream and return.
    Finish,
}

#[derive(Clone, Copy)]
enum Sending {
    None,
    Window(usize),
    /// Period and offset of the first message after the plan's t0.
    Periodic(Duration, Duration),
}

struct OccCfg {
    room: usize,
    j: usize,
    n: usize,
    senders: usize,
    room_jid: String,
    sending: Sending,
}

/// Setup events for the coordinator.
enum SetupEv {
    /// The room's first occupant is in and the room is configured.
    RoomOpen { room: usize, created: bool },
    /// This occupant has the presence of all N occupants.
    Ready,
}

#[derive(Default)]
struct OccResult {
    room: usize,
    sent_total: u64,
    sent_measured: u64,
    recv_total: u64,
    recv_measured: u64,
    /// Messages missing in a sender's sequence as seen by this occupant.
    seq_gaps: u64,
    /// Messages seen again or out of order.
    seq_dups: u64,
    msg_errors: u64,
    /// Presences from the room during the measurement (should be 0).
    presences_during: u64,
    presence_during_first: Option<String>,
    latencies: Vec<u64>,
    error: Option<String>,
}

struct Occ {
    cfg: OccCfg,
    /// Occupants seen present (by index in the room).
    present: Vec<bool>,
    present_count: usize,
    self_in: bool,
    created: bool,
    config_sent: bool,
    config_done: bool,
    ready_sent: bool,
    /// Next expected sequence number per sender of the room.
    next_seq: Vec<u64>,
    plan: Option<Plan>,
    seq: u64,
    /// Own messages read back (the reflection ends a message's flight).
    own_back: u64,
    /// The coordinator said Finish (occupants are leaving).
    finishing: bool,
    r: OccResult,
}

impl Occ {
    /// Handle everything buffered; replies (iq answers) go to `out`.
    fn on_read(&mut self, s: &mut Session, shared: &Shared, out: &mut Vec<u8>) -> Result<()> {
        let now = now_ns();
        let room = self.cfg.room_jid.as_bytes();
        let mut delivered = 0u64;
        while let Some(ev) = s.poll_event()? {
            let range = match ev {
                Ev::Stanza(r) => r,
                Ev::Open => continue,
                Ev::Close => return Err(s.err("server closed the stream")),
            };
            let el = &s.rbuf[range];
            match xml::name(el) {
                b"message" => {
                    let ty = xml::attr(el, b"type");
                    if ty == Some(b"error") {
                        self.r.msg_errors += 1;
                        if self.r.msg_errors == 1 {
                            eprintln!("{}: message error: {}", s.user, xml::snippet(el));
                        }
                        continue;
                    }
                    if ty != Some(b"groupchat") {
                        continue;
                    }
                    let Some(body) = xml::child_text(el, b"<body>", b"</body>") else {
                        continue; // the room's subject
                    };
                    let Some((j, seq, ts)) = parse_body(body) else {
                        return Err(format!(
                            "{}: unexpected groupchat body: {}",
                            s.user,
                            xml::snippet(el)
                        ));
                    };
                    let Some(next) = self.next_seq.get_mut(j) else {
                        return Err(format!("{}: sender {j} out of range", s.user));
                    };
                    match seq.cmp(next) {
                        std::cmp::Ordering::Equal => *next += 1,
                        std::cmp::Ordering::Greater => {
                            self.r.seq_gaps += seq - *next;
                            *next = seq + 1;
                        }
                        std::cmp::Ordering::Less => self.r.seq_dups += 1,
                    }
                    self.r.recv_total += 1;
                    delivered += 1;
                    if let Some(p) = self.plan {
                        if ts >= p.warm_end_ns && ts < p.end_ns {
                            self.r.recv_measured += 1;
                            self.r.latencies.push(now.saturating_sub(ts));
                        }
                    }
                    if j == self.cfg.j {
                        self.own_back += 1;
                    }
                }
                b"presence" => {
                    let Some(from) = xml::attr(el, b"from") else {
                        continue;
                    };
                    if !from.starts_with(room) {
                        continue;
                    }
                    let ty = xml::attr(el, b"type");
                    if ty == Some(b"error") {
                        return Err(format!(
                            "{}: join {} refused: {}",
                            s.user,
                            self.cfg.room_jid,
                            xml::snippet(el)
                        ));
                    }
                    // Not once told to finish: the others' leaves then arrive.
                    if self.plan.is_some() && !self.finishing {
                        self.r.presences_during += 1;
                        if self.r.presence_during_first.is_none() {
                            self.r.presence_during_first = Some(xml::snippet(el));
                        }
                    }
                    let Some(j) = occupant_of(from, room, self.cfg.n) else {
                        continue;
                    };
                    let avail = ty.is_none();
                    if self.present[j] != avail {
                        self.present[j] = avail;
                        if avail {
                            self.present_count += 1;
                        } else {
                            self.present_count -= 1;
                        }
                    }
                    if j == self.cfg.j && avail && has_status(el, b"110") {
                        self.self_in = true;
                        self.created |= has_status(el, b"201");
                    }
                }
                b"iq" => {
                    let t = xml::attr(el, b"type");
                    if t == Some(b"get") || t == Some(b"set") {
                        xmpp::iq_reply(el, out);
                    } else if xml::attr(el, b"id") == Some(b"cfg") {
                        if t != Some(b"result") {
                            return Err(format!(
                                "{}: instant room configuration of {} failed: {}",
                                s.user,
                                self.cfg.room_jid,
                                xml::snippet(el)
                            ));
                        }
                        self.config_done = true;
                    }
                }
                b"stream:error" => {
                    return Err(format!("{}: stream error: {}", s.user, xml::snippet(el)));
                }
                _ => {}
            }
        }
        s.compact();
        if delivered > 0 {
            shared.delivered.fetch_add(delivered, Relaxed);
        }
        Ok(())
    }
}

/// The coordinator's side of an occupant.
struct Ctl {
    /// The room is open for the other occupants to join.
    gate: watch::Receiver<bool>,
    plan: watch::Receiver<Option<Plan>>,
    phase: watch::Receiver<Phase>,
    setup: mpsc::UnboundedSender<SetupEv>,
}

enum Wake {
    Read(std::io::Result<usize>),
    Gate,
    Plan,
    Phase,
    Tick,
    CoordinatorGone,
}

async fn tick(t: &mut Option<Interval>) {
    match t {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn occupant(mut s: Session, cfg: OccCfg, mut ctl: Ctl, shared: Arc<Shared>) -> OccResult {
    let n = cfg.n;
    let senders = cfg.senders;
    let room = cfg.room;
    let mut o = Occ {
        cfg,
        present: vec![false; n],
        present_count: 0,
        self_in: false,
        created: false,
        config_sent: false,
        config_done: false,
        ready_sent: false,
        next_seq: vec![0; senders],
        plan: None,
        seq: 0,
        own_back: 0,
        finishing: false,
        r: OccResult::default(),
    };
    if let Err(e) = occupant_loop(&mut s, &mut o, &mut ctl, &shared).await {
        shared.fail(e.clone());
        o.r.error = Some(e);
    }
    let _ = s.send(b"</stream:stream>").await;
    o.r.room = room;
    o.r
}

/// Record a message about to be sent.
fn send_one(o: &mut Occ, p: &Plan, out: &mut Vec<u8>, ts: u64, shared: &Shared) {
    push_groupchat(out, &o.cfg.room_jid, o.cfg.j, o.seq, ts);
    o.seq += 1;
    o.r.sent_total += 1;
    if ts >= p.warm_end_ns && ts < p.end_ns {
        o.r.sent_measured += 1;
    }
    shared.sent.fetch_add(1, Relaxed);
}

async fn occupant_loop(s: &mut Session, o: &mut Occ, ctl: &mut Ctl, shared: &Shared) -> Result<()> {
    let join = format!(
        "<presence to='{}/n{}'><x xmlns='http://jabber.org/protocol/muc'>\
         <history maxstanzas='0'/></x></presence>",
        o.cfg.room_jid, o.cfg.j
    );
    let config = format!(
        "<iq type='set' id='cfg' to='{}'><query xmlns='http://jabber.org/protocol/muc#owner'>\
         <x xmlns='jabber:x:data' type='submit'/></query></iq>",
        o.cfg.room_jid
    );
    let first = o.cfg.j == 0;
    let mut joined = false;
    let mut opened = false;
    let mut phase = Phase::Run;
    let mut ticker: Option<Interval> = None;
    let mut out = Vec::with_capacity(1024);
    loop {
        // Setup steps, in order.
        if !joined && (first || *ctl.gate.borrow()) {
            out.extend_from_slice(join.as_bytes());
            joined = true;
        }
        if first && o.self_in && !opened {
            if o.created && !o.config_sent {
                out.extend_from_slice(config.as_bytes());
                o.config_sent = true;
            }
            if !o.created || o.config_done {
                let _ = ctl.setup.send(SetupEv::RoomOpen {
                    room: o.cfg.room,
                    created: o.created,
                });
                opened = true;
            }
        }
        if !o.ready_sent && o.self_in && o.present_count == o.cfg.n && (!first || opened) {
            let _ = ctl.setup.send(SetupEv::Ready);
            o.ready_sent = true;
        }
        // Window senders top up.
        if let (Some(p), Phase::Run, Sending::Window(w)) = (o.plan, phase, o.cfg.sending) {
            let inflight = o.r.sent_total.saturating_sub(o.own_back);
            for _ in inflight..w as u64 {
                let ts = now_ns();
                if ts >= p.end_ns {
                    break;
                }
                send_one(o, &p, &mut out, ts, shared);
            }
        }
        if !out.is_empty() {
            s.send(&out).await?;
            out.clear();
        }
        if phase == Phase::Finish {
            return Ok(());
        }
        s.prepare_read();
        let wake = tokio::select! {
            r = s.stream.read_buf(&mut s.rbuf) => Wake::Read(r),
            r = ctl.gate.changed(), if !joined => if r.is_ok() { Wake::Gate } else { Wake::CoordinatorGone },
            r = ctl.plan.changed(), if o.plan.is_none() => if r.is_ok() { Wake::Plan } else { Wake::CoordinatorGone },
            r = ctl.phase.changed() => if r.is_ok() { Wake::Phase } else { Wake::CoordinatorGone },
            _ = tick(&mut ticker), if phase == Phase::Run => Wake::Tick,
        };
        match wake {
            Wake::Read(r) => {
                match r {
                    Ok(0) => return Err(s.err("connection closed by server")),
                    Err(e) => return Err(s.err(&format!("read: {e}"))),
                    Ok(_) => {}
                }
                o.finishing = *ctl.phase.borrow() == Phase::Finish;
                o.on_read(s, shared, &mut out)?;
                s.rbuf.shrink_to(16 * 1024);
            }
            Wake::Gate => {
                ctl.gate.borrow_and_update();
            }
            Wake::Plan => {
                let p = *ctl.plan.borrow_and_update();
                o.plan = p;
                if let (Some(p), Sending::Periodic(period, offset)) = (p, o.cfg.sending) {
                    let mut t = tokio::time::interval_at(p.t0 + offset, period);
                    t.set_missed_tick_behavior(MissedTickBehavior::Burst);
                    ticker = Some(t);
                }
            }
            Wake::Phase => phase = *ctl.phase.borrow_and_update(),
            Wake::Tick => {
                if let Some(p) = o.plan {
                    let ts = now_ns();
                    if ts < p.end_ns {
                        send_one(o, &p, &mut out, ts, shared);
                    }
                }
            }
            Wake::CoordinatorGone => return Err(format!("{}: coordinator gone", s.user)),
        }
    }
}

// ---------------------------------------------------------------- coordinator

/// Wait until the server uses less than 5 % of a core over half a second (or
/// `max`); returns the seconds waited.
async fn wait_server_idle(pid: Option<u32>, max: Duration) -> Option<f64> {
    let pid = pid?;
    let t = Instant::now();
    let step = Duration::from_millis(500);
    let mut before = stats::cpu_stat_ns(pid)?;
    while t.elapsed() < max {
        tokio::time::sleep(step).await;
        let now = stats::cpu_stat_ns(pid)?;
        if now.saturating_sub(before) < step.as_nanos() as u64 / 20 {
            break;
        }
        before = now;
    }
    Some((t.elapsed().as_secs_f64() * 10.0).round() / 10.0)
}

pub async fn muc_fanout(a: MucArgs, nofile: Option<u64>) -> Result<()> {
    let (rooms, n) = (a.rooms, a.occupants);
    if rooms == 0 || n == 0 {
        return Err("--rooms and --occupants must be positive".into());
    }
    let senders = a.senders.clamp(1, n);
    let window = a.window.max(1);
    if let Some(r) = a.rate {
        if r <= 0.0 {
            return Err("--rate must be positive".into());
        }
    }
    let mut c = a.common.clone();
    c.users = rooms * n;
    let service = a
        .service
        .clone()
        .unwrap_or_else(|| format!("conference.{}", c.domain));
    let prefix = a
        .room_prefix
        .clone()
        .unwrap_or_else(|| format!("b{}r", stats::unix_time()));
    let mut res = base_json("muc-fanout", &c, nofile);
    let kind = if a.rate.is_some() { "rate" } else { "max" };
    merge(
        &mut res,
        json!({
            "kind": kind,
            "rooms": rooms,
            "occupants": n,
            "senders_per_room": senders,
            "window": a.rate.is_none().then_some(window),
            "rate": a.rate,
            "service": service,
            "room_prefix": prefix,
            "user_prefix": c.user_prefix,
            "warmup_s": a.warmup,
            "duration_s": a.duration,
        }),
    );
    eprintln!(
        "muc-fanout: {rooms} room(s) x {n} occupants ({}1..{}{}) at {service}, {senders} sender(s) \
         per room, {}, warm-up {}s, {}s measured, on {}",
        c.user_prefix,
        c.user_prefix,
        rooms * n,
        match a.rate {
            Some(r) => format!("{r} deliveries/s in total"),
            None => format!("window {window} per sender"),
        },
        a.warmup,
        a.duration,
        c.server_list().join(",")
    );

    // Let the server finish earlier work (e.g. the leaves of a previous run).
    let idle_wait = wait_server_idle(c.pid, Duration::from_secs(60)).await;
    merge(&mut res, json!({ "server_idle_wait_s": idle_wait }));

    // With --servers, occupant mK logs in to server (K-1) mod S: every room's
    // occupants are spread over all servers.
    let names = (1..=rooms * n).map(|i| (c.user(i), c.node_of(i))).collect();
    let l = login_spread(&c, c.login_cfgs(true).await?, names, true).await;
    merge(&mut res, login_json(&l));
    require_all(&l)?;

    // One task per occupant.
    let shared = Arc::new(Shared::default());
    let gates: Vec<watch::Sender<bool>> = (0..rooms).map(|_| watch::channel(false).0).collect();
    let (plan_tx, plan_rx) = watch::channel(None::<Plan>);
    let (phase_tx, phase_rx) = watch::channel(Phase::Run);
    let (setup_tx, mut setup_rx) = mpsc::unbounded_channel();
    let mut set = JoinSet::new();
    for (g, s) in l.sessions.into_iter().enumerate() {
        let Some(s) = s else {
            return Err("internal: missing session".into());
        };
        let (room, j) = (g / n, g % n);
        let sending = match (j < senders, a.rate) {
            (false, _) => Sending::None,
            (true, None) => Sending::Window(window),
            (true, Some(rate)) => {
                let period = sender_period(rate, rooms, n, senders);
                // Staggered evenly over all senders of all rooms.
                let k = (room * senders + j) as f64 / (rooms * senders) as f64;
                Sending::Periodic(period, period.mul_f64(k))
            }
        };
        let cfg = OccCfg {
            room,
            j,
            n,
            senders,
            room_jid: format!("{prefix}{}@{service}", room + 1),
            sending,
        };
        let ctl = Ctl {
            gate: gates[room].subscribe(),
            plan: plan_rx.clone(),
            phase: phase_rx.clone(),
            setup: setup_tx.clone(),
        };
        set.spawn(occupant(s, cfg, ctl, shared.clone()));
    }
    drop(setup_tx);

    // Setup: rooms open one by one as their creators finish, then everyone joins.
    let t_setup = Instant::now();
    let deadline = t_setup + Duration::from_secs_f64(a.setup_timeout);
    let (mut opened, mut created, mut ready) = (0usize, 0usize, 0usize);
    let mut next_log = t_setup + Duration::from_secs(2);
    let setup_err = loop {
        if ready == rooms * n {
            break None;
        }
        if shared.failed.load(Relaxed) > 0 {
            break Some(format!("setup: {}", shared.first_error()));
        }
        let now = Instant::now();
        if now >= deadline {
            break Some(format!(
                "setup: timed out after {}s: {opened}/{rooms} rooms open, {ready}/{} occupants ready",
                a.setup_timeout,
                rooms * n
            ));
        }
        if now >= next_log {
            eprintln!(
                "  setup: {opened}/{rooms} rooms open, {ready}/{} occupants ready, {:.1}s",
                rooms * n,
                t_setup.elapsed().as_secs_f64()
            );
            next_log += Duration::from_secs(2);
        }
        match tokio::time::timeout(Duration::from_millis(100), setup_rx.recv()).await {
            Ok(Some(SetupEv::RoomOpen { room, created: cr })) => {
                opened += 1;
                created += cr as usize;
                let _ = gates[room].send(true);
            }
            Ok(Some(SetupEv::Ready)) => ready += 1,
            Ok(None) | Err(_) => {}
        }
    };
    let setup_s = t_setup.elapsed().as_secs_f64();
    merge(
        &mut res,
        json!({ "setup_s": (setup_s * 1000.0).round() / 1000.0, "rooms_created": created }),
    );
    if let Some(e) = setup_err {
        let _ = phase_tx.send(Phase::Finish);
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while set.join_next().await.is_some() {}
        })
        .await;
        return Err(e);
    }
    eprintln!(
        "  setup: {rooms} room(s) open ({created} created), all {} occupants see all {n}, {setup_s:.1}s",
        rooms * n
    );
    // Let the join traffic settle.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let t0 = Instant::now();
    let warm_end_ns = now_ns() + (a.warmup * 1e9) as u64;
    let plan = Plan {
        t0,
        warm_end_ns,
        end_ns: warm_end_ns + (a.duration * 1e9) as u64,
    };
    let _ = plan_tx.send(Some(plan));

    // Measured interval: deliveries sampled each second, CPU at both ends.
    tokio::time::sleep_until(t0 + Duration::from_secs_f64(a.warmup)).await;
    let me = std::process::id();
    let (cpu0, tool0, ticks0) = (
        CpuSample::read(c.pid),
        stats::cpu_stat_ns(me),
        stats::cpu_ticks(),
    );
    let m0 = Instant::now();
    let d0 = shared.delivered.load(Relaxed);
    let mut per_second = Vec::new();
    let mut last = d0;
    let end = m0 + Duration::from_secs_f64(a.duration);
    let mut next = m0 + Duration::from_secs(1);
    while next <= end {
        tokio::time::sleep_until(next).await;
        let d = shared.delivered.load(Relaxed);
        per_second.push(d - last);
        last = d;
        next += Duration::from_secs(1);
    }
    tokio::time::sleep_until(end).await;
    let measured = shared.delivered.load(Relaxed) - d0;
    let measured_s = m0.elapsed().as_secs_f64();
    let (cpu1, tool1, ticks1) = (
        CpuSample::read(c.pid),
        stats::cpu_stat_ns(me),
        stats::cpu_ticks(),
    );

    // Drain: until every message sent has reached its N occupants, or no
    // delivery for --drain seconds, or --drain-max in all.
    let _ = phase_tx.send(Phase::Drain);
    let t_drain = Instant::now();
    let drain_end = t_drain + Duration::from_secs_f64(a.drain_max);
    let idle_max = Duration::from_secs_f64(a.drain);
    let (mut last_d, mut last_change) = (shared.delivered.load(Relaxed), Instant::now());
    loop {
        let d = shared.delivered.load(Relaxed);
        let now = Instant::now();
        if d != last_d {
            (last_d, last_change) = (d, now);
        }
        if d >= shared.sent.load(Relaxed) * n as u64
            || now >= drain_end
            || now - last_change >= idle_max
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drain_s = t_drain.elapsed().as_secs_f64();
    let _ = phase_tx.send(Phase::Finish);
    let mut results = Vec::with_capacity(rooms * n);
    while let Some(j) = set.join_next().await {
        match j {
            Ok(r) => results.push(r),
            Err(e) => results.push(OccResult {
                error: Some(format!("occupant task: {e}")),
                ..OccResult::default()
            }),
        }
    }

    // Totals.
    let mut sent_room = vec![(0u64, 0u64); rooms]; // (measured, total) sent per room
    let mut recv_room = vec![(0u64, 0u64); rooms];
    for r in &results {
        sent_room[r.room].0 += r.sent_measured;
        sent_room[r.room].1 += r.sent_total;
        recv_room[r.room].0 += r.recv_measured;
        recv_room[r.room].1 += r.recv_total;
    }
    let nn = n as u64;
    let expected_measured: u64 = sent_room.iter().map(|s| s.0 * nn).sum();
    let expected_total: u64 = sent_room.iter().map(|s| s.1 * nn).sum();
    let lost_measured: u64 = (0..rooms)
        .map(|k| (sent_room[k].0 * nn).saturating_sub(recv_room[k].0))
        .sum();
    let lost_total: u64 = (0..rooms)
        .map(|k| (sent_room[k].1 * nn).saturating_sub(recv_room[k].1))
        .sum();
    let mut lat = Vec::with_capacity(results.iter().map(|r| r.latencies.len()).sum());
    for r in results.iter_mut() {
        lat.append(&mut r.latencies);
    }
    // Per occupant: each must have received every measured message of its room.
    let short: Vec<u64> = results
        .iter()
        .map(|r| sent_room[r.room].0.saturating_sub(r.recv_measured))
        .filter(|&l| l > 0)
        .collect();
    let sum = |f: fn(&OccResult) -> u64| results.iter().map(f).sum::<u64>();
    let failed: Vec<&String> = results.iter().filter_map(|r| r.error.as_ref()).collect();
    let rate = measured as f64 / measured_s.max(1e-9);
    let (stat_ms, sched_ms) = cpu1.ms_since(&cpu0);
    let pct = |v: Option<f64>| v.map(|ms| (ms / 10.0 / measured_s * 10.0).round() / 10.0);
    let tool_ms = match (tool0, tool1) {
        (Some(a), Some(b)) => Some(stats::ms(b.saturating_sub(a))),
        _ => None,
    };
    merge(
        &mut res,
        json!({
            "deliveries_per_s": rate.round(),
            "msgs_per_s": (rate / n as f64 * 10.0).round() / 10.0,
            "peak_1s_deliveries_per_s": per_second.iter().copied().max().unwrap_or(0),
            "per_second": per_second,
            "delivered_measured_interval": measured,
            "measured_s": (measured_s * 1000.0).round() / 1000.0,
            "sent_measured": sent_room.iter().map(|s| s.0).sum::<u64>(),
            "expected_measured": expected_measured,
            "received_measured": sum(|r| r.recv_measured),
            "lost_measured": lost_measured,
            "sent_total": sent_room.iter().map(|s| s.1).sum::<u64>(),
            "expected_total": expected_total,
            "received_total": sum(|r| r.recv_total),
            "lost_total": lost_total,
            "occupants_short": short.len(),
            "max_lost_one_occupant": short.iter().copied().max().unwrap_or(0),
            "seq_gaps": sum(|r| r.seq_gaps),
            "seq_dups": sum(|r| r.seq_dups),
            "message_errors": sum(|r| r.msg_errors),
            "presences_during": sum(|r| r.presences_during),
            "presence_during_first": results.iter().find_map(|r| r.presence_during_first.clone()),
            "occupants_failed": failed.len(),
            "occupant_first_error": failed.first(),
            "drain_s": (drain_s * 1000.0).round() / 1000.0,
            "latency": latency_json(&mut lat),
            "server_cpu_ms": stat_ms,
            "server_cpu_sched_ms": sched_ms,
            "server_cpu_pct": pct(stat_ms),
            "server_cpu_sched_pct": pct(sched_ms),
            "tool_cpu_pct": pct(tool_ms),
            // Busy % of every CPU over the measured interval: with the server
            // on one CPU and the tool on another, busy minus theirs is what
            // other processes took.
            "cpu_busy_pct": stats::cpu_busy_pct(&ticks0, &ticks1),
            "loadavg_end": stats::loadavg(),
        }),
    );
    emit(&res, c.out.as_deref())?;
    eprintln!(
        "muc-fanout ({kind}): {:.0} deliveries/s ({:.1} msgs/s x {n}); lost {} of {} measured \
         (total {lost_total}), gaps {}, dups {}, errors {}; p50 {:.3} ms p99 {:.3} ms max {:.3} ms; \
         server CPU {}% (schedstat {}%), tool CPU {}%; failed {}; load {}",
        rate,
        rate / n as f64,
        lost_measured,
        expected_measured,
        res["seq_gaps"],
        res["seq_dups"],
        res["message_errors"],
        stats::ms(stats::pct(&lat, 50.0)),
        stats::ms(stats::pct(&lat, 99.0)),
        stats::ms(lat.last().copied().unwrap_or(0)),
        res["server_cpu_pct"],
        res["server_cpu_sched_pct"],
        res["tool_cpu_pct"],
        failed.len(),
        stats::loadavg()
    );
    if !failed.is_empty() {
        return Err(format!(
            "{} occupant(s) failed; first: {}",
            failed.len(),
            failed[0]
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes() {
        let p = b"<presence from='r1@c/n0' to='m1@b/r'><x xmlns='http://jabber.org/protocol/muc#user'>\
                  <item affiliation='owner' role='moderator'/><status code='110'/><status code=\"201\"/></x></presence>";
        assert!(has_status(p, b"110"));
        assert!(has_status(p, b"201"));
        assert!(!has_status(p, b"100"));
        assert!(!has_status(b"<presence from='r1@c/n0'/>", b"110"));
    }

    #[test]
    fn occupant_nicks() {
        let room = b"b1r1@conference.bench.test";
        assert_eq!(
            occupant_of(b"b1r1@conference.bench.test/n0", room, 100),
            Some(0)
        );
        assert_eq!(
            occupant_of(b"b1r1@conference.bench.test/n99", room, 100),
            Some(99)
        );
        assert_eq!(
            occupant_of(b"b1r1@conference.bench.test/n100", room, 100),
            None
        );
        assert_eq!(
            occupant_of(b"b1r1@conference.bench.test/n07", room, 100),
            None
        );
        assert_eq!(
            occupant_of(b"b1r1@conference.bench.test/x1", room, 100),
            None
        );
        assert_eq!(occupant_of(b"b1r1@conference.bench.test", room, 100), None);
        assert_eq!(
            occupant_of(b"b1r10@conference.bench.test/n1", room, 100),
            None
        );
    }

    #[test]
    fn bodies() {
        assert_eq!(parse_body(b"3 17 123456789"), Some((3, 17, 123456789)));
        assert_eq!(parse_body(b"3 17"), None);
        assert_eq!(parse_body(b"hello"), None);
        let mut out = Vec::new();
        push_groupchat(&mut out, "b1r1@conference.bench.test", 2, 5, 99);
        let el = out.as_slice();
        assert_eq!(xml::attr(el, b"type"), Some(&b"groupchat"[..]));
        let body = xml::child_text(el, b"<body>", b"</body>").unwrap();
        assert_eq!(parse_body(body), Some((2, 5, 99)));
    }

    #[test]
    fn periods() {
        // 5,000 deliveries/s in 1 room of 100 = 50 msgs/s; 10 senders -> 0.2 s each.
        assert_eq!(
            sender_period(5000.0, 1, 100, 10),
            Duration::from_millis(200)
        );
        // 10 rooms of 100: 5 msgs/s per room; 10 senders per room -> 2 s each.
        assert_eq!(sender_period(5000.0, 10, 100, 10), Duration::from_secs(2));
    }
}
