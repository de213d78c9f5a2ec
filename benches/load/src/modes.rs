//! The four measurement modes.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::stats::{self, emit, latency_json, now_ns};
use crate::xml::{self, Ev};
use crate::xmpp::{self, LoginCfg, Session};
use crate::{Common, IdleArgs, LatencyArgs, ThroughputArgs, Tls};

type Result<T> = std::result::Result<T, String>;

/// Outcome of logging in a range of users.
pub(crate) struct Logins {
    /// Sessions by user index (0 = u1), when kept.
    pub(crate) sessions: Vec<Option<Session>>,
    /// Login times (ns) of the successful logins.
    times: Vec<u64>,
    failures: usize,
    first_error: Option<String>,
    wall: Duration,
    /// Successful logins whose TLS handshake resumed an earlier session.
    tls_resumed: usize,
}

/// A kept (or already closed) session, its login time, and whether its TLS
/// handshake resumed an earlier session.
type LoginOutcome = Result<(Option<Session>, Duration, bool)>;

/// Log in users 1..=n with at most `concurrency` logins in flight, user K to
/// server `node_of(K)` of `cfgs` (one per server of `--servers`). With
/// `keep`, the sessions are returned; otherwise each is closed right away.
async fn login_all(c: &Common, cfgs: Vec<LoginCfg>, n: usize, keep: bool) -> Logins {
    let nodes = cfgs.len();
    let names = (1..=n)
        .map(|i| (c.user(i), crate::node_of(i, nodes)))
        .collect();
    login_spread(c, cfgs, names, keep).await
}

/// Log in the named users (sessions returned in the same order), at most
/// `concurrency` logins in flight. With `keep`, the sessions are returned;
/// otherwise each is closed right away.
pub(crate) async fn login_named(
    c: &Common,
    cfg: LoginCfg,
    names: Vec<String>,
    keep: bool,
) -> Logins {
    let names = names.into_iter().map(|n| (n, 0)).collect();
    login_spread(c, vec![cfg], names, keep).await
}

/// `login_named` over several servers: each name comes with the index in
/// `cfgs` of the server it logs in to.
pub(crate) async fn login_spread(
    c: &Common,
    cfgs: Vec<LoginCfg>,
    names: Vec<(String, usize)>,
    keep: bool,
) -> Logins {
    let n = names.len();
    let mut names = names.into_iter();
    let cfgs: Vec<Arc<LoginCfg>> = cfgs.into_iter().map(Arc::new).collect();
    let timeout = c.login_timeout();
    let concurrency = c.concurrency.max(1);
    let mut set: JoinSet<(usize, LoginOutcome)> = JoinSet::new();
    let mut out = Logins {
        sessions: (0..n).map(|_| None).collect(),
        times: Vec::with_capacity(n),
        failures: 0,
        first_error: None,
        wall: Duration::ZERO,
        tls_resumed: 0,
    };
    let t0 = Instant::now();
    let mut next = 0usize;
    let mut done = 0usize;
    let step = (n / 10).max(1);
    loop {
        while next < n && set.len() < concurrency {
            let (user, node) = names.next().unwrap_or_default();
            let Some(cfg) = cfgs.get(node).or(cfgs.first()).cloned() else {
                out.failures += n - next;
                out.first_error
                    .get_or_insert_with(|| "internal: no server to log in to".into());
                next = n;
                break;
            };
            let idx = next;
            set.spawn(async move {
                let r = match tokio::time::timeout(timeout, xmpp::login(&cfg, &user)).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("{user}: login timed out after {timeout:?}")),
                };
                let r = match r {
                    Ok((mut s, dt)) if !keep => {
                        let resumed = s.tls_resumed == Some(true);
                        // Close politely, do not wait for the server's reply.
                        let _ = s.send(b"</stream:stream>").await;
                        Ok((None, dt, resumed))
                    }
                    Ok((s, dt)) => {
                        let resumed = s.tls_resumed == Some(true);
                        Ok((Some(s), dt, resumed))
                    }
                    Err(e) => Err(e),
                };
                (idx, r)
            });
            next += 1;
        }
        let Some(joined) = set.join_next().await else {
            break;
        };
        done += 1;
        match joined {
            Ok((idx, Ok((s, dt, resumed)))) => {
                out.tls_resumed += usize::from(resumed);
                out.times.push(dt.as_nanos() as u64);
                out.sessions[idx] = s;
            }
            Ok((_, Err(e))) => {
                out.failures += 1;
                if out.first_error.is_none() {
                    eprintln!("login failed: {e}");
                    out.first_error = Some(e);
                }
            }
            Err(e) => {
                out.failures += 1;
                out.first_error.get_or_insert(format!("login task: {e}"));
            }
        }
        if done.is_multiple_of(step) || done == n {
            eprintln!(
                "  logins {done}/{n} ({} failed) {:.1}s",
                out.failures,
                t0.elapsed().as_secs_f64()
            );
        }
    }
    out.wall = t0.elapsed();
    out
}

pub(crate) fn base_json(mode: &str, c: &Common, nofile: Option<u64>) -> serde_json::Value {
    let servers = c.server_list();
    json!({
        "mode": mode,
        "label": c.label,
        "server": servers.first(),
        "servers": c.spread().then_some(&servers),
        "domain": c.domain,
        "tls": match c.tls { Tls::None => "none", Tls::Starttls => "starttls" },
        "users": c.users,
        "concurrency": c.concurrency,
        "unix_time": stats::unix_time(),
        "loadavg_start": stats::loadavg(),
        "tool_nofile": nofile,
    })
}

/// The receivers' server, when it is another one (federation).
fn peer_json(p: Option<&Common>) -> serde_json::Value {
    match p {
        Some(p) => {
            json!({ "peer_server": p.server, "peer_domain": p.domain, "pairs_mode": "cross-server" })
        }
        None => json!({}),
    }
}

pub(crate) fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    if let (Some(a), serde_json::Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
}

pub(crate) fn login_json(l: &Logins) -> serde_json::Value {
    let mut t = l.times.clone();
    json!({
        "logins_ok": l.times.len(),
        "logins_failed": l.failures,
        "login_first_error": l.first_error,
        "login_wall_s": l.wall.as_secs_f64(),
        "login_time": latency_json(&mut t),
        "tls_resumed": l.tls_resumed,
    })
}

pub(crate) fn require_all(l: &Logins) -> Result<()> {
    match &l.first_error {
        Some(e) => Err(format!(
            "{} of {} logins failed; first: {e}",
            l.failures,
            l.sessions.len()
        )),
        None => Ok(()),
    }
}

/// CPU time (user+system) of a process in seconds, from /proc/PID/stat.
fn cpu_s(pid: &str) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(ticks / if hz > 0 { hz as f64 } else { 100.0 })
}

/// CPU use of the tool and the server over a measured interval.
struct CpuMeter {
    t: Instant,
    tool: Option<f64>,
    server: Option<f64>,
    pid: Option<u32>,
    peer: Option<f64>,
    peer_pid: Option<u32>,
}

impl CpuMeter {
    fn start(pid: Option<u32>) -> Self {
        Self::start2(pid, None)
    }
    /// Also the receivers' server (federation), reported as `peer_server_cpu_pct`.
    fn start2(pid: Option<u32>, peer_pid: Option<u32>) -> Self {
        CpuMeter {
            t: Instant::now(),
            tool: cpu_s("self"),
            server: pid.and_then(|p| cpu_s(&p.to_string())),
            pid,
            peer: peer_pid.and_then(|p| cpu_s(&p.to_string())),
            peer_pid,
        }
    }
    fn json(&self) -> serde_json::Value {
        let dt = self.t.elapsed().as_secs_f64().max(1e-9);
        let pct = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some(((b - a) / dt * 1000.0).round() / 10.0),
            _ => None,
        };
        json!({
            "tool_cpu_pct": pct(self.tool, cpu_s("self")),
            "server_cpu_pct": pct(self.server, self.pid.and_then(|p| cpu_s(&p.to_string()))),
            "peer_server_cpu_pct": pct(self.peer, self.peer_pid.and_then(|p| cpu_s(&p.to_string()))),
        })
    }
}

// ---------------------------------------------------------------- idle

/// Keeps every session read until `stop` changes (answers pings, notices
/// disconnects, counted in `dropped`); then each sends its stream close.
pub(crate) fn hold_sessions(
    sessions: Vec<Option<Session>>,
    stop: &watch::Receiver<bool>,
    dropped: &Arc<AtomicU64>,
    set: &mut JoinSet<()>,
) {
    for s in sessions.into_iter().flatten() {
        let mut stop = stop.clone();
        let dropped = dropped.clone();
        set.spawn(async move {
            let mut s = s;
            loop {
                s.prepare_read();
                tokio::select! {
                    r = s.stream.read_buf(&mut s.rbuf) => {
                        let ok = matches!(r, Ok(n) if n > 0);
                        if !ok || xmpp::handle_incoming(&mut s).await.is_err() {
                            dropped.fetch_add(1, Relaxed);
                            return;
                        }
                        s.rbuf.shrink_to(1024);
                    }
                    _ = stop.changed() => {
                        let _ = s.send(b"</stream:stream>").await;
                        return;
                    }
                }
            }
        });
    }
}

pub async fn idle(a: IdleArgs, nofile: Option<u64>) -> Result<()> {
    let c = &a.common;
    let mut res = base_json("idle", c, nofile);
    let rss_before = match c.pid {
        Some(p) => Some(stats::rss_kb(p)?),
        None => None,
    };
    eprintln!(
        "idle: logging in {} sessions on {} (tls {:?}), server RSS before: {} kB",
        c.users,
        c.server_list().join(","),
        c.tls,
        rss_before
            .map(|v| v.to_string())
            .unwrap_or_else(|| "?".into())
    );
    let l = login_all(c, c.login_cfgs(true).await?, c.users, true).await;
    merge(&mut res, login_json(&l));
    require_all(&l)?;

    // Keep every session read (answer pings, notice disconnects).
    let (stop_tx, stop_rx) = watch::channel(false);
    let dropped = Arc::new(AtomicU64::new(0));
    let mut set = JoinSet::new();
    hold_sessions(l.sessions, &stop_rx, &dropped, &mut set);
    tokio::time::sleep(Duration::from_secs_f64(a.settle)).await;
    let rss_after = match c.pid {
        Some(p) => Some(stats::rss_kb(p)?),
        None => None,
    };
    let held = c.users as u64 - dropped.load(Relaxed);
    let per_session = match (rss_before, rss_after) {
        (Some(b), Some(af)) if held > 0 => Some((af as f64 - b as f64) * 1024.0 / held as f64),
        _ => None,
    };
    merge(
        &mut res,
        json!({
            "settle_s": a.settle,
            "sessions_held": held,
            "sessions_dropped": dropped.load(Relaxed),
            "server_rss_before_kb": rss_before,
            "server_rss_after_kb": rss_after,
            "bytes_per_session": per_session.map(|x| x.round()),
            "loadavg_end": stats::loadavg(),
        }),
    );
    emit(&res, c.out.as_deref())?;
    let kb = |x: Option<u64>| x.map(|v| format!("{v} kB")).unwrap_or_else(|| "?".into());
    eprintln!(
        "idle: {held} sessions held ({} dropped); server RSS {} -> {}; {} per session; \
         logins took {:.1}s; load {}",
        dropped.load(Relaxed),
        kb(rss_before),
        kb(rss_after),
        per_session
            .map(|b| format!("{:.1} kB", b / 1024.0))
            .unwrap_or_else(|| "n/a (no --pid)".into()),
        l.wall.as_secs_f64(),
        stats::loadavg()
    );
    if a.hold > 0.0 {
        eprintln!("idle: holding for {}s", a.hold);
        tokio::time::sleep(Duration::from_secs_f64(a.hold)).await;
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while set.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

// ---------------------------------------------------------------- login-rate

pub async fn login_rate(c: Common, nofile: Option<u64>) -> Result<()> {
    let mut res = base_json("login-rate", &c, nofile);
    let resume = c.tls_resume && c.tls == Tls::Starttls;
    eprintln!(
        "login-rate: {} logins on {} (tls {:?}{}), {} in flight",
        c.users,
        c.server_list().join(","),
        c.tls,
        if resume { ", resumed" } else { "" },
        c.concurrency
    );
    let cfgs = c.login_cfgs(false).await?;
    if resume {
        // Returning clients: a first pass (not measured) leaves the shared
        // session stores of `cfgs` full of the server's tickets.
        let primed = login_all(&c, cfgs.clone(), c.users, false).await;
        require_all(&primed)?;
        eprintln!(
            "login-rate: priming pass done ({:.1} logins/s), measuring",
            primed.times.len() as f64 / primed.wall.as_secs_f64().max(1e-9)
        );
    }
    let cpu = CpuMeter::start(c.pid);
    let l = login_all(&c, cfgs, c.users, false).await;
    merge(&mut res, cpu.json());
    let rate = l.times.len() as f64 / l.wall.as_secs_f64().max(1e-9);
    merge(&mut res, login_json(&l));
    merge(
        &mut res,
        json!({
            "tls_resume": resume,
            "logins_per_s": (rate * 10.0).round() / 10.0,
            "loadavg_end": stats::loadavg(),
        }),
    );
    emit(&res, c.out.as_deref())?;
    let mut t = l.times.clone();
    t.sort_unstable();
    eprintln!(
        "login-rate: {} ok ({} TLS resumed), {} failed in {:.2}s = {:.1} logins/s; login time p50 {:.1} ms, p99 {:.1} ms; load {}",
        l.times.len(),
        l.tls_resumed,
        l.failures,
        l.wall.as_secs_f64(),
        rate,
        stats::ms(stats::pct(&t, 50.0)),
        stats::ms(stats::pct(&t, 99.0)),
        stats::loadavg()
    );
    if l.times.is_empty() {
        return Err(l.first_error.unwrap_or_else(|| "no login succeeded".into()));
    }
    Ok(())
}

// ---------------------------------------------------------------- message pairs

/// How a pair's sender schedules messages.
#[derive(Clone, Copy)]
enum Schedule {
    /// Keep up to this many messages in flight.
    Window(usize),
    /// One message per period, the first at the given instant.
    Periodic(Duration, Instant),
}

#[derive(Clone)]
struct PairCfg {
    schedule: Schedule,
    /// Messages whose send time falls in [warm_end, end) are measured.
    warm_end_ns: u64,
    end_ns: u64,
    drain: Duration,
    pad: Arc<str>,
    delivered: Arc<AtomicU64>,
}

#[derive(Default)]
struct PairResult {
    sent_total: u64,
    recv_total: u64,
    sent_measured: u64,
    recv_measured: u64,
    errors: u64,
    /// First message error the sender got, and when (ns since the tool started).
    first_error: Option<(u64, String)>,
    latencies: Vec<u64>,
    error: Option<String>,
}

enum Wake {
    Recv(std::io::Result<usize>),
    Send(std::io::Result<usize>),
    Tick,
    Stop,
    DrainOver,
}

async fn tick(t: &mut Option<Interval>) {
    match t {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn push_message(out: &mut Vec<u8>, to: &str, seq: u64, ts: u64, pad: &str) {
    use std::io::Write;
    let _ = write!(
        out,
        "<message to='{to}' type='chat' id='m{seq}'><body>{seq} {ts}{pad}</body></message>"
    );
}

/// Handle what the receiver got: count deliveries, collect latencies.
fn on_receive(
    s: &mut Session,
    cfg: &PairCfg,
    r: &mut PairResult,
    replies: &mut Vec<u8>,
) -> Result<()> {
    let now = now_ns();
    while let Some(ev) = s.poll_event()? {
        let Ev::Stanza(range) = ev else {
            if ev == Ev::Close {
                return Err(s.err("receiver: server closed the stream"));
            }
            continue;
        };
        let el = &s.rbuf[range];
        match xml::name(el) {
            b"message" => {
                if xml::attr(el, b"type") == Some(b"error") {
                    r.errors += 1;
                    continue;
                }
                let Some(body) = xml::child_text(el, b"<body>", b"</body>") else {
                    continue; // e.g. chat states; not ours
                };
                let mut it = body.split(|&b| b == b' ');
                let _seq = it.next();
                let ts = it
                    .next()
                    .and_then(|t| std::str::from_utf8(t).ok())
                    .and_then(|t| t.parse::<u64>().ok());
                let Some(ts) = ts else {
                    return Err(format!(
                        "{}: unexpected message body: {}",
                        s.user,
                        xml::snippet(el)
                    ));
                };
                r.recv_total += 1;
                cfg.delivered.fetch_add(1, Relaxed);
                if ts >= cfg.warm_end_ns && ts < cfg.end_ns {
                    r.recv_measured += 1;
                    r.latencies.push(now.saturating_sub(ts));
                }
            }
            b"iq" => {
                let t = xml::attr(el, b"type");
                if t == Some(b"get") || t == Some(b"set") {
                    xmpp::iq_reply(el, replies);
                }
            }
            b"stream:error" => {
                return Err(format!("{}: stream error: {}", s.user, xml::snippet(el)));
            }
            _ => {}
        }
    }
    s.compact();
    Ok(())
}

/// Drive one sender->receiver pair until stopped and drained.
async fn run_pair(
    mut snd: Session,
    mut rcv: Session,
    to: String,
    cfg: PairCfg,
    mut stop: watch::Receiver<bool>,
) -> PairResult {
    let mut r = PairResult::default();
    if let Err(e) = pair_loop(&mut snd, &mut rcv, &to, &cfg, &mut stop, &mut r).await {
        r.error = Some(e);
    }
    let _ = snd.send(b"</stream:stream>").await;
    let _ = rcv.send(b"</stream:stream>").await;
    r
}

async fn pair_loop(
    snd: &mut Session,
    rcv: &mut Session,
    to: &str,
    cfg: &PairCfg,
    stop: &mut watch::Receiver<bool>,
    r: &mut PairResult,
) -> Result<()> {
    let mut ticker = match cfg.schedule {
        Schedule::Periodic(period, first) => {
            let mut t = tokio::time::interval_at(first, period);
            t.set_missed_tick_behavior(MissedTickBehavior::Burst);
            Some(t)
        }
        Schedule::Window(_) => None,
    };
    let mut out = Vec::with_capacity(1024);
    let mut replies = Vec::new();
    let mut stopping = false;
    let mut drain_end = Instant::now() + Duration::from_secs(86400 * 365);
    let mut seq = 0u64;
    loop {
        if let (Schedule::Window(w), false) = (cfg.schedule, stopping) {
            let inflight = r.sent_total - r.recv_total.min(r.sent_total);
            for _ in inflight..w as u64 {
                let ts = now_ns();
                seq += 1;
                push_message(&mut out, to, seq, ts, &cfg.pad);
                r.sent_total += 1;
                if ts >= cfg.warm_end_ns && ts < cfg.end_ns {
                    r.sent_measured += 1;
                }
            }
        }
        if !out.is_empty() {
            snd.send(&out).await?;
            out.clear();
        }
        if !replies.is_empty() {
            rcv.send(&replies).await?;
            replies.clear();
        }
        if stopping && r.recv_total >= r.sent_total {
            return Ok(());
        }
        rcv.prepare_read();
        snd.prepare_read();
        let wake = tokio::select! {
            x = rcv.stream.read_buf(&mut rcv.rbuf) => Wake::Recv(x),
            x = snd.stream.read_buf(&mut snd.rbuf) => Wake::Send(x),
            _ = tick(&mut ticker), if !stopping => Wake::Tick,
            _ = stop.changed(), if !stopping => Wake::Stop,
            _ = tokio::time::sleep_until(drain_end), if stopping => Wake::DrainOver,
        };
        match wake {
            Wake::Recv(x) => {
                match x {
                    Ok(0) => return Err(rcv.err("receiver: connection closed by server")),
                    Err(e) => return Err(rcv.err(&format!("receiver: read: {e}"))),
                    Ok(_) => {}
                }
                on_receive(rcv, cfg, r, &mut replies)?;
            }
            Wake::Send(x) => {
                match x {
                    Ok(0) => return Err(snd.err("sender: connection closed by server")),
                    Err(e) => return Err(snd.err(&format!("sender: read: {e}"))),
                    Ok(_) => {}
                }
                r.errors += xmpp::handle_incoming(snd).await?;
                if r.first_error.is_none() {
                    if let Some(e) = snd.first_error.take() {
                        r.first_error = Some((now_ns(), e));
                    }
                }
            }
            Wake::Tick => {
                let ts = now_ns();
                if ts < cfg.end_ns {
                    seq += 1;
                    push_message(&mut out, to, seq, ts, &cfg.pad);
                    r.sent_total += 1;
                    if ts >= cfg.warm_end_ns {
                        r.sent_measured += 1;
                    }
                }
            }
            Wake::Stop => {
                stopping = true;
                drain_end = Instant::now() + cfg.drain;
            }
            Wake::DrainOver => return Ok(()),
        }
    }
}

/// Log in the users, pair them (u1->u2, u3->u4, ...) and run the pairs.
/// Returns the per-pair results plus what the sampler saw.
struct PairsRun {
    results: Vec<PairResult>,
    per_second: Vec<u64>,
    measured_delivered: u64,
    measured_s: f64,
    cpu: serde_json::Value,
    start_ns: u64,
}

/// How users u1..uN are paired into sender -> receiver.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Pairing {
    /// u1->u2, u3->u4, ... (with `--servers`, consecutive users are on
    /// consecutive servers, so on different ones when there are several).
    Consecutive,
    /// Sender and receiver on different servers of `--servers`.
    CrossNode,
    /// Sender and receiver on the same server of `--servers`.
    SameNode,
}

impl Pairing {
    pub fn name(self) -> &'static str {
        match self {
            Pairing::Consecutive => "consecutive",
            Pairing::CrossNode => "cross-node",
            Pairing::SameNode => "same-node",
        }
    }
}

/// The pairs (sender K, receiver K', 1-based user numbers) of `users` users
/// spread over `nodes` servers (user K on server `node_of(K)`).
///
/// `CrossNode` and `SameNode` use the same users: the users of each server
/// are split in halves, m = (smallest server's user count) / 2 each; the
/// j-th user of the first half of server s sends to the j-th user of the
/// second half of server s+1 (cross) or of server s itself (same). So every
/// server holds m senders and m receivers either way, and the two runs differ
/// only in where each message goes.
pub fn make_pairs(users: usize, nodes: usize, pairing: Pairing) -> Result<Vec<(usize, usize)>> {
    let nodes = nodes.max(1);
    if pairing == Pairing::Consecutive {
        let n = users - users % 2;
        if n < 2 {
            return Err("need at least 2 users".into());
        }
        return Ok((0..n / 2).map(|i| (2 * i + 1, 2 * i + 2)).collect());
    }
    if pairing == Pairing::CrossNode && nodes < 2 {
        return Err("--cross-node needs at least 2 servers (--servers)".into());
    }
    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); nodes];
    for k in 1..=users {
        groups[crate::node_of(k, nodes)].push(k);
    }
    let m = groups.iter().map(Vec::len).min().unwrap_or(0) / 2;
    if m == 0 {
        return Err(format!(
            "need at least 2 users per server ({} users over {nodes} servers)",
            users
        ));
    }
    let mut pairs = Vec::with_capacity(m * nodes);
    for j in 0..m {
        for (s, g) in groups.iter().enumerate() {
            let to = match pairing {
                Pairing::CrossNode => (s + 1) % nodes,
                _ => s,
            };
            pairs.push((g[j], groups[to][m + j]));
        }
    }
    Ok(pairs)
}

/// Log in the senders and receivers and pair them: on one server u1->u2,
/// u3->u4...; over `--servers` as `make_pairs` says; with a peer
/// (federation) uK@DOMAIN -> uK@PEER_DOMAIN, K = 1..N. Returns the sessions
/// in pairs and the receivers' addresses.
async fn login_pairs(
    c: &Common,
    peer: Option<&Common>,
    pairing: Pairing,
    res: &mut serde_json::Value,
) -> Result<(Vec<(Session, Session)>, Vec<String>)> {
    let Some(p) = peer else {
        let cfgs = c.login_cfgs(true).await?;
        let pairs = make_pairs(c.users, cfgs.len(), pairing)?;
        merge(
            res,
            json!({ "pairs_mode": pairing.name(), "pairs_planned": pairs.len() }),
        );
        let names = pairs
            .iter()
            .flat_map(|&(a, b)| [a, b])
            .map(|k| (c.user(k), c.node_of(k)))
            .collect();
        let l = login_spread(c, cfgs, names, true).await;
        merge(res, login_json(&l));
        require_all(&l)?;
        let mut out = Vec::with_capacity(pairs.len());
        let mut to = Vec::with_capacity(pairs.len());
        let mut sessions = l.sessions.into_iter();
        for &(_, rcv_k) in &pairs {
            let (Some(Some(snd)), Some(Some(rcv))) = (sessions.next(), sessions.next()) else {
                return Err("internal: missing session".into());
            };
            out.push((snd, rcv));
            to.push(format!("{}@{}/{}", c.user(rcv_k), c.domain, c.resource));
        }
        return Ok((out, to));
    };
    let n = c.users;
    if n < 1 {
        return Err("need at least 1 user".into());
    }
    eprintln!("  senders on {} ({}):", c.server, c.domain);
    let ls = login_all(c, vec![c.login_cfg(true).await?], n, true).await;
    merge(res, login_json(&ls));
    require_all(&ls)?;
    eprintln!("  receivers on {} ({}):", p.server, p.domain);
    let lr = login_all(p, vec![p.login_cfg(true).await?], n, true).await;
    let mut lj = login_json(&lr);
    if let Some(o) = lj.as_object_mut() {
        let peer_json: serde_json::Map<String, serde_json::Value> = std::mem::take(o)
            .into_iter()
            .map(|(k, v)| (format!("peer_{k}"), v))
            .collect();
        *o = peer_json;
    }
    merge(res, lj);
    require_all(&lr)?;
    let mut out = Vec::with_capacity(n);
    let mut to = Vec::with_capacity(n);
    for (i, (s, r)) in ls.sessions.into_iter().zip(lr.sessions).enumerate() {
        let (Some(s), Some(r)) = (s, r) else {
            return Err("internal: missing session".into());
        };
        out.push((s, r));
        to.push(format!("{}@{}/{}", p.user(i + 1), p.domain, p.resource));
    }
    Ok((out, to))
}

#[allow(clippy::too_many_arguments)]
async fn run_pairs(
    c: &Common,
    peer: Option<&Common>,
    pairing: Pairing,
    res: &mut serde_json::Value,
    make_schedule: impl Fn(usize, usize, Instant) -> Schedule,
    warmup: f64,
    duration: f64,
    drain: f64,
    pad: usize,
) -> Result<PairsRun> {
    let (sessions, tos) = login_pairs(c, peer, pairing, res).await?;
    // Let presence broadcasts and the login burst settle.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let pairs = sessions.len();
    let t0 = Instant::now();
    let start_ns = now_ns();
    let warm_end_ns = start_ns + (warmup * 1e9) as u64;
    let end_ns = warm_end_ns + (duration * 1e9) as u64;
    let delivered = Arc::new(AtomicU64::new(0));
    let base = PairCfg {
        schedule: Schedule::Window(1),
        warm_end_ns,
        end_ns,
        drain: Duration::from_secs_f64(drain),
        pad: if pad > 0 {
            format!(" {}", "x".repeat(pad)).into()
        } else {
            "".into()
        },
        delivered: delivered.clone(),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut set = JoinSet::new();
    for (i, ((snd, rcv), to)) in sessions.into_iter().zip(tos).enumerate() {
        let cfg = PairCfg {
            schedule: make_schedule(i, pairs, t0),
            ..base.clone()
        };
        set.spawn(run_pair(snd, rcv, to, cfg, stop_rx.clone()));
    }

    // Sample deliveries once a second during the measured interval.
    tokio::time::sleep_until(t0 + Duration::from_secs_f64(warmup)).await;
    let cpu = CpuMeter::start2(c.pid, peer.and_then(|p| p.pid));
    let m0 = Instant::now();
    let c0 = delivered.load(Relaxed);
    let mut per_second = Vec::new();
    let mut last = c0;
    let end = m0 + Duration::from_secs_f64(duration);
    let mut next = m0 + Duration::from_secs(1);
    while next <= end {
        tokio::time::sleep_until(next).await;
        let d = delivered.load(Relaxed);
        per_second.push(d - last);
        last = d;
        next += Duration::from_secs(1);
    }
    tokio::time::sleep_until(end).await;
    let measured_delivered = delivered.load(Relaxed) - c0;
    let measured_s = m0.elapsed().as_secs_f64();
    let cpu = cpu.json();
    let _ = stop_tx.send(true);
    let mut results = Vec::with_capacity(pairs);
    while let Some(j) = set.join_next().await {
        match j {
            Ok(r) => results.push(r),
            Err(e) => results.push(PairResult {
                error: Some(format!("pair task: {e}")),
                ..PairResult::default()
            }),
        }
    }
    Ok(PairsRun {
        results,
        per_second,
        measured_delivered,
        measured_s,
        cpu,
        start_ns,
    })
}

/// Totals over the pairs, as JSON; also returns the merged latencies.
/// `message_first_error_s` counts from `start_ns` (the start of the warm-up).
fn pair_totals(rs: &mut [PairResult], start_ns: u64) -> (serde_json::Value, Vec<u64>) {
    let sum = |f: fn(&PairResult) -> u64| rs.iter().map(f).sum::<u64>();
    let failed: Vec<&String> = rs.iter().filter_map(|r| r.error.as_ref()).collect();
    let v = json!({
        "pairs": rs.len(),
        "sent_total": sum(|r| r.sent_total),
        "received_total": sum(|r| r.recv_total),
        "sent_measured": sum(|r| r.sent_measured),
        "received_measured": sum(|r| r.recv_measured),
        "lost_measured": sum(|r| r.sent_measured).saturating_sub(sum(|r| r.recv_measured)),
        "message_errors": sum(|r| r.errors),
        "pairs_with_message_errors": rs.iter().filter(|r| r.errors > 0).count(),
        "message_first_error": rs.iter().filter_map(|r| r.first_error.as_ref()).min_by_key(|e| e.0).map(|e| &e.1),
        "message_first_error_s": rs.iter().filter_map(|r| r.first_error.as_ref()).map(|e| e.0).min()
            .map(|t| (t.saturating_sub(start_ns) as f64 / 1e7).round() / 100.0),
        "pairs_failed": failed.len(),
        "pair_first_error": failed.first(),
    });
    let mut lat = Vec::with_capacity(rs.iter().map(|r| r.latencies.len()).sum());
    for r in rs.iter_mut() {
        lat.append(&mut r.latencies);
    }
    (v, lat)
}

// ---------------------------------------------------------------- throughput

pub async fn throughput(a: ThroughputArgs, nofile: Option<u64>) -> Result<()> {
    let c = &a.common;
    let peer = a.peer.common(c);
    let mut res = base_json(
        if peer.is_some() {
            "s2s-throughput"
        } else {
            "throughput"
        },
        c,
        nofile,
    );
    merge(&mut res, peer_json(peer.as_ref()));
    eprintln!(
        "throughput: {} users ({} pairs), window {}, warm-up {}s, {}s measured, on {} (tls {:?})",
        c.users,
        if peer.is_some() { c.users } else { c.users / 2 },
        a.window,
        a.warmup,
        a.duration,
        c.server_list().join(","),
        c.tls
    );
    let w = a.window.max(1);
    if peer.is_some() && c.spread() {
        return Err("--servers and --peer-server do not go together".into());
    }
    let mut run = run_pairs(
        c,
        peer.as_ref(),
        a.pairing.pairing(),
        &mut res,
        |_, _, _| Schedule::Window(w),
        a.warmup,
        a.duration,
        a.drain,
        a.pad,
    )
    .await?;
    let (totals, mut lat) = pair_totals(&mut run.results, run.start_ns);
    let rate = run.measured_delivered as f64 / run.measured_s.max(1e-9);
    let peak = run.per_second.iter().copied().max().unwrap_or(0);
    merge(&mut res, totals);
    merge(&mut res, run.cpu);
    merge(
        &mut res,
        json!({
            "window": w,
            "warmup_s": a.warmup,
            "duration_s": a.duration,
            "pad": a.pad,
            "delivered_measured": run.measured_delivered,
            "msgs_per_s": rate.round(),
            "peak_1s_msgs_per_s": peak,
            "per_second": run.per_second,
            "latency": latency_json(&mut lat),
            "loadavg_end": stats::loadavg(),
        }),
    );
    emit(&res, c.out.as_deref())?;
    eprintln!(
        "throughput: {:.0} msgs/s delivered (peak 1s {peak}), p50 {:.2} ms p99 {:.2} ms, \
         tool CPU {}%, server CPU {}%, pairs failed {}; load {}",
        rate,
        stats::ms(stats::pct(&lat, 50.0)),
        stats::ms(stats::pct(&lat, 99.0)),
        res["tool_cpu_pct"],
        res["server_cpu_pct"],
        res["pairs_failed"],
        stats::loadavg()
    );
    Ok(())
}

// ---------------------------------------------------------------- latency

pub async fn latency(a: LatencyArgs, nofile: Option<u64>) -> Result<()> {
    let c = &a.common;
    let peer = a.peer.common(c);
    let mut res = base_json(
        if peer.is_some() {
            "s2s-latency"
        } else {
            "latency"
        },
        c,
        nofile,
    );
    merge(&mut res, peer_json(peer.as_ref()));
    if a.rate <= 0.0 {
        return Err("--rate must be positive".into());
    }
    eprintln!(
        "latency: {} users ({} pairs), {} msg/s total, warm-up {}s, {}s measured, on {} (tls {:?})",
        c.users,
        if peer.is_some() { c.users } else { c.users / 2 },
        a.rate,
        a.warmup,
        a.duration,
        c.server_list().join(","),
        c.tls
    );
    let rate = a.rate;
    if peer.is_some() && c.spread() {
        return Err("--servers and --peer-server do not go together".into());
    }
    let mut run = run_pairs(
        c,
        peer.as_ref(),
        a.pairing.pairing(),
        &mut res,
        move |i, pairs, t0| {
            // Each pair sends rate/pairs msg/s; pairs are staggered evenly.
            let period = Duration::from_secs_f64(pairs as f64 / rate);
            let first = t0 + period.mul_f64(i as f64 / pairs as f64);
            Schedule::Periodic(period, first)
        },
        a.warmup,
        a.duration,
        a.drain,
        a.pad,
    )
    .await?;
    let (totals, mut lat) = pair_totals(&mut run.results, run.start_ns);
    merge(&mut res, totals);
    merge(&mut res, run.cpu);
    let achieved = run.measured_delivered as f64 / run.measured_s.max(1e-9);
    merge(
        &mut res,
        json!({
            "rate": a.rate,
            "warmup_s": a.warmup,
            "duration_s": a.duration,
            "pad": a.pad,
            "delivered_msgs_per_s": achieved.round(),
            "per_second": run.per_second,
            "latency": latency_json(&mut lat),
            "loadavg_end": stats::loadavg(),
        }),
    );
    emit(&res, c.out.as_deref())?;
    eprintln!(
        "latency: sent {} received {} (measured); p50 {:.3} ms p99 {:.3} ms max {:.3} ms; \
         delivered {:.0} msg/s; tool CPU {}%, server CPU {}%; load {}",
        res["sent_measured"],
        res["received_measured"],
        stats::ms(stats::pct(&lat, 50.0)),
        stats::ms(stats::pct(&lat, 99.0)),
        stats::ms(lat.last().copied().unwrap_or(0)),
        achieved,
        res["tool_cpu_pct"],
        res["server_cpu_pct"],
        stats::loadavg()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_pairs() {
        assert_eq!(
            make_pairs(5, 3, Pairing::Consecutive).unwrap(),
            vec![(1, 2), (3, 4)]
        );
        assert!(make_pairs(1, 1, Pairing::Consecutive).is_err());
    }

    #[test]
    fn cross_and_same_node_pairs() {
        let nodes = 3;
        // Users per server: 0: 1,4,7,10,13  1: 2,5,8,11  2: 3,6,9,12 -> m = 2.
        let cross = make_pairs(13, nodes, Pairing::CrossNode).unwrap();
        let same = make_pairs(13, nodes, Pairing::SameNode).unwrap();
        assert_eq!(cross.len(), 6);
        assert_eq!(same.len(), 6);
        for &(s, r) in &cross {
            assert_eq!(
                crate::node_of(r, nodes),
                (crate::node_of(s, nodes) + 1) % nodes
            );
        }
        for &(s, r) in &same {
            assert_eq!(crate::node_of(r, nodes), crate::node_of(s, nodes));
        }
        // The same users either way, each in one pair only.
        let users = |p: &[(usize, usize)]| {
            let mut u: Vec<usize> = p.iter().flat_map(|&(a, b)| [a, b]).collect();
            u.sort_unstable();
            u
        };
        let u = users(&cross);
        assert_eq!(u, users(&same));
        let mut d = u.clone();
        d.dedup();
        assert_eq!(d.len(), u.len());
        // Every server holds as many senders as receivers.
        for n in 0..nodes {
            let snd = cross
                .iter()
                .filter(|p| crate::node_of(p.0, nodes) == n)
                .count();
            let rcv = cross
                .iter()
                .filter(|p| crate::node_of(p.1, nodes) == n)
                .count();
            assert_eq!((snd, rcv), (2, 2));
        }
        assert!(make_pairs(10, 1, Pairing::CrossNode).is_err());
        assert_eq!(
            make_pairs(4, 1, Pairing::SameNode).unwrap(),
            vec![(1, 3), (2, 4)]
        );
        assert!(make_pairs(3, 3, Pairing::SameNode).is_err());
    }
}
