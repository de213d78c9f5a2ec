//! `idle-curve`: server RSS against the number of idle sessions, in one pass. Users are logged
//! in in steps (u1..u{s1}, then up to s2, ...); after each step the tool waits `--settle`
//! seconds with every session held and read, then reads the server's RSS. One JSON line per
//! step, so a plot of RSS against sessions comes from one server start, with the memory each
//! burst of logins leaves behind counted as it would be in production.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::modes::{base_json, hold_sessions, login_json, login_spread, merge, require_all};
use crate::stats::{self, emit};
use crate::IdleCurveArgs;

type Result<T> = std::result::Result<T, String>;

pub async fn idle_curve(a: IdleCurveArgs, nofile: Option<u64>) -> Result<()> {
    let c = &a.common;
    let pid = c
        .pid
        .ok_or("idle-curve needs --pid (the server whose RSS is read)")?;
    let mut steps = a.steps.clone();
    steps.sort_unstable();
    steps.dedup();
    if steps.is_empty() {
        return Err("no --steps".into());
    }
    let rss_before = stats::rss_kb(pid)?;
    eprintln!(
        "idle-curve: steps {steps:?} on {} (tls {:?}, {} in flight), server RSS before: {rss_before} kB",
        c.server, c.tls, c.concurrency
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let dropped = Arc::new(AtomicU64::new(0));
    let mut held = JoinSet::new();
    let mut logged_in = 0usize;
    for &step in &steps {
        let names = (logged_in + 1..=step).map(|i| (c.user(i), 0)).collect();
        let l = login_spread(c, c.login_cfgs(true).await?, names, true).await;
        let mut res = base_json("idle-curve", c, nofile);
        merge(&mut res, login_json(&l));
        require_all(&l)?;
        hold_sessions(l.sessions, &stop_rx, &dropped, &mut held);
        logged_in = step;
        tokio::time::sleep(Duration::from_secs_f64(a.settle)).await;
        let rss = stats::rss_kb(pid)?;
        let sessions = logged_in as u64 - dropped.load(Relaxed);
        let per_session = (rss as f64 - rss_before as f64) * 1024.0 / sessions.max(1) as f64;
        merge(
            &mut res,
            json!({
                "sessions": sessions,
                "sessions_dropped": dropped.load(Relaxed),
                "settle_s": a.settle,
                "server_rss_before_kb": rss_before,
                "server_rss_kb": rss,
                "bytes_per_session": per_session.round(),
                "loadavg_end": stats::loadavg(),
            }),
        );
        emit(&res, c.out.as_deref())?;
        eprintln!(
            "idle-curve: {sessions} sessions, RSS {rss} kB, {:.1} kB per session",
            per_session / 1024.0
        );
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while held.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}
