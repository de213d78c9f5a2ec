//! Federation: the set-up time of a server-to-server link.
//!
//! u1@DOMAIN (on `--server`) and u1@PEER_DOMAIN (on `--peer-server`) log in
//! first (not measured). Then, with no link between the two servers yet (start
//! them afresh), u1@DOMAIN sends one message to u1@PEER_DOMAIN/r: the time to
//! its delivery is the cold first delivery (name resolution or route, TCP, TLS,
//! authentication, then the message). `--warm` more messages follow one at a
//! time on the now open link; `setup_ms` = cold - median warm. The same again
//! from the peer's side (`reverse_*`): a server that opened its own link for
//! the first direction may need a second one (or reuse the first, XEP-0288).
//! The message throughput and latency over a link are `throughput` and
//! `latency` with `--peer-server`.

use std::time::Duration;

use clap::Args;
use serde_json::json;
use tokio::time::Instant;

use crate::modes::{base_json, merge};
use crate::stats::{self, emit, now_ns};
use crate::xml::{self, Ev};
use crate::xmpp::{self, Session};
use crate::{Common, PeerArgs};

type Result<T> = std::result::Result<T, String>;

#[derive(Args)]
pub struct S2sSetupArgs {
    /// (--users is ignored: the mode uses u1 on each server.)
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub peer: PeerArgs,
    /// Messages sent one at a time on the warm link, each way.
    #[arg(long, default_value_t = 20)]
    pub warm: usize,
    /// Longest wait for one delivery, seconds.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
}

/// Send one message from `snd` to `to` and wait until `rcv` gets it; returns
/// the time from the send to the delivery. A bounce (`type='error'`) to the
/// sender is an error that carries the server's reason.
async fn one_message(
    snd: &mut Session,
    rcv: &mut Session,
    to: &str,
    tag: &str,
    timeout: Duration,
) -> Result<Duration> {
    let t0 = Instant::now();
    let msg = format!(
        "<message to='{to}' type='chat' id='{tag}'><body>{tag} {}</body></message>",
        now_ns()
    );
    snd.send(msg.as_bytes()).await?;
    let want = format!("<body>{tag} ");
    let deadline = t0 + timeout;
    loop {
        let mut replies = Vec::new();
        // Everything already buffered on the receiver, then on the sender.
        while let Some(ev) = rcv.poll_event()? {
            match ev {
                Ev::Close => return Err(rcv.err("receiver: server closed the stream")),
                Ev::Open => {}
                Ev::Stanza(r) => {
                    let el = &rcv.rbuf[r];
                    match xml::name(el) {
                        b"message" if xml::contains(el, want.as_bytes()) => {
                            let dt = t0.elapsed();
                            rcv.compact();
                            return Ok(dt);
                        }
                        b"iq" => {
                            let t = xml::attr(el, b"type");
                            if t == Some(b"get") || t == Some(b"set") {
                                xmpp::iq_reply(el, &mut replies);
                            }
                        }
                        b"stream:error" => {
                            return Err(format!("{}: stream error: {}", rcv.user, xml::snippet(el)))
                        }
                        _ => {}
                    }
                }
            }
        }
        rcv.compact();
        if !replies.is_empty() {
            rcv.send(&replies).await?;
            replies.clear();
        }
        while let Some(ev) = snd.poll_event()? {
            match ev {
                Ev::Close => return Err(snd.err("sender: server closed the stream")),
                Ev::Open => {}
                Ev::Stanza(r) => {
                    let el = &snd.rbuf[r];
                    match xml::name(el) {
                        b"message" if xml::attr(el, b"type") == Some(b"error") => {
                            return Err(format!(
                                "{}: message {tag} to {to} bounced after {:.1} ms: {}",
                                snd.user,
                                t0.elapsed().as_secs_f64() * 1e3,
                                xml::snippet(el)
                            ));
                        }
                        b"iq" => {
                            let t = xml::attr(el, b"type");
                            if t == Some(b"get") || t == Some(b"set") {
                                xmpp::iq_reply(el, &mut replies);
                            }
                        }
                        b"stream:error" => {
                            return Err(format!("{}: stream error: {}", snd.user, xml::snippet(el)))
                        }
                        _ => {}
                    }
                }
            }
        }
        snd.compact();
        if !replies.is_empty() {
            snd.send(&replies).await?;
        }
        rcv.prepare_read();
        snd.prepare_read();
        tokio::select! {
            r = rcv.read_more() => { r?; }
            r = snd.read_more() => { r?; }
            _ = tokio::time::sleep_until(deadline) => {
                return Err(format!(
                    "message {tag} from {} to {to}: not delivered within {:?}",
                    snd.user, timeout
                ));
            }
        }
    }
}

/// The cold first message one way, then `warm` more; (cold, warm samples) in ns.
async fn one_way(
    snd: &mut Session,
    rcv: &mut Session,
    to: &str,
    prefix: &str,
    warm: usize,
    timeout: Duration,
) -> Result<(u64, Vec<u64>)> {
    let cold = one_message(snd, rcv, to, &format!("{prefix}0"), timeout).await?;
    let mut w = Vec::with_capacity(warm);
    for i in 1..=warm {
        let dt = one_message(snd, rcv, to, &format!("{prefix}{i}"), timeout).await?;
        w.push(dt.as_nanos() as u64);
    }
    w.sort_unstable();
    Ok((cold.as_nanos() as u64, w))
}

fn ms(ns: u64) -> f64 {
    stats::ms(ns)
}

pub async fn s2s_setup(a: S2sSetupArgs, nofile: Option<u64>) -> Result<()> {
    let c = &a.common;
    let Some(p) = a.peer.common(c) else {
        return Err("s2s-setup needs --peer-server (and --peer-domain)".into());
    };
    let mut res = base_json("s2s-setup", c, nofile);
    merge(
        &mut res,
        json!({ "peer_server": p.server, "peer_domain": p.domain, "warm": a.warm }),
    );
    let timeout = Duration::from_secs_f64(a.timeout.max(0.001));
    let user = c.user(1);
    eprintln!(
        "s2s-setup: {user}@{} on {} <-> {user}@{} on {} (tls {:?})",
        c.domain, c.server, p.domain, p.server, c.tls
    );
    let (mut x, x_login) = tokio::time::timeout(
        c.login_timeout(),
        xmpp::login(&c.login_cfg(true).await?, &user),
    )
    .await
    .map_err(|_| format!("{user}@{}: login timed out", c.domain))??;
    let (mut y, y_login) = tokio::time::timeout(
        p.login_timeout(),
        xmpp::login(&p.login_cfg(true).await?, &p.user(1)),
    )
    .await
    .map_err(|_| format!("{}@{}: login timed out", p.user(1), p.domain))??;
    // Let the logins' presence and any roster traffic pass.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let to_y = format!("{}@{}/{}", p.user(1), p.domain, p.resource);
    let to_x = format!("{user}@{}/{}", c.domain, c.resource);
    let fwd = one_way(&mut x, &mut y, &to_y, "f", a.warm, timeout).await;
    let rev = match &fwd {
        Ok(_) => Some(one_way(&mut y, &mut x, &to_x, "r", a.warm, timeout).await),
        Err(_) => None,
    };
    let _ = x.send(b"</stream:stream>").await;
    let _ = y.send(b"</stream:stream>").await;
    let (cold, warm) = fwd?;
    let (rcold, rwarm) = rev.unwrap_or_else(|| Err("not run".into()))?;
    let wmed = stats::pct(&warm, 50.0);
    let rwmed = stats::pct(&rwarm, 50.0);
    merge(
        &mut res,
        json!({
            "login_ms": ms(x_login.as_nanos() as u64),
            "peer_login_ms": ms(y_login.as_nanos() as u64),
            "first_delivery_ms": ms(cold),
            "warm_p50_ms": ms(wmed),
            "warm_max_ms": ms(warm.last().copied().unwrap_or(0)),
            "setup_ms": ms(cold.saturating_sub(wmed)),
            "reverse_first_delivery_ms": ms(rcold),
            "reverse_warm_p50_ms": ms(rwmed),
            "reverse_setup_ms": ms(rcold.saturating_sub(rwmed)),
            "loadavg_end": stats::loadavg(),
        }),
    );
    emit(&res, c.out.as_deref())?;
    eprintln!(
        "s2s-setup: first delivery {:.2} ms (warm p50 {:.3} ms) -> set-up {:.2} ms; \
         reverse first {:.2} ms (warm p50 {:.3} ms); load {}",
        ms(cold),
        ms(wmed),
        ms(cold.saturating_sub(wmed)),
        ms(rcold),
        ms(rwmed),
        stats::loadavg()
    );
    Ok(())
}
