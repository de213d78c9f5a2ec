//! accounting: where did every message go, while a cluster node dies or its
//! Redis goes away?
//!
//! Pairs as in `latency` (over `--servers`, `--cross-node` or `--same-node`)
//! send at a fixed total rate for `--duration` seconds; message K of a pair
//! has id `mK` and body `K NANOS`. Senders enable XEP-0198 and ask for an
//! ack after every message, so that when a sender's own connection breaks
//! (its node was killed) it knows which of its messages the server took.
//! Whatever happens to the servers meanwhile (the operator or a script kills
//! a node, stops Redis...), every message ends up counted, per message, as
//! one of:
//!
//! - `delivered`: its receiver saw it on a live connection;
//! - `offline`: its receiver got it with `<delay/>` when it logged in again
//!   (XEP-0160): `--recover-wait` seconds after the sending stops, every
//!   receiver whose connection broke (all of them with `--relogin-all`) logs
//!   in again, to the first server of the list after its own that accepts
//!   it, and collects what arrives until `--offline-quiet` seconds pass
//!   without a message;
//! - `bounced`: an error with its id came back to the sender;
//! - `unconfirmed`: its sender's connection broke before the server
//!   acknowledged it (it may never have reached the server; a real client
//!   would resend it), and it was not found anywhere;
//! - `unaccounted`: none of the above: a message the server took and lost.
//!
//! `duplicated` counts messages the receiver saw more than once (live and
//! offline, or twice either way); `bounced_and_seen` those that came back as
//! errors and yet arrived.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use crate::modes::{base_json, login_json, login_spread, make_pairs, merge, require_all};
use crate::stats::{self, emit, now_ns};
use crate::xml::{self, Ev};
use crate::xmpp::{self, LoginCfg, Session};
use crate::AccountingArgs;

type Result<T> = std::result::Result<T, String>;

const SM_NS: &str = "urn:xmpp:sm:3";

/// Live counters for the progress lines.
#[derive(Default)]
struct Progress {
    sent: AtomicU64,
    delivered: AtomicU64,
    bounced: AtomicU64,
    senders_lost: AtomicU64,
    receivers_lost: AtomicU64,
}

/// What a sender knows at the end.
#[derive(Default, Debug)]
struct SenderOut {
    /// Messages sent: ids m1..m`sent`.
    sent: u64,
    /// When each was sent (tool clock, ns), index seq - 1.
    sent_ns: Vec<u64>,
    /// Sequence numbers that came back as `<message type='error'>`.
    bounced: Vec<u64>,
    /// Messages the server acknowledged (XEP-0198), when acks are on.
    acked: Option<u64>,
    /// Why the connection broke, if it did.
    lost: Option<String>,
    first_bounce: Option<String>,
}

/// Per-message counts on the receiving side (index seq - 1).
#[derive(Default, Debug, Clone)]
struct Seen {
    live: Vec<u32>,
    offline: Vec<u32>,
    /// Messages with a sequence number outside 1..=cap, or an unreadable body.
    foreign: u64,
}

impl Seen {
    fn new(cap: usize) -> Seen {
        Seen {
            live: vec![0; cap],
            offline: vec![0; cap],
            foreign: 0,
        }
    }

    /// Count one message stanza; returns whether it was one of ours.
    fn record(&mut self, el: &[u8]) -> bool {
        let Some(seq) = message_seq(el) else {
            self.foreign += 1;
            return false;
        };
        let offline = xml::contains(el, b"urn:xmpp:delay");
        let v = if offline {
            &mut self.offline
        } else {
            &mut self.live
        };
        match seq.checked_sub(1).and_then(|i| v.get_mut(i as usize)) {
            Some(n) => {
                *n = n.saturating_add(1);
                true
            }
            None => {
                self.foreign += 1;
                false
            }
        }
    }
}

/// The sequence number in a message's body `SEQ NANOS`, if it is one of ours.
fn message_seq(el: &[u8]) -> Option<u64> {
    let body = xml::child_text(el, b"<body>", b"</body>")?;
    let first = body.split(|&b| b == b' ').next()?;
    std::str::from_utf8(first).ok()?.parse().ok()
}

/// The sequence number in an id `mSEQ`.
fn id_seq(id: &[u8]) -> Option<u64> {
    std::str::from_utf8(id.strip_prefix(b"m")?)
        .ok()?
        .parse()
        .ok()
}

/// XEP-0198 `h` of an `<a/>`.
fn ack_h(el: &[u8]) -> Option<u64> {
    std::str::from_utf8(xml::attr(el, b"h")?).ok()?.parse().ok()
}

fn is_stanza(el: &[u8]) -> bool {
    matches!(xml::name(el), b"message" | b"presence" | b"iq")
}

/// Enable XEP-0198 (no resumption) on a logged-in session; false when the
/// server does not (`<failed/>`). Stanzas before `<enabled/>` are answered
/// (pings) and not counted.
async fn enable_sm(s: &mut Session, timeout: Duration) -> Result<bool> {
    s.send(format!("<enable xmlns='{SM_NS}'/>").as_bytes())
        .await?;
    let deadline = Instant::now() + timeout;
    loop {
        while let Some(ev) = s.poll_event()? {
            let Ev::Stanza(r) = ev else {
                if ev == Ev::Close {
                    return Err(s.err("enable: stream closed"));
                }
                continue;
            };
            let el = s.rbuf[r].to_vec();
            match xml::local_name(&el) {
                b"enabled" => {
                    s.compact();
                    return Ok(true);
                }
                b"failed" => {
                    s.compact();
                    return Ok(false);
                }
                _ if xml::name(&el) == b"stream:error" => {
                    return Err(format!("{}: stream error: {}", s.user, xml::snippet(&el)));
                }
                b"iq" => {
                    let t = xml::attr(&el, b"type");
                    if t == Some(b"get") || t == Some(b"set") {
                        let mut out = Vec::new();
                        xmpp::iq_reply(&el, &mut out);
                        s.send(&out).await?;
                    }
                }
                _ => {}
            }
        }
        s.compact();
        s.prepare_read();
        match tokio::time::timeout_at(deadline, s.stream.read_buf(&mut s.rbuf)).await {
            Err(_) => return Err(s.err("enable: no <enabled/> or <failed/> in time")),
            Ok(Ok(0)) => return Err(s.err("enable: connection closed by server")),
            Ok(Err(e)) => return Err(s.err(&format!("enable: read: {e}"))),
            Ok(Ok(_)) => {}
        }
    }
}

struct SenderCfg {
    to: String,
    period: Duration,
    first: Instant,
    end_ns: u64,
    sm: bool,
    enable_timeout: Duration,
}

async fn sender(
    mut s: Session,
    cfg: SenderCfg,
    mut stop: watch::Receiver<bool>,
    progress: Arc<Progress>,
) -> SenderOut {
    let mut o = SenderOut::default();
    if let Err(e) = sender_loop(&mut s, &cfg, &mut stop, &progress, &mut o).await {
        progress.senders_lost.fetch_add(1, Relaxed);
        o.lost = Some(e);
        return o;
    }
    let _ = s.send(b"</stream:stream>").await;
    o
}

async fn sender_loop(
    s: &mut Session,
    cfg: &SenderCfg,
    stop: &mut watch::Receiver<bool>,
    progress: &Progress,
    o: &mut SenderOut,
) -> Result<()> {
    let sm = cfg.sm && enable_sm(s, cfg.enable_timeout).await?;
    if sm {
        o.acked = Some(0);
    }
    // Stanzas sent since <enabled/> (what the server's h counts), and the
    // stanza index of each message (messages are sent in sequence order).
    let mut stanzas_out: u64 = 0;
    let mut stanzas_in: u64 = 0;
    let mut msg_index: Vec<u64> = Vec::new();
    let mut ticker = tokio::time::interval_at(cfg.first, cfg.period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut sending = true;
    let mut out = Vec::with_capacity(512);
    loop {
        if !out.is_empty() {
            s.send(&out).await?;
            out.clear();
        }
        s.prepare_read();
        tokio::select! {
            r = s.stream.read_buf(&mut s.rbuf) => {
                match r {
                    Ok(0) => return Err(s.err("sender: connection closed by server")),
                    Err(e) => return Err(s.err(&format!("sender: read: {e}"))),
                    Ok(_) => {}
                }
                while let Some(ev) = s.poll_event()? {
                    let Ev::Stanza(r) = ev else {
                        if ev == Ev::Close {
                            return Err(s.err("sender: server closed the stream"));
                        }
                        continue;
                    };
                    let el = &s.rbuf[r];
                    if is_stanza(el) {
                        stanzas_in += 1;
                    }
                    match xml::name(el) {
                        b"message" if xml::attr(el, b"type") == Some(b"error") => {
                            if let Some(seq) = xml::attr(el, b"id").and_then(id_seq) {
                                o.bounced.push(seq);
                                progress.bounced.fetch_add(1, Relaxed);
                            }
                            if o.first_bounce.is_none() {
                                let at = xml::find(el, b"<error").unwrap_or(0);
                                o.first_bounce = Some(xml::snippet(&el[at..]));
                            }
                        }
                        b"iq" => {
                            let t = xml::attr(el, b"type");
                            if t == Some(b"get") || t == Some(b"set") {
                                xmpp::iq_reply(el, &mut out);
                                stanzas_out += 1;
                            }
                        }
                        b"stream:error" => {
                            return Err(format!("{}: stream error: {}", s.user, xml::snippet(el)));
                        }
                        _ if sm && xml::local_name(el) == b"a" => {
                            if let Some(h) = ack_h(el) {
                                // Messages among the first h stanzas sent.
                                let acked = msg_index.partition_point(|&i| i < h) as u64;
                                o.acked = Some(o.acked.unwrap_or(0).max(acked));
                            }
                        }
                        _ if sm && xml::local_name(el) == b"r" => {
                            out.extend_from_slice(
                                format!("<a xmlns='{SM_NS}' h='{}'/>", stanzas_in % (1 << 32))
                                    .as_bytes(),
                            );
                        }
                        _ => {}
                    }
                }
                s.compact();
            }
            _ = ticker.tick(), if sending => {
                let ts = now_ns();
                if ts < cfg.end_ns {
                    o.sent += 1;
                    o.sent_ns.push(ts);
                    progress.sent.fetch_add(1, Relaxed);
                    let seq = o.sent;
                    use std::io::Write;
                    let _ = write!(
                        out,
                        "<message to='{}' type='chat' id='m{seq}'><body>{seq} {ts}</body></message>",
                        cfg.to
                    );
                    msg_index.push(stanzas_out);
                    stanzas_out += 1;
                } else {
                    sending = false;
                }
                if sm {
                    out.extend_from_slice(format!("<r xmlns='{SM_NS}'/>").as_bytes());
                }
            }
            _ = stop.changed() => return Ok(()),
        }
    }
}

struct ReceiverOut {
    seen: Seen,
    lost: Option<String>,
}

async fn receiver(
    mut s: Session,
    cap: usize,
    mut stop: watch::Receiver<bool>,
    progress: Arc<Progress>,
) -> ReceiverOut {
    let mut seen = Seen::new(cap);
    let lost = match receive_loop(&mut s, &mut seen, &mut stop, &progress, None).await {
        Ok(()) => {
            let _ = s.send(b"</stream:stream>").await;
            None
        }
        Err(e) => {
            progress.receivers_lost.fetch_add(1, Relaxed);
            Some(e)
        }
    };
    ReceiverOut { seen, lost }
}

/// Read messages into `seen` until `stop` changes (or, with `quiet`, until
/// that long passes without a message of ours, or the deadline).
async fn receive_loop(
    s: &mut Session,
    seen: &mut Seen,
    stop: &mut watch::Receiver<bool>,
    progress: &Progress,
    quiet: Option<(Duration, Instant)>,
) -> Result<()> {
    let mut replies = Vec::new();
    let mut last = Instant::now();
    loop {
        if !replies.is_empty() {
            s.send(&replies).await?;
            replies.clear();
        }
        let wake_at = match quiet {
            Some((q, deadline)) => (last + q).min(deadline),
            None => Instant::now() + Duration::from_secs(86400),
        };
        s.prepare_read();
        tokio::select! {
            r = s.stream.read_buf(&mut s.rbuf) => {
                match r {
                    Ok(0) => return Err(s.err("receiver: connection closed by server")),
                    Err(e) => return Err(s.err(&format!("receiver: read: {e}"))),
                    Ok(_) => {}
                }
                while let Some(ev) = s.poll_event()? {
                    let Ev::Stanza(r) = ev else {
                        if ev == Ev::Close {
                            return Err(s.err("receiver: server closed the stream"));
                        }
                        continue;
                    };
                    let el = &s.rbuf[r];
                    match xml::name(el) {
                        b"message"
                            if xml::attr(el, b"type") != Some(b"error")
                                && xml::contains(el, b"<body") =>
                        {
                            let ours = seen.record(el);
                            if ours {
                                last = Instant::now();
                                if quiet.is_none() {
                                    progress.delivered.fetch_add(1, Relaxed);
                                }
                            }
                        }
                        b"iq" => {
                            let t = xml::attr(el, b"type");
                            if t == Some(b"get") || t == Some(b"set") {
                                xmpp::iq_reply(el, &mut replies);
                            }
                        }
                        b"stream:error" => {
                            return Err(format!("{}: stream error: {}", s.user, xml::snippet(el)));
                        }
                        _ => {}
                    }
                }
                s.compact();
            }
            _ = stop.changed(), if quiet.is_none() => return Ok(()),
            _ = tokio::time::sleep_until(wake_at), if quiet.is_some() => return Ok(()),
        }
    }
}

/// Log `user` in again, to the first server after `node` (in list order,
/// wrapping, `node` itself last) that accepts it, and collect what arrives.
async fn relogin(
    user: String,
    node: usize,
    cfgs: Arc<Vec<LoginCfg>>,
    cap: usize,
    login_timeout: Duration,
    quiet: Duration,
    max: Duration,
) -> (std::result::Result<usize, String>, Seen) {
    let mut seen = Seen::new(cap);
    let n = cfgs.len();
    let mut errors = Vec::new();
    for k in 1..=n {
        let i = (node + k) % n;
        let s = match tokio::time::timeout(login_timeout, xmpp::login(&cfgs[i], &user)).await {
            Ok(Ok((s, _))) => s,
            Ok(Err(e)) => {
                errors.push(format!("server {i}: {e}"));
                continue;
            }
            Err(_) => {
                errors.push(format!("server {i}: {user}: login timed out"));
                continue;
            }
        };
        let mut s = s;
        let (_keep, mut never) = watch::channel(false);
        let progress = Progress::default();
        let deadline = Instant::now() + max;
        let r = receive_loop(
            &mut s,
            &mut seen,
            &mut never,
            &progress,
            Some((quiet, deadline)),
        )
        .await;
        let _ = s.send(b"</stream:stream>").await;
        return match r {
            Ok(()) => (Ok(i), seen),
            Err(e) => (Err(format!("server {i}: offline collection: {e}")), seen),
        };
    }
    (Err(errors.join("; ")), seen)
}

/// The per-message verdicts of one pair.
#[derive(Default, Debug, PartialEq, Eq, Clone, Copy)]
struct Tally {
    sent: u64,
    delivered: u64,
    offline: u64,
    bounced: u64,
    unconfirmed: u64,
    unaccounted: u64,
    duplicated: u64,
    bounced_and_seen: u64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.sent += o.sent;
        self.delivered += o.delivered;
        self.offline += o.offline;
        self.bounced += o.bounced;
        self.unconfirmed += o.unconfirmed;
        self.unaccounted += o.unaccounted;
        self.duplicated += o.duplicated;
        self.bounced_and_seen += o.bounced_and_seen;
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "sent": self.sent,
            "delivered": self.delivered,
            "offline": self.offline,
            "bounced": self.bounced,
            "unconfirmed": self.unconfirmed,
            "unaccounted": self.unaccounted,
            "duplicated": self.duplicated,
            "bounced_and_seen": self.bounced_and_seen,
        })
    }
}

/// Classify every message of one pair; `missing` gets the unaccounted
/// sequence numbers.
fn tally(s: &SenderOut, seen: &Seen, missing: &mut Vec<u64>) -> Tally {
    let mut bounced = s.bounced.clone();
    bounced.sort_unstable();
    let sender_broke = s.lost.is_some();
    let mut t = Tally {
        sent: s.sent,
        ..Tally::default()
    };
    for seq in 1..=s.sent {
        let i = (seq - 1) as usize;
        let live = seen.live.get(i).copied().unwrap_or(0);
        let off = seen.offline.get(i).copied().unwrap_or(0);
        let b = bounced.binary_search(&seq).is_ok();
        if live + off > 1 {
            t.duplicated += 1;
        }
        if b && live + off > 0 {
            t.bounced_and_seen += 1;
        }
        if live > 0 {
            t.delivered += 1;
        } else if off > 0 {
            t.offline += 1;
        } else if b {
            t.bounced += 1;
        } else if sender_broke && s.acked.is_some_and(|a| seq > a) {
            t.unconfirmed += 1;
        } else {
            t.unaccounted += 1;
            missing.push(seq);
        }
    }
    t
}

/// Runs of consecutive numbers in a sorted list, as (first, last).
fn ranges(seqs: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &s in seqs {
        match out.last_mut() {
            Some((_, b)) if *b + 1 == s => *b = s,
            _ => out.push((s, s)),
        }
    }
    out
}

fn progress_line(p: &Progress, t0: Instant) {
    eprintln!(
        "  {:5.1}s sent {} delivered {} bounced {}; senders lost {} receivers lost {}",
        t0.elapsed().as_secs_f64(),
        p.sent.load(Relaxed),
        p.delivered.load(Relaxed),
        p.bounced.load(Relaxed),
        p.senders_lost.load(Relaxed),
        p.receivers_lost.load(Relaxed),
    );
}

pub async fn accounting(a: AccountingArgs, nofile: Option<u64>) -> Result<()> {
    let c = &a.common;
    if a.rate.is_nan() || a.rate <= 0.0 || a.duration.is_nan() || a.duration <= 0.0 {
        return Err("--rate and --duration must be positive".into());
    }
    let pairing = a.pairing.pairing();
    let mut res = base_json("accounting", c, nofile);
    let cfgs = c.login_cfgs(true).await?;
    let nodes = cfgs.len();
    let pairs = make_pairs(c.users, nodes, pairing)?;
    let np = pairs.len();
    let period = Duration::from_secs_f64(np as f64 / a.rate);
    // Messages per pair, with room for timer jitter.
    let cap = (a.duration / period.as_secs_f64()).ceil() as usize + 4;
    merge(
        &mut res,
        json!({
            "pairs_mode": pairing.name(),
            "pairs": np,
            "rate": a.rate,
            "duration_s": a.duration,
            "recover_wait_s": a.recover_wait,
            "relogin_all": a.relogin_all,
            "sm_acks": !a.no_sm,
        }),
    );
    eprintln!(
        "accounting: {np} pairs ({}) over {}, {} msg/s for {}s, then {}s until the receivers log in again",
        pairing.name(),
        c.server_list().join(","),
        a.rate,
        a.duration,
        a.recover_wait
    );
    let names = pairs
        .iter()
        .flat_map(|&(s, r)| [s, r])
        .map(|k| (c.user(k), c.node_of(k)))
        .collect();
    let l = login_spread(c, c.login_cfgs(true).await?, names, true).await;
    merge(&mut res, login_json(&l));
    require_all(&l)?;

    let progress = Arc::new(Progress::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let t0 = Instant::now() + Duration::from_secs(2);
    let start_ns = now_ns() + 2_000_000_000;
    let end_ns = start_ns + (a.duration * 1e9) as u64;
    let mut senders = JoinSet::new();
    let mut receivers = JoinSet::new();
    let mut sessions = l.sessions.into_iter();
    for (i, &(_, rk)) in pairs.iter().enumerate() {
        let (Some(Some(snd)), Some(Some(rcv))) = (sessions.next(), sessions.next()) else {
            return Err("internal: missing session".into());
        };
        let cfg = SenderCfg {
            to: format!("{}@{}/{}", c.user(rk), c.domain, c.resource),
            period,
            first: t0 + period.mul_f64(i as f64 / np as f64),
            end_ns,
            sm: !a.no_sm,
            enable_timeout: c.login_timeout(),
        };
        let (p1, p2) = (progress.clone(), progress.clone());
        let (stop1, stop2) = (stop_rx.clone(), stop_rx.clone());
        senders.spawn(async move { (i, sender(snd, cfg, stop1, p1).await) });
        receivers.spawn(async move { (i, receiver(rcv, cap, stop2, p2).await) });
    }

    // Sending, then the wait for recovery, with a progress line a second.
    let live_end = t0 + Duration::from_secs_f64(a.duration + a.recover_wait);
    let mut next = Instant::now() + Duration::from_secs(1);
    while next < live_end {
        tokio::time::sleep_until(next).await;
        progress_line(&progress, t0);
        next += Duration::from_secs(1);
    }
    tokio::time::sleep_until(live_end).await;
    let _ = stop_tx.send(true);
    let mut sent_out: Vec<SenderOut> = (0..np).map(|_| SenderOut::default()).collect();
    let mut recv_out: Vec<Option<ReceiverOut>> = (0..np).map(|_| None).collect();
    while let Some(j) = senders.join_next().await {
        if let Ok((i, o)) = j {
            sent_out[i] = o;
        }
    }
    while let Some(j) = receivers.join_next().await {
        if let Ok((i, o)) = j {
            recv_out[i] = Some(o);
        }
    }
    progress_line(&progress, t0);

    // Receivers log in again and collect their offline messages.
    let cfgs = Arc::new(cfgs);
    let mut seen: Vec<Seen> = Vec::with_capacity(np);
    let mut to_relogin = Vec::new();
    let mut receivers_lost = 0u64;
    let mut receiver_first_loss = None;
    for (i, r) in recv_out.into_iter().enumerate() {
        let (sn, lost) = match r {
            Some(r) => (r.seen, r.lost),
            None => (Seen::new(cap), Some("receiver task failed".into())),
        };
        if let Some(e) = &lost {
            receivers_lost += 1;
            receiver_first_loss.get_or_insert(e.clone());
        }
        if lost.is_some() || a.relogin_all {
            to_relogin.push(i);
        }
        seen.push(sn);
    }
    eprintln!("  {} receivers log in again", to_relogin.len());
    let quiet = Duration::from_secs_f64(a.offline_quiet.max(0.01));
    let max = Duration::from_secs_f64(a.offline_timeout.max(0.01));
    let mut set = JoinSet::new();
    let mut queue = to_relogin.into_iter();
    let (mut relogins_ok, mut relogins_failed) = (0u64, 0u64);
    let mut relogin_first_error = None;
    let mut relogin_servers = vec![0u64; nodes];
    loop {
        while set.len() < c.concurrency.max(1) {
            let Some(i) = queue.next() else { break };
            let rk = pairs[i].1;
            let (user, node, cfgs) = (c.user(rk), c.node_of(rk), cfgs.clone());
            let timeout = c.login_timeout();
            set.spawn(
                async move { (i, relogin(user, node, cfgs, cap, timeout, quiet, max).await) },
            );
        }
        let Some(j) = set.join_next().await else {
            break;
        };
        let Ok((i, (r, got))) = j else {
            relogins_failed += 1;
            continue;
        };
        match r {
            Ok(server) => {
                relogins_ok += 1;
                relogin_servers[server] += 1;
            }
            Err(e) => {
                relogins_failed += 1;
                relogin_first_error.get_or_insert(e);
            }
        }
        let s = &mut seen[i];
        for (a, b) in s.live.iter_mut().zip(&got.live) {
            *a = a.saturating_add(*b);
        }
        for (a, b) in s.offline.iter_mut().zip(&got.offline) {
            *a = a.saturating_add(*b);
        }
        s.foreign += got.foreign;
    }

    // Every message of every pair.
    let mut total = Tally::default();
    let mut by_node = vec![Tally::default(); nodes];
    let mut missing_sample = Vec::new();
    let mut senders_lost = 0u64;
    let mut sender_first_loss = None;
    let mut first_bounce = None;
    let mut foreign = 0u64;
    for (i, (s, sn)) in sent_out.iter().zip(&seen).enumerate() {
        let mut missing = Vec::new();
        let t = tally(s, sn, &mut missing);
        total.add(&t);
        by_node[c.node_of(pairs[i].1)].add(&t);
        foreign += sn.foreign;
        if let Some(e) = &s.lost {
            senders_lost += 1;
            sender_first_loss.get_or_insert(e.clone());
        }
        if first_bounce.is_none() {
            first_bounce.clone_from(&s.first_bounce);
        }
        for (a, b) in ranges(&missing) {
            if missing_sample.len() < 20 {
                let at = |q: u64| {
                    s.sent_ns
                        .get((q - 1) as usize)
                        .map(|t| t.saturating_sub(start_ns) as f64 / 1e9)
                        .unwrap_or(0.0)
                };
                let span = if a == b {
                    format!("m{a} (sent at {:.2}s)", at(a))
                } else {
                    format!("m{a}-m{b} (sent {:.2}-{:.2}s)", at(a), at(b))
                };
                missing_sample.push(format!(
                    "{}->{} {span}",
                    c.user(pairs[i].0),
                    c.user(pairs[i].1)
                ));
            }
        }
    }
    merge(&mut res, total.json());
    merge(
        &mut res,
        json!({
            "by_receiver_server": by_node.iter().map(Tally::json).collect::<Vec<_>>(),
            // Runs of unaccounted messages per pair (the first 20 runs).
            "unaccounted_sample": missing_sample,
            "foreign_messages": foreign,
            "senders_lost": senders_lost,
            "sender_first_loss": sender_first_loss,
            "receivers_lost": receivers_lost,
            "receiver_first_loss": receiver_first_loss,
            "relogins_ok": relogins_ok,
            "relogins_failed": relogins_failed,
            "relogin_first_error": relogin_first_error,
            "relogins_by_server": relogin_servers,
            "bounce_first_error": first_bounce,
            "loadavg_end": stats::loadavg(),
        }),
    );
    emit(&res, c.out.as_deref())?;
    eprintln!(
        "accounting: sent {} = delivered {} + offline {} + bounced {} + unconfirmed {} + unaccounted {}; \
         duplicated {}, bounced and seen {}; senders lost {senders_lost}, receivers lost {receivers_lost}, \
         relogins {relogins_ok} ok / {relogins_failed} failed",
        total.sent,
        total.delivered,
        total.offline,
        total.bounced,
        total.unconfirmed,
        total.unaccounted,
        total.duplicated,
        total.bounced_and_seen,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_parsing() {
        assert_eq!(
            message_seq(b"<message id='m3'><body>3 12345</body></message>"),
            Some(3)
        );
        assert_eq!(message_seq(b"<message><body>x y</body></message>"), None);
        assert_eq!(message_seq(b"<message/>"), None);
        assert_eq!(id_seq(b"m17"), Some(17));
        assert_eq!(id_seq(b"17"), None);
        assert_eq!(id_seq(b"m"), None);
        assert_eq!(ack_h(b"<a xmlns='urn:xmpp:sm:3' h='42'/>"), Some(42));
        assert_eq!(ack_h(b"<a xmlns='urn:xmpp:sm:3' h='-1'/>"), None);
    }

    #[test]
    fn runs_of_numbers() {
        assert_eq!(ranges(&[]), vec![]);
        assert_eq!(ranges(&[3]), vec![(3, 3)]);
        assert_eq!(ranges(&[1, 2, 3, 7, 9, 10]), vec![(1, 3), (7, 7), (9, 10)]);
    }

    #[test]
    fn seen_counts_live_and_offline() {
        let mut s = Seen::new(3);
        assert!(s.record(b"<message><body>1 5</body></message>"));
        assert!(s.record(
            b"<message><body>2 5</body><delay xmlns='urn:xmpp:delay' stamp='x'/></message>"
        ));
        assert!(!s.record(b"<message><body>4 5</body></message>"));
        assert!(!s.record(b"<message><body>0 5</body></message>"));
        assert!(!s.record(b"<message><body>zz</body></message>"));
        assert_eq!(s.live, vec![1, 0, 0]);
        assert_eq!(s.offline, vec![0, 1, 0]);
        assert_eq!(s.foreign, 3);
    }

    #[test]
    fn every_message_gets_one_verdict() {
        // 6 messages: 1 live, 2 offline, 3 bounced, 4 live twice, 5 and 6 lost.
        let mut seen = Seen::new(10);
        seen.live[0] = 1;
        seen.offline[1] = 1;
        seen.live[3] = 2;
        let s = SenderOut {
            sent: 6,
            bounced: vec![3],
            acked: Some(5),
            ..SenderOut::default()
        };
        let mut missing = Vec::new();
        let t = tally(&s, &seen, &mut missing);
        assert_eq!(
            t,
            Tally {
                sent: 6,
                delivered: 2,
                offline: 1,
                bounced: 1,
                unconfirmed: 0,
                unaccounted: 2,
                duplicated: 1,
                bounced_and_seen: 0,
            }
        );
        assert_eq!(missing, vec![5, 6]);
        // The same sender's connection broke with 5 acknowledged: 6 is
        // unconfirmed, 5 is still lost by the server.
        let s = SenderOut {
            lost: Some("gone".into()),
            ..s
        };
        missing.clear();
        let t = tally(&s, &seen, &mut missing);
        assert_eq!((t.unconfirmed, t.unaccounted), (1, 1));
        assert_eq!(missing, vec![5]);
    }
}
