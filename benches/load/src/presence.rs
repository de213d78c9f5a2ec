//! presence-login: what one login of a user with a large roster costs the
//! server in presence traffic.
//!
//! Setup (protocol only, so it runs the same on every server): the contacts
//! log in and send initial presence and stay online; the subject and every
//! contact become mutually subscribed ('both') unless the subject's roster
//! already says so; the subject logs out.
//!
//! Each measured run: the subject logs in (not timed) and fetches its roster
//! as a client does, then sends initial presence at T0. Measured from T0: the
//! time until every contact has the subject's available presence (the
//! broadcast), the time until the subject has every contact's presence (the
//! answers to the server's probes), the stanzas and bytes the server sent to
//! the subject and to the contacts until nothing more arrives for `--quiet`
//! seconds, and the server's CPU time. Then the subject sends unavailable
//! presence and the time until every contact has it is measured the same way.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::modes::{base_json, login_json, login_named, merge, require_all};
use crate::stats::{self, emit, now_ns, CpuSample};
use crate::xml::{self, Ev};
use crate::xmpp::{self, LoginCfg, Session};
use crate::PresenceArgs;

type Result<T> = std::result::Result<T, String>;

/// How often the coordinator looks at the clock when nothing arrives.
const TICK: Duration = Duration::from_millis(10);

// ---------------------------------------------------------------- parsing

/// Bare part of a JID (before the first '/').
fn bare(jid: &[u8]) -> &[u8] {
    match jid.iter().position(|&b| b == b'/') {
        Some(i) => &jid[..i],
        None => jid,
    }
}

/// The benchmark's JIDs: the subject and contacts PREFIX1..PREFIXn.
#[derive(Clone, Debug)]
struct Names {
    subject_bare: String,
    prefix: String,
    domain: String,
    n: usize,
}

impl Names {
    /// Index (1..=n) of the contact this bare or full JID belongs to.
    fn contact(&self, jid: &[u8]) -> Option<usize> {
        let b = bare(jid);
        let at = b.iter().position(|&x| x == b'@')?;
        if &b[at + 1..] != self.domain.as_bytes() {
            return None;
        }
        let num = b[..at].strip_prefix(self.prefix.as_bytes())?;
        if num.is_empty() || num[0] == b'0' || !num.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let i: usize = std::str::from_utf8(num).ok()?.parse().ok()?;
        (1..=self.n).contains(&i).then_some(i)
    }

    fn is_subject(&self, jid: &[u8]) -> bool {
        bare(jid) == self.subject_bare.as_bytes()
    }

    fn contact_bare(&self, i: usize) -> String {
        format!("{}{i}@{}", self.prefix, self.domain)
    }
}

/// What a received stanza is, as far as the counters care.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    /// Available presence (no type) from contact i.
    ContactAvailable(usize),
    /// Available presence from the subject (to a contact, or its own echo).
    SubjectAvailable,
    /// Unavailable presence from the subject.
    SubjectUnavailable,
    /// A stream error.
    StreamError,
    /// Anything else.
    Other,
}

fn classify(el: &[u8], names: &Names) -> Kind {
    match xml::name(el) {
        b"presence" => {
            let Some(from) = xml::attr(el, b"from") else {
                return Kind::Other;
            };
            let ty = xml::attr(el, b"type");
            if names.is_subject(from) {
                return match ty {
                    None => Kind::SubjectAvailable,
                    Some(b"unavailable") => Kind::SubjectUnavailable,
                    Some(_) => Kind::Other,
                };
            }
            match (ty, names.contact(from)) {
                (None, Some(i)) => Kind::ContactAvailable(i),
                _ => Kind::Other,
            }
        }
        b"stream:error" => Kind::StreamError,
        _ => Kind::Other,
    }
}

/// Short label of a stanza for the "other" tallies: name and type.
fn label(el: &[u8]) -> String {
    let name = String::from_utf8_lossy(xml::name(el));
    match xml::attr(el, b"type") {
        Some(t) => format!("{name}/{}", String::from_utf8_lossy(t)),
        None => name.into_owned(),
    }
}

/// What a benchmark client answers by itself: iq get/set (pings and roster
/// pushes acknowledged, the rest refused) and subscription requests (approved).
fn auto_reply(el: &[u8], out: &mut Vec<u8>) {
    match xml::name(el) {
        b"iq" => {
            let t = xml::attr(el, b"type");
            if t == Some(b"get") || t == Some(b"set") {
                xmpp::iq_reply(el, out);
            }
        }
        b"presence" if xml::attr(el, b"type") == Some(b"subscribe") => {
            if let Some(from) = xml::attr(el, b"from") {
                out.extend_from_slice(b"<presence type='subscribed' to='");
                out.extend_from_slice(bare(from));
                out.extend_from_slice(b"'/>");
            }
        }
        _ => {}
    }
}

/// A roster item: jid, subscription ("none" when absent), ask.
type Item<'a> = (&'a [u8], &'a [u8], Option<&'a [u8]>);

/// Items of a roster result.
fn roster_items(el: &[u8]) -> Vec<Item<'_>> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = xml::find(&el[from..], b"<item") {
        let at = from + i;
        from = at + 5;
        match el.get(from) {
            Some(b) if b.is_ascii_whitespace() || *b == b'/' || *b == b'>' => {}
            _ => continue, // <items ...> or similar
        }
        let item = &el[at..];
        if let Some(jid) = xml::attr(item, b"jid") {
            out.push((
                jid,
                xml::attr(item, b"subscription").unwrap_or(b"none"),
                xml::attr(item, b"ask"),
            ));
        }
    }
    out
}

/// A roster as the benchmark sees it.
#[derive(Debug, Default, PartialEq, Eq)]
struct RosterState {
    items: usize,
    /// Contacts (by index) with subscription 'both'; index 0 unused.
    both: Vec<bool>,
    /// Each contact's item as "subscription[+ask]", "absent" if none.
    state: Vec<String>,
}

impl RosterState {
    fn parse(el: &[u8], names: &Names) -> Self {
        let items = roster_items(el);
        let mut both = vec![false; names.n + 1];
        let mut state = vec!["absent".to_string(); names.n + 1];
        for (jid, sub, ask) in &items {
            let Some(i) = names.contact(jid) else {
                continue;
            };
            both[i] = *sub == b"both";
            state[i] = fmt_state(sub, *ask);
        }
        RosterState {
            items: items.len(),
            both,
            state,
        }
    }

    fn both_count(&self) -> usize {
        self.both.iter().filter(|&&b| b).count()
    }

    fn missing(&self) -> Vec<usize> {
        (1..self.both.len()).filter(|&i| !self.both[i]).collect()
    }
}

/// The roster item for `jid` (bare) in a roster result, as "subscription[+ask=…]",
/// or "absent".
fn item_state(el: &[u8], jid: &str) -> String {
    match roster_items(el)
        .into_iter()
        .find(|(j, _, _)| *j == jid.as_bytes())
    {
        Some((_, sub, ask)) => fmt_state(sub, ask),
        None => "absent".into(),
    }
}

fn fmt_state(sub: &[u8], ask: Option<&[u8]>) -> String {
    let sub = String::from_utf8_lossy(sub);
    match ask {
        Some(ask) => format!("{sub}+ask={}", String::from_utf8_lossy(ask)),
        None => sub.into_owned(),
    }
}

// ---------------------------------------------------------------- contacts

/// What the contacts' tasks share with the coordinator.
#[derive(Default)]
struct ContactShared {
    stanzas: AtomicU64,
    bytes: AtomicU64,
    /// now_ns() of the last stanza any contact received.
    last_rx_ns: AtomicU64,
    failed: AtomicUsize,
    first_error: Mutex<Option<String>>,
}

impl ContactShared {
    fn totals(&self) -> (u64, u64) {
        (self.stanzas.load(Relaxed), self.bytes.load(Relaxed))
    }

    fn check(&self) -> Result<()> {
        let failed = self.failed.load(Relaxed);
        if failed == 0 {
            return Ok(());
        }
        let first = self
            .first_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_default();
        Err(format!(
            "{failed} contact session(s) failed; first: {first}"
        ))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    Available,
    Unavailable,
}

/// A contact received the subject's presence.
/// What a contact's task tells the coordinator.
enum Report {
    Seen(SeenEv),
    /// The contact's roster item for the subject, as "subscription[+ask]".
    Roster {
        idx: usize,
        state: String,
    },
}

/// Id of the roster get a contact sends when told to check its side.
const CONTACT_ROSTER_ID: &[u8] = b"cr";

struct SeenEv {
    idx: usize,
    what: Seen,
    t_ns: u64,
}

enum ContactWake {
    Read(std::io::Result<usize>),
    Send(Vec<u8>),
    Stop,
}

/// Keep a contact's stream read: count what arrives, report the subject's
/// presences, answer iqs and subscription requests, send what it is told to.
async fn contact_loop(
    s: &mut Session,
    idx: usize,
    names: &Names,
    shared: &ContactShared,
    cmd: &mut mpsc::UnboundedReceiver<Vec<u8>>,
    seen: &mpsc::UnboundedSender<Report>,
    stop: &mut watch::Receiver<bool>,
) -> Result<()> {
    let mut replies = Vec::new();
    loop {
        s.prepare_read();
        let wake = tokio::select! {
            r = s.stream.read_buf(&mut s.rbuf) => ContactWake::Read(r),
            Some(d) = cmd.recv() => ContactWake::Send(d),
            _ = stop.changed() => ContactWake::Stop,
        };
        match wake {
            ContactWake::Read(r) => {
                match r {
                    Ok(0) => return Err(s.err("connection closed by server")),
                    Err(e) => return Err(s.err(&format!("read: {e}"))),
                    Ok(_) => {}
                }
                let now = now_ns();
                let (mut count, mut bytes) = (0u64, 0u64);
                while let Some(ev) = s.poll_event()? {
                    let r = match ev {
                        Ev::Stanza(r) => r,
                        Ev::Open => continue,
                        Ev::Close => return Err(s.err("server closed the stream")),
                    };
                    let el = &s.rbuf[r];
                    count += 1;
                    bytes += el.len() as u64;
                    let what = match classify(el, names) {
                        Kind::SubjectAvailable => Some(Seen::Available),
                        Kind::SubjectUnavailable => Some(Seen::Unavailable),
                        Kind::StreamError => {
                            return Err(format!("{}: stream error: {}", s.user, xml::snippet(el)))
                        }
                        _ => None,
                    };
                    if let Some(what) = what {
                        let _ = seen.send(Report::Seen(SeenEv {
                            idx,
                            what,
                            t_ns: now,
                        }));
                    }
                    if xml::name(el) == b"iq"
                        && xml::attr(el, b"id") == Some(CONTACT_ROSTER_ID)
                        && xml::attr(el, b"type") == Some(b"result")
                    {
                        let state = item_state(el, &names.subject_bare);
                        let _ = seen.send(Report::Roster { idx, state });
                    }
                    auto_reply(el, &mut replies);
                }
                s.compact();
                if count > 0 {
                    shared.stanzas.fetch_add(count, Relaxed);
                    shared.bytes.fetch_add(bytes, Relaxed);
                    shared.last_rx_ns.fetch_max(now, Relaxed);
                }
                if !replies.is_empty() {
                    s.send(&replies).await?;
                    replies.clear();
                }
                s.rbuf.shrink_to(4096);
            }
            ContactWake::Send(d) => s.send(&d).await?,
            ContactWake::Stop => {
                let _ = s.send(b"</stream:stream>").await;
                return Ok(());
            }
        }
    }
}

// ---------------------------------------------------------------- the subject

enum Wake {
    Subject(std::io::Result<usize>),
    Report(Report),
    Tick,
}

/// Wait for bytes on the subject's stream, a contact's report, or a tick.
async fn next_wake(s: &mut Session, seen: &mut mpsc::UnboundedReceiver<Report>) -> Wake {
    s.prepare_read();
    tokio::select! {
        r = s.stream.read_buf(&mut s.rbuf) => Wake::Subject(r),
        Some(r) = seen.recv() => Wake::Report(r),
        _ = tokio::time::sleep(TICK) => Wake::Tick,
    }
}

fn read_ok(s: &Session, r: std::io::Result<usize>) -> Result<()> {
    match r {
        Ok(0) => Err(s.err("connection closed by server")),
        Err(e) => Err(s.err(&format!("read: {e}"))),
        Ok(_) => Ok(()),
    }
}

/// Hand every complete stanza in the subject's buffer to `f`, then send the
/// automatic replies.
async fn subject_stanzas(s: &mut Session, mut f: impl FnMut(&[u8])) -> Result<()> {
    let mut replies = Vec::new();
    while let Some(ev) = s.poll_event()? {
        let r = match ev {
            Ev::Stanza(r) => r,
            Ev::Open => continue,
            Ev::Close => return Err(s.err("server closed the stream")),
        };
        let el = &s.rbuf[r];
        if xml::name(el) == b"stream:error" {
            return Err(format!("{}: stream error: {}", s.user, xml::snippet(el)));
        }
        f(el);
        auto_reply(el, &mut replies);
    }
    s.compact();
    if !replies.is_empty() {
        s.send(&replies).await?;
    }
    Ok(())
}

/// Ask for the roster (iq id `id`) and wait for it, answering anything else.
async fn fetch_roster(
    s: &mut Session,
    id: &str,
    names: &Names,
    timeout: Duration,
) -> Result<RosterState> {
    let q = format!("<iq type='get' id='{id}'><query xmlns='jabber:iq:roster'/></iq>");
    s.send(q.as_bytes()).await?;
    let deadline = Instant::now() + timeout;
    loop {
        let mut got: Option<Result<RosterState>> = None;
        subject_stanzas(s, |el| {
            if got.is_none()
                && xml::name(el) == b"iq"
                && xml::attr(el, b"id") == Some(id.as_bytes())
            {
                got = Some(if xml::attr(el, b"type") == Some(b"result") {
                    Ok(RosterState::parse(el, names))
                } else {
                    Err(format!("roster get failed: {}", xml::snippet(el)))
                });
            }
        })
        .await?;
        if let Some(r) = got {
            return r;
        }
        let r = tokio::time::timeout_at(deadline, s.read_more())
            .await
            .map_err(|_| format!("{}: no roster result after {timeout:?}", s.user))?;
        r?;
    }
}

/// Close the stream and wait (briefly) for the server to close its side, so
/// that the session is gone before the next login.
async fn close_session(mut s: Session) {
    let _ = s.send(b"</stream:stream>").await;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.poll_event() {
                Ok(Some(Ev::Close)) | Err(_) => return,
                Ok(Some(_)) => continue,
                Ok(None) => {}
            }
            s.compact();
            if s.read_more().await.is_err() {
                return;
            }
        }
    })
    .await;
}

/// Everything a run needs.
struct Ctx {
    names: Names,
    subject: String,
    cfg: LoginCfg,
    login_timeout: Duration,
    pid: Option<u32>,
    quiet_ns: u64,
    phase_timeout: Duration,
    shared: Arc<ContactShared>,
}

/// Stanzas the subject received during a phase.
#[derive(Default)]
struct SubjectCounts {
    stanzas: u64,
    bytes: u64,
    contact_presences: u64,
    own_presences: u64,
    other: BTreeMap<String, u64>,
}

impl SubjectCounts {
    fn add(&mut self, el: &[u8], kind: &Kind) {
        self.stanzas += 1;
        self.bytes += el.len() as u64;
        match kind {
            Kind::ContactAvailable(_) => self.contact_presences += 1,
            Kind::SubjectAvailable | Kind::SubjectUnavailable => self.own_presences += 1,
            _ => *self.other.entry(label(el)).or_default() += 1,
        }
    }
}

/// One phase after the subject's presence at `t0`: wait until every contact
/// has seen `want` from the subject (and, with `probes`, the subject has every
/// contact's presence), then until nothing arrives for the quiet time.
struct PhaseOut {
    /// Contacts that saw the subject's presence, and when the last one did (ns after t0).
    seen: usize,
    t_seen: Option<u64>,
    /// Contacts whose presence the subject got, and when the last one came.
    probes: usize,
    t_probes: Option<u64>,
    /// When both targets were met (ns after t0) and the CPU reading then.
    t_done: Option<u64>,
    cpu_done: Option<CpuSample>,
    subject: SubjectCounts,
    timed_out: bool,
    /// Contacts still missing at the end (first few), for the diagnosis of a timeout.
    seen_missing: Vec<usize>,
    probes_missing: Vec<usize>,
}

async fn phase(
    ctx: &Ctx,
    s: &mut Session,
    seen_rx: &mut mpsc::UnboundedReceiver<Report>,
    t0: u64,
    want: Seen,
    probes: bool,
) -> Result<PhaseOut> {
    let n = ctx.names.n;
    let mut got_seen = vec![false; n + 1];
    let mut got_probe = vec![false; n + 1];
    let mut out = PhaseOut {
        seen: 0,
        t_seen: None,
        probes: 0,
        t_probes: None,
        t_done: None,
        cpu_done: None,
        subject: SubjectCounts::default(),
        timed_out: false,
        seen_missing: Vec::new(),
        probes_missing: Vec::new(),
    };
    let mut last_subject_rx = t0;
    let deadline = Instant::now() + ctx.phase_timeout;
    loop {
        let done = out.seen == n && (!probes || out.probes == n);
        if done && out.cpu_done.is_none() {
            out.cpu_done = Some(CpuSample::read(ctx.pid));
            out.t_done = Some(now_ns().saturating_sub(t0));
        }
        let last = last_subject_rx.max(ctx.shared.last_rx_ns.load(Relaxed));
        if done && now_ns().saturating_sub(last) >= ctx.quiet_ns {
            return Ok(out);
        }
        if Instant::now() >= deadline {
            out.timed_out = true;
            let missing = |got: &[bool]| (1..=n).filter(|&i| !got[i]).take(20).collect();
            out.seen_missing = missing(&got_seen);
            if probes {
                out.probes_missing = missing(&got_probe);
            }
            return Ok(out);
        }
        match next_wake(s, seen_rx).await {
            Wake::Subject(r) => {
                read_ok(s, r)?;
                let now = now_ns();
                last_subject_rx = now;
                let names = &ctx.names;
                subject_stanzas(s, |el| {
                    let kind = classify(el, names);
                    if let (true, Kind::ContactAvailable(i)) = (probes, &kind) {
                        if !got_probe[*i] {
                            got_probe[*i] = true;
                            out.probes += 1;
                            if out.probes == n {
                                out.t_probes = Some(now.saturating_sub(t0));
                            }
                        }
                    }
                    out.subject.add(el, &kind);
                })
                .await?;
            }
            Wake::Report(Report::Roster { .. }) => {}
            Wake::Report(Report::Seen(ev)) => {
                if ev.what == want && !got_seen[ev.idx] {
                    got_seen[ev.idx] = true;
                    out.seen += 1;
                    if out.seen == n {
                        out.t_seen = Some(ev.t_ns.saturating_sub(t0));
                    }
                }
            }
            Wake::Tick => ctx.shared.check()?,
        }
    }
}

fn ms_opt(ns: Option<u64>) -> Option<f64> {
    ns.map(stats::ms)
}

/// One measured login and logout of the subject.
async fn measure_run(
    ctx: &Ctx,
    run: usize,
    seen_rx: &mut mpsc::UnboundedReceiver<Report>,
) -> Result<serde_json::Value> {
    let cpu_login = CpuSample::read(ctx.pid);
    let (mut s, login_dt) =
        tokio::time::timeout(ctx.login_timeout, xmpp::login(&ctx.cfg, &ctx.subject))
            .await
            .map_err(|_| format!("{}: login timed out", ctx.subject))??;
    let t_r = Instant::now();
    let roster = fetch_roster(&mut s, "roster", &ctx.names, ctx.phase_timeout).await?;
    let roster_dt = t_r.elapsed();
    if roster.both_count() != ctx.names.n {
        return Err(format!(
            "{}'s roster has {} contacts with subscription 'both', expected {} (setup lost?)",
            ctx.subject,
            roster.both_count(),
            ctx.names.n
        ));
    }

    // Available.
    while seen_rx.try_recv().is_ok() {}
    let (c_stz0, c_bytes0) = ctx.shared.totals();
    let cpu0 = CpuSample::read(ctx.pid);
    let t0 = now_ns();
    s.send(b"<presence/>").await?;
    let av = phase(ctx, &mut s, seen_rx, t0, Seen::Available, true).await?;
    let cpu1 = CpuSample::read(ctx.pid);
    let t_quiet = now_ns().saturating_sub(t0);
    let (c_stz1, c_bytes1) = ctx.shared.totals();

    // Unavailable.
    let cpu2 = CpuSample::read(ctx.pid);
    let t1 = now_ns();
    s.send(b"<presence type='unavailable'/>").await?;
    let un = phase(ctx, &mut s, seen_rx, t1, Seen::Unavailable, false).await?;
    let cpu3 = CpuSample::read(ctx.pid);
    let (c_stz2, c_bytes2) = ctx.shared.totals();
    close_session(s).await;

    let (cpu_login_ms, cpu_login_sched_ms) = cpu0.ms_since(&cpu_login);
    let (cpu_pres_ms, cpu_pres_sched_ms) = cpu1.ms_since(&cpu0);
    let (cpu_done_ms, cpu_done_sched_ms) = match &av.cpu_done {
        Some(c) => c.ms_since(&cpu0),
        None => (None, None),
    };
    let (cpu_un_ms, cpu_un_sched_ms) = cpu3.ms_since(&cpu2);
    Ok(json!({
        "run": run,
        "subject_login_ms": stats::ms(login_dt.as_nanos() as u64),
        "roster_ms": stats::ms(roster_dt.as_nanos() as u64),
        "roster_items": roster.items,
        "roster_both": roster.both_count(),
        "t_broadcast_ms": ms_opt(av.t_seen),
        "t_probes_ms": ms_opt(av.t_probes),
        "t_done_ms": ms_opt(av.t_done),
        "t_quiescent_ms": stats::ms(t_quiet),
        "broadcast_received": av.seen,
        "probes_received": av.probes,
        "stanzas_to_subject": av.subject.stanzas,
        "bytes_to_subject": av.subject.bytes,
        "subject_presences_from_contacts": av.subject.contact_presences,
        "subject_own_presences": av.subject.own_presences,
        "subject_other_stanzas": av.subject.other,
        "stanzas_to_contacts": c_stz1 - c_stz0,
        "bytes_to_contacts": c_bytes1 - c_bytes0,
        "stanzas_out": av.subject.stanzas + (c_stz1 - c_stz0),
        "server_cpu_ms_login": cpu_login_ms,
        "server_cpu_ms_presence": cpu_pres_ms,
        "server_cpu_ms_presence_to_done": cpu_done_ms,
        "server_cpu_sched_ms_login": cpu_login_sched_ms,
        "server_cpu_sched_ms_presence": cpu_pres_sched_ms,
        "server_cpu_sched_ms_presence_to_done": cpu_done_sched_ms,
        "t_unavailable_ms": ms_opt(un.t_seen),
        "unavailable_received": un.seen,
        "stanzas_to_contacts_unavailable": c_stz2 - c_stz1,
        "bytes_to_contacts_unavailable": c_bytes2 - c_bytes1,
        "stanzas_to_subject_unavailable": un.subject.stanzas,
        "subject_other_stanzas_unavailable": un.subject.other,
        "server_cpu_ms_unavailable": cpu_un_ms,
        "server_cpu_sched_ms_unavailable": cpu_un_sched_ms,
        "timed_out": av.timed_out || un.timed_out,
        "broadcast_missing": av.seen_missing,
        "probes_missing": av.probes_missing,
        "unavailable_missing": un.seen_missing,
    }))
}

// ---------------------------------------------------------------- setup

/// Contacts `idx` ask the subject for a subscription and the subject asks them.
async fn subscribe_both(
    s: &mut Session,
    names: &Names,
    cmds: &[mpsc::UnboundedSender<Vec<u8>>],
    idx: &[usize],
) -> Result<()> {
    let subj = &names.subject_bare;
    let mut out = Vec::new();
    for &i in idx {
        let _ = cmds[i - 1].send(format!("<presence type='subscribe' to='{subj}'/>").into_bytes());
        out.extend_from_slice(
            format!(
                "<presence type='subscribe' to='{}'/>",
                names.contact_bare(i)
            )
            .as_bytes(),
        );
    }
    s.send(&out).await
}

/// State of the subscription setup.
struct Setup<'a> {
    ctx: &'a Ctx,
    cmds: &'a [mpsc::UnboundedSender<Vec<u8>>],
    t_start: Instant,
    deadline: Instant,
    timeout: Duration,
    batch: usize,
    polls: usize,
    /// Subscription handshakes started (both directions count as one).
    kicked: usize,
    /// Contacts asked again after 30 s without progress.
    retries: usize,
    /// Contacts found 'both' on the subject's roster but not on their own.
    inconsistent: usize,
}

impl Setup<'_> {
    fn left(&self) -> Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("setup did not finish in {:?}", self.timeout));
        }
        Ok(left)
    }

    /// Serve the subject's stream (approvals, pushes) for a while.
    async fn serve(
        &self,
        s: &mut Session,
        seen_rx: &mut mpsc::UnboundedReceiver<Report>,
        d: Duration,
    ) -> Result<()> {
        let until = Instant::now() + d;
        while Instant::now() < until {
            match next_wake(s, seen_rx).await {
                Wake::Subject(r) => {
                    read_ok(s, r)?;
                    subject_stanzas(s, |_| {}).await?;
                }
                Wake::Report(_) => {}
                Wake::Tick => self.ctx.shared.check()?,
            }
        }
        Ok(())
    }

    async fn poll(&mut self, s: &mut Session) -> Result<RosterState> {
        self.polls += 1;
        let left = self.left()?;
        fetch_roster(s, &format!("r{}", self.polls), &self.ctx.names, left).await
    }

    /// Subscribe the contacts missing from the subject's roster, `batch` at a
    /// time, each batch confirmed on the roster before the next: a server that
    /// rewrites the whole roster on each change (Prosody's file storage) is slow
    /// here, and an unpaced burst only queues the roster polls behind it.
    async fn subject_side(
        &mut self,
        s: &mut Session,
        seen_rx: &mut mpsc::UnboundedReceiver<Report>,
        roster: &mut RosterState,
    ) -> Result<()> {
        let names = &self.ctx.names;
        let missing = roster.missing();
        for chunk in missing.chunks(self.batch.max(1)) {
            let mut todo: Vec<usize> = chunk.to_vec();
            subscribe_both(s, names, self.cmds, &todo).await?;
            self.kicked += todo.len();
            let mut last_progress = Instant::now();
            loop {
                self.serve(s, seen_rx, Duration::from_millis(300)).await?;
                *roster = self.poll(s).await?;
                let still: Vec<usize> = todo.iter().copied().filter(|&i| !roster.both[i]).collect();
                if still.is_empty() {
                    break;
                }
                if still.len() < todo.len() {
                    last_progress = Instant::now();
                } else if last_progress.elapsed() > Duration::from_secs(30) {
                    // Stalled: ask again (a lost or refused request).
                    self.retries += still.len();
                    let shown: Vec<String> = still
                        .iter()
                        .take(10)
                        .map(|&i| format!("{}: {}", names.contact_bare(i), roster.state[i]))
                        .collect();
                    eprintln!(
                        "presence-login: setup: {} contacts stalled for 30 s, asking again; \
                         on {}'s roster: {}",
                        still.len(),
                        self.ctx.subject,
                        shown.join(", ")
                    );
                    subscribe_both(s, names, self.cmds, &still).await?;
                    self.kicked += still.len();
                    last_progress = Instant::now();
                }
                todo = still;
            }
            eprintln!(
                "presence-login: setup: {} of {} contacts 'both' ({:.0} s)",
                roster.both_count(),
                names.n,
                self.t_start.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }

    /// Every contact fetches its own roster; returns each one's item for the
    /// subject (index 0 unused).
    async fn contact_side(
        &mut self,
        s: &mut Session,
        seen_rx: &mut mpsc::UnboundedReceiver<Report>,
    ) -> Result<Vec<String>> {
        let n = self.ctx.names.n;
        let mut views: Vec<Option<String>> = vec![None; n + 1];
        let mut got = 0;
        let q = format!(
            "<iq type='get' id='{}'><query xmlns='jabber:iq:roster'/></iq>",
            String::from_utf8_lossy(CONTACT_ROSTER_ID)
        );
        for chunk in self.cmds.chunks(self.batch.max(1)) {
            for cmd in chunk {
                let _ = cmd.send(q.clone().into_bytes());
            }
            // Pace like the logins: wait for this chunk's answers (mostly).
            let want = (got + chunk.len()).min(n);
            while got < want {
                let left = self.left()?;
                let wake = tokio::time::timeout(left, next_wake(s, seen_rx))
                    .await
                    .map_err(|_| format!("setup: contacts' rosters: {got} of {n} answered"))?;
                match wake {
                    Wake::Subject(r) => {
                        read_ok(s, r)?;
                        subject_stanzas(s, |_| {}).await?;
                    }
                    Wake::Report(Report::Roster { idx, state }) => {
                        if views[idx].is_none() {
                            got += 1;
                        }
                        views[idx] = Some(state);
                    }
                    Wake::Report(Report::Seen(_)) => {}
                    Wake::Tick => self.ctx.shared.check()?,
                }
            }
        }
        Ok(views.into_iter().map(|v| v.unwrap_or_default()).collect())
    }
}

/// Make the subject and every contact mutually subscribed, checked from both
/// sides. Returns a JSON summary of what was done.
///
/// Both sides ask and both sides approve whatever they are asked: this reaches
/// 'both' from any starting state (none, to, from, pending) on a server that
/// follows RFC 6121 Appendix A.
async fn setup(
    ctx: &Ctx,
    cmds: &[mpsc::UnboundedSender<Vec<u8>>],
    seen_rx: &mut mpsc::UnboundedReceiver<Report>,
    timeout: Duration,
    batch: usize,
) -> Result<serde_json::Value> {
    let t_start = Instant::now();
    let names = &ctx.names;
    let mut st = Setup {
        ctx,
        cmds,
        t_start,
        deadline: t_start + timeout,
        timeout,
        batch,
        polls: 0,
        kicked: 0,
        retries: 0,
        inconsistent: 0,
    };
    let (mut s, _) = tokio::time::timeout(ctx.login_timeout, xmpp::login(&ctx.cfg, &ctx.subject))
        .await
        .map_err(|_| format!("{}: login timed out", ctx.subject))??;
    let mut roster = st.poll(&mut s).await?;
    let already = roster.both_count();
    eprintln!(
        "presence-login: setup: {}'s roster has {} items, {already} of {} contacts 'both'",
        ctx.subject, roster.items, names.n
    );
    // Available, so that subscription requests are delivered to this session.
    s.send(b"<presence/>").await?;
    let mut checks = 0;
    loop {
        st.subject_side(&mut s, seen_rx, &mut roster).await?;
        // The other side: each contact's own roster must say 'both' as well,
        // or the server will not answer the subject's probes for it.
        checks += 1;
        let views = st.contact_side(&mut s, seen_rx).await?;
        let bad: Vec<usize> = (1..=names.n).filter(|&i| views[i] != "both").collect();
        if bad.is_empty() {
            break;
        }
        st.inconsistent += bad.len();
        let shown: Vec<String> = bad
            .iter()
            .take(10)
            .map(|&i| {
                format!(
                    "{} has {}, {} has {}",
                    names.contact_bare(i),
                    views[i],
                    ctx.subject,
                    roster.state[i]
                )
            })
            .collect();
        eprintln!(
            "presence-login: setup: {} contacts' rosters disagree with {}'s, asking again: {}",
            bad.len(),
            ctx.subject,
            shown.join("; ")
        );
        if checks >= 5 {
            return Err(format!(
                "setup: rosters still disagree after {checks} checks ({} contacts)",
                bad.len()
            ));
        }
        subscribe_both(&mut s, names, cmds, &bad).await?;
        st.kicked += bad.len();
        st.serve(&mut s, seen_rx, Duration::from_secs(2)).await?;
        roster = st.poll(&mut s).await?;
    }
    s.send(b"<presence type='unavailable'/>").await?;
    close_session(s).await;
    // Let the unavailable broadcast and any late roster traffic settle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    ctx.shared.check()?;
    Ok(json!({
        "setup_s": (t_start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        "setup_already_both": already,
        "setup_subscribed": st.kicked,
        "setup_retries": st.retries,
        "setup_inconsistent": st.inconsistent,
        "setup_checks": checks,
    }))
}

// ---------------------------------------------------------------- the mode

/// Median of a numeric field over the runs (runs where it is null are skipped).
fn median_of(runs: &[serde_json::Value], key: &str) -> Option<f64> {
    let v: Vec<f64> = runs.iter().filter_map(|r| r[key].as_f64()).collect();
    stats::median(&v)
}

fn mean_of(runs: &[serde_json::Value], key: &str) -> Option<f64> {
    let v: Vec<f64> = runs.iter().filter_map(|r| r[key].as_f64()).collect();
    if v.is_empty() {
        return None;
    }
    Some((v.iter().sum::<f64>() / v.len() as f64 * 1000.0).round() / 1000.0)
}

/// Fields summarised as the median over the runs (same names at top level).
const MEDIAN_KEYS: &[&str] = &[
    "t_broadcast_ms",
    "t_probes_ms",
    "t_done_ms",
    "t_unavailable_ms",
    "stanzas_to_subject",
    "bytes_to_subject",
    "stanzas_to_contacts",
    "bytes_to_contacts",
    "stanzas_out",
    "stanzas_to_contacts_unavailable",
    "server_cpu_ms_login",
    "server_cpu_ms_presence",
    "server_cpu_ms_presence_to_done",
    "server_cpu_ms_unavailable",
    "server_cpu_sched_ms_login",
    "server_cpu_sched_ms_presence",
    "server_cpu_sched_ms_presence_to_done",
    "server_cpu_sched_ms_unavailable",
    "subject_login_ms",
    "roster_ms",
];

pub async fn presence_login(a: PresenceArgs, nofile: Option<u64>) -> Result<()> {
    let c = &a.common;
    let n = c.users;
    if n == 0 || a.runs == 0 {
        return Err("need --users >= 1 and --runs >= 1".into());
    }
    let mut res = base_json("presence-login", c, nofile);
    let names = Names {
        subject_bare: format!("{}@{}", a.subject, c.domain),
        prefix: a.contact_prefix.clone(),
        domain: c.domain.clone(),
        n,
    };
    eprintln!(
        "presence-login: subject {} with {n} contacts {}1..{}{n}, {} runs, on {} (tls {:?})",
        names.subject_bare, a.contact_prefix, a.contact_prefix, a.runs, c.server, c.tls
    );

    // Contacts: log in with initial presence, then keep them read.
    let contact_names = (1..=n)
        .map(|i| format!("{}{i}", a.contact_prefix))
        .collect();
    let l = login_named(c, c.login_cfg(true).await?, contact_names, true).await;
    merge(&mut res, login_json(&l));
    require_all(&l)?;
    let shared = Arc::new(ContactShared::default());
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut cmds = Vec::with_capacity(n);
    let mut set = JoinSet::new();
    for (k, s) in l.sessions.into_iter().enumerate() {
        let Some(mut s) = s else {
            return Err("internal: missing contact session".into());
        };
        let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel();
        cmds.push(cmd_tx);
        let (names, shared, seen, mut stop) = (
            names.clone(),
            shared.clone(),
            seen_tx.clone(),
            stop_rx.clone(),
        );
        set.spawn(async move {
            let r = contact_loop(
                &mut s,
                k + 1,
                &names,
                &shared,
                &mut cmd_rx,
                &seen,
                &mut stop,
            )
            .await;
            if let Err(e) = r {
                shared.failed.fetch_add(1, Relaxed);
                if let Ok(mut first) = shared.first_error.lock() {
                    first.get_or_insert(e);
                }
            }
        });
    }
    // Let the contacts' login burst (their own presence and probes) settle.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let ctx = Ctx {
        names,
        subject: a.subject.clone(),
        cfg: c.login_cfg(false).await?,
        login_timeout: c.login_timeout(),
        pid: c.pid,
        quiet_ns: (a.quiet.max(0.0) * 1e9) as u64,
        phase_timeout: Duration::from_secs_f64(a.phase_timeout.max(0.001)),
        shared: shared.clone(),
    };
    let outcome = async {
        let setup_json = setup(
            &ctx,
            &cmds,
            &mut seen_rx,
            Duration::from_secs_f64(a.setup_timeout.max(0.001)),
            c.concurrency,
        )
        .await?;
        merge(&mut res, setup_json);
        let mut runs = Vec::with_capacity(a.runs);
        for run in 1..=a.runs {
            let v = measure_run(&ctx, run, &mut seen_rx).await?;
            eprintln!(
                "presence-login: run {run}: broadcast {} ms, probes {} ms ({}/{} and {}/{}), \
                 stanzas to subject {} and to contacts {}, server CPU {} ms (schedstat {} ms); \
                 unavailable {} ms{}",
                v["t_broadcast_ms"],
                v["t_probes_ms"],
                v["broadcast_received"],
                n,
                v["probes_received"],
                n,
                v["stanzas_to_subject"],
                v["stanzas_to_contacts"],
                v["server_cpu_ms_presence"],
                v["server_cpu_sched_ms_presence"],
                v["t_unavailable_ms"],
                if v["timed_out"] == json!(true) {
                    " (TIMED OUT)"
                } else {
                    ""
                }
            );
            runs.push(v);
            tokio::time::sleep(Duration::from_secs_f64(a.pause.max(0.0))).await;
        }
        Ok::<_, String>(runs)
    }
    .await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while set.join_next().await.is_some() {}
    })
    .await;
    let runs = outcome?;

    let timed_out = runs
        .iter()
        .filter(|r| r["timed_out"] == json!(true))
        .count();
    let mut summary = serde_json::Map::new();
    for k in MEDIAN_KEYS {
        let m = median_of(&runs, k);
        // Counts stay integers when the median is one.
        let v = match m {
            Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => json!(x as i64),
            _ => json!(m),
        };
        summary.insert((*k).to_string(), v);
    }
    merge(&mut res, serde_json::Value::Object(summary));
    merge(
        &mut res,
        json!({
            "subject": ctx.names.subject_bare,
            "contacts": n,
            "contact_prefix": a.contact_prefix,
            "runs": a.runs,
            "runs_timed_out": timed_out,
            "quiet_s": a.quiet,
            "server_cpu_ms_presence_mean": mean_of(&runs, "server_cpu_ms_presence"),
            "server_cpu_sched_ms_presence_mean": mean_of(&runs, "server_cpu_sched_ms_presence"),
            "per_run": runs,
            "loadavg_end": stats::loadavg(),
        }),
    );
    emit(&res, c.out.as_deref())?;
    eprintln!(
        "presence-login: median over {} runs: broadcast {} ms, probes {} ms, unavailable {} ms; \
         stanzas to subject {}, to contacts {}; server CPU {} ms (mean {}, schedstat {}); load {}",
        a.runs,
        res["t_broadcast_ms"],
        res["t_probes_ms"],
        res["t_unavailable_ms"],
        res["stanzas_to_subject"],
        res["stanzas_to_contacts"],
        res["server_cpu_ms_presence"],
        res["server_cpu_ms_presence_mean"],
        res["server_cpu_sched_ms_presence"],
        stats::loadavg()
    );
    if timed_out > 0 {
        return Err(format!("{timed_out} of {} runs timed out", a.runs));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names {
            subject_bare: "u0@bench.test".into(),
            prefix: "c".into(),
            domain: "bench.test".into(),
            n: 500,
        }
    }

    #[test]
    fn contact_indices() {
        let n = names();
        assert_eq!(n.contact(b"c1@bench.test/r"), Some(1));
        assert_eq!(n.contact(b"c500@bench.test"), Some(500));
        assert_eq!(n.contact(b"c501@bench.test"), None);
        assert_eq!(n.contact(b"c0@bench.test"), None);
        assert_eq!(n.contact(b"c01@bench.test"), None);
        assert_eq!(n.contact(b"c1x@bench.test"), None);
        assert_eq!(n.contact(b"c1@other.test"), None);
        assert_eq!(n.contact(b"u0@bench.test/r"), None);
        assert_eq!(n.contact(b"c@bench.test"), None);
        assert_eq!(n.contact(b"bench.test"), None);
        assert!(n.is_subject(b"u0@bench.test/r"));
        assert!(n.is_subject(b"u0@bench.test"));
        assert!(!n.is_subject(b"u01@bench.test"));
        assert_eq!(n.contact_bare(7), "c7@bench.test");
    }

    #[test]
    fn classifies_presences() {
        let n = names();
        assert_eq!(
            classify(
                b"<presence from='c3@bench.test/r' to='u0@bench.test/r'/>",
                &n
            ),
            Kind::ContactAvailable(3)
        );
        assert_eq!(
            classify(
                b"<presence xml:lang='en' from=\"c3@bench.test/r\"><priority>0</priority></presence>",
                &n
            ),
            Kind::ContactAvailable(3)
        );
        assert_eq!(
            classify(b"<presence type='unavailable' from='c3@bench.test/r'/>", &n),
            Kind::Other
        );
        assert_eq!(
            classify(b"<presence from='u0@bench.test/r' to='c3@bench.test'/>", &n),
            Kind::SubjectAvailable
        );
        assert_eq!(
            classify(b"<presence from='u0@bench.test/r' type='unavailable'/>", &n),
            Kind::SubjectUnavailable
        );
        assert_eq!(
            classify(b"<presence from='u0@bench.test' type='subscribe'/>", &n),
            Kind::Other
        );
        assert_eq!(classify(b"<presence/>", &n), Kind::Other);
        assert_eq!(
            classify(b"<iq type='set' from='c3@bench.test/r' id='x'/>", &n),
            Kind::Other
        );
        assert_eq!(
            classify(b"<stream:error><conflict/></stream:error>", &n),
            Kind::StreamError
        );
    }

    #[test]
    fn counts_subject_stanzas() {
        let n = names();
        let mut c = SubjectCounts::default();
        for el in [
            &b"<presence from='c1@bench.test/r'/>"[..],
            b"<presence from='c2@bench.test/r'><show>away</show></presence>",
            b"<presence from='u0@bench.test/r'/>",
            b"<iq type='set' id='p'><query xmlns='jabber:iq:roster'/></iq>",
            b"<message from='bench.test'><body>hi</body></message>",
        ] {
            c.add(el, &classify(el, &n));
        }
        assert_eq!(c.stanzas, 5);
        assert_eq!(c.contact_presences, 2);
        assert_eq!(c.own_presences, 1);
        assert_eq!(c.other.get("iq/set"), Some(&1));
        assert_eq!(c.other.get("message"), Some(&1));
        assert!(c.bytes > 100);
    }

    #[test]
    fn parses_roster() {
        let n = Names { n: 3, ..names() };
        let el = b"<iq type='result' id='r' to='u0@bench.test/r'><query xmlns='jabber:iq:roster' ver='5'>\
            <item jid='c1@bench.test' subscription='both'/>\
            <item subscription=\"both\" jid=\"c2@bench.test\" name='Two'><group>G</group></item>\
            <item jid='c3@bench.test' subscription='to' ask='subscribe'/>\
            <item jid='x@bench.test' subscription='both'/>\
            <item jid='c4@bench.test'/></query></iq>";
        let items = roster_items(el);
        assert_eq!(items.len(), 5);
        assert_eq!(items[4], (&b"c4@bench.test"[..], &b"none"[..], None));
        assert_eq!(items[2].2, Some(&b"subscribe"[..]));
        let st = RosterState::parse(el, &n);
        assert_eq!(st.items, 5);
        assert_eq!(st.both_count(), 2);
        assert_eq!(st.missing(), vec![3]);
        assert_eq!(st.state[3], "to+ask=subscribe");
        assert_eq!(st.state[1], "both");
        let empty = RosterState::parse(
            b"<iq type='result' id='r'><query xmlns='jabber:iq:roster'/></iq>",
            &n,
        );
        assert_eq!((empty.items, empty.both_count()), (0, 0));
        assert_eq!(empty.missing(), vec![1, 2, 3]);
    }

    #[test]
    fn contact_side_item() {
        let el = b"<iq type='result' id='cr'><query xmlns='jabber:iq:roster'>\
            <item jid='u0@bench.test' subscription='to' ask='subscribe'/></query></iq>";
        assert_eq!(item_state(el, "u0@bench.test"), "to+ask=subscribe");
        assert_eq!(item_state(el, "u1@bench.test"), "absent");
        assert_eq!(
            item_state(
                b"<iq type='result' id='cr'><query xmlns='jabber:iq:roster'><item subscription='both' jid='u0@bench.test'><group>x</group></item></query></iq>",
                "u0@bench.test"
            ),
            "both"
        );
    }

    #[test]
    fn replies_by_itself() {
        let mut out = Vec::new();
        auto_reply(
            b"<presence type='subscribe' from='c9@bench.test/r' to='u0@bench.test'/>",
            &mut out,
        );
        assert_eq!(out, b"<presence type='subscribed' to='c9@bench.test'/>");
        out.clear();
        auto_reply(b"<presence from='c9@bench.test/r'/>", &mut out);
        auto_reply(b"<iq type='result' id='x'/>", &mut out);
        assert!(out.is_empty());
        auto_reply(
            b"<iq type='get' id='p' from='bench.test'><ping xmlns='urn:xmpp:ping'/></iq>",
            &mut out,
        );
        assert_eq!(out, b"<iq type='result' id='p' to='bench.test'/>");
    }

    #[test]
    fn medians_over_runs() {
        let runs = vec![
            json!({"t": 3.0, "c": 10}),
            json!({"t": 1.0, "c": null}),
            json!({"t": 2.0, "c": 30}),
        ];
        assert_eq!(median_of(&runs, "t"), Some(2.0));
        assert_eq!(median_of(&runs, "c"), Some(20.0));
        assert_eq!(median_of(&runs, "missing"), None);
        assert_eq!(mean_of(&runs, "t"), Some(2.0));
    }
}
