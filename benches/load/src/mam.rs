//! mam: message archive write rate and `after-id` catch-up (XEP-0313).
//!
//! Users: the recipient is PREFIX1 (logged in with initial presence, resource `r`), the senders
//! PREFIX2..PREFIX(S+1). Protocol only, the same on every server with `urn:xmpp:mam:2#extended`.
//!
//! (a) Write rate. Before sending, the recipient asks its archive's count (a query with RSM
//! `<max>0</max>`) and its `<metadata/>` (the id of the newest message, if any). The senders
//! then send `--messages` chat messages with bodies to the recipient's bare JID, each keeping up
//! to `--window` in flight (a message is done when the recipient's session received it). When
//! every message was delivered, the recipient polls the count until it is `before + messages`:
//! `archived_per_s = messages / (that moment - first send)`. Every message is archived twice
//! (the sender's archive and the recipient's), so the server wrote `2 * messages` rows.
//!
//! (b) Catch-up. A new session of the recipient (resource `sync`, no presence, so nothing is
//! delivered to it) pages through the run's messages with `after-id` = the newest id before the
//! run (or from the start of the archive when it was empty) and RSM `<max>` = `--page`, each
//! next page after the previous page's `<last/>`, until `complete='true'`. Reported: the total
//! time, messages fetched, and the per-page round trip (query sent to `<fin/>` received).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::modes::{base_json, login_json, login_named, merge, require_all};
use crate::stats::{self, emit, latency_json, CpuSample};
use crate::xml::{self, Ev};
use crate::xmpp::{self, Session};
use crate::MamArgs;

type Result<T> = std::result::Result<T, String>;

const MAM: &str = "urn:xmpp:mam:2";
const RSM: &str = "http://jabber.org/protocol/rsm";

/// Text of the first `<NAME …>text</NAME>` in `el`, attributes allowed.
fn element_text<'a>(el: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let mut open = b"<".to_vec();
    open.extend_from_slice(name);
    let mut from = 0;
    loop {
        let at = from + xml::find(&el[from..], &open)?;
        let after = el.get(at + open.len())?;
        from = at + open.len();
        if !(after.is_ascii_whitespace() || *after == b'>') {
            continue;
        }
        let gt = from + el[from..].iter().position(|&b| b == b'>')?;
        if el[gt - 1] == b'/' {
            return Some(&[]);
        }
        let mut close = b"</".to_vec();
        close.extend_from_slice(name);
        let end = gt + 1 + xml::find(&el[gt + 1..], &close)?;
        return Some(&el[gt + 1..end]);
    }
}

fn complete(el: &[u8]) -> bool {
    xml::contains(el, b"complete='true'") || xml::contains(el, b"complete=\"true\"")
}

/// Next stanza (owned), answering pings on the way.
async fn next_stanza(s: &mut Session) -> Result<Vec<u8>> {
    loop {
        match s.poll_event()? {
            Some(Ev::Open) => continue,
            Some(Ev::Close) => return Err(s.err("server closed the stream")),
            Some(Ev::Stanza(r)) => {
                let el = s.rbuf[r].to_vec();
                s.compact();
                if xml::name(&el) == b"iq"
                    && matches!(xml::attr(&el, b"type"), Some(b"get") | Some(b"set"))
                {
                    let mut reply = Vec::new();
                    xmpp::iq_reply(&el, &mut reply);
                    s.send(&reply).await?;
                    continue;
                }
                return Ok(el);
            }
            None => {
                s.read_more().await?;
            }
        }
    }
}

/// Sends an IQ and returns (its answer, MAM results received before it).
async fn iq(s: &mut Session, id: &str, xml_payload: &str) -> Result<(Vec<u8>, usize)> {
    s.send(
        format!(
            "<iq type='{}' id='{id}'>{xml_payload}</iq>",
            iq_type(xml_payload)
        )
        .as_bytes(),
    )
    .await?;
    let mut results = 0;
    loop {
        let el = next_stanza(s).await?;
        if xml::name(&el) == b"iq" && xml::attr(&el, b"id") == Some(id.as_bytes()) {
            if xml::attr(&el, b"type") != Some(b"result") {
                return Err(format!("{}: iq {id} failed: {}", s.user, xml::snippet(&el)));
            }
            return Ok((el, results));
        }
        if xml::name(&el) == b"message" && xml::contains(&el, b"<result") {
            results += 1;
        }
    }
}

fn iq_type(payload: &str) -> &'static str {
    if payload.starts_with("<metadata") {
        "get"
    } else {
        "set"
    }
}

async fn archive_count(s: &mut Session, seq: &mut u64) -> Result<u64> {
    *seq += 1;
    let (answer, _) = iq(
        s,
        &format!("count{seq}"),
        &format!(
            "<query xmlns='{MAM}' queryid='c{seq}'><set xmlns='{RSM}'><max>0</max></set></query>"
        ),
    )
    .await?;
    element_text(&answer, b"count")
        .and_then(|c| std::str::from_utf8(c).ok()?.trim().parse().ok())
        .ok_or_else(|| format!("no <count/> in {}", xml::snippet(&answer)))
}

/// The newest id of the archive, if any (XEP-0313 `<metadata/>`).
async fn newest_id(s: &mut Session) -> Result<Option<String>> {
    let (answer, _) = iq(s, "md", &format!("<metadata xmlns='{MAM}'/>")).await?;
    let Some(at) = xml::find(&answer, b"<end") else {
        return Ok(None);
    };
    Ok(xml::attr(&answer[at..], b"id").map(|id| String::from_utf8_lossy(id).into_owned()))
}

fn page_query(seq: usize, after_id: Option<&str>, after: Option<&str>, max: usize) -> String {
    let field = after_id
        .map(|id| format!("<field var='after-id'><value>{id}</value></field>"))
        .unwrap_or_default();
    let rsm_after = after
        .map(|id| format!("<after>{id}</after>"))
        .unwrap_or_default();
    format!(
        "<query xmlns='{MAM}' queryid='p{seq}'><x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>{MAM}</value></field>{field}</x>\
         <set xmlns='{RSM}'><max>{max}</max>{rsm_after}</set></query>"
    )
}

/// The recipient's reader: counts deliveries, returning each sender's window slot.
async fn receive(
    mut s: Session,
    total: u64,
    windows: Arc<Vec<Semaphore>>,
    senders: usize,
) -> Result<(Session, Instant)> {
    let mut got = 0u64;
    while got < total {
        let el = next_stanza(&mut s).await?;
        if xml::name(&el) != b"message" {
            continue;
        }
        if xml::attr(&el, b"type") == Some(b"error") {
            return Err(format!("message error: {}", xml::snippet(&el)));
        }
        let Some(body) = xml::child_text(&el, b"<body>", b"</body>") else {
            continue;
        };
        let j = std::str::from_utf8(body)
            .ok()
            .and_then(|b| b.split(' ').next()?.parse::<usize>().ok())
            .filter(|&j| j < senders);
        if let Some(j) = j {
            windows[j].add_permits(1);
            got += 1;
        }
    }
    Ok((s, Instant::now()))
}

async fn send_share(
    mut s: Session,
    j: usize,
    count: u64,
    to: String,
    windows: Arc<Vec<Semaphore>>,
) -> Result<Session> {
    for seq in 0..count {
        windows[j]
            .acquire()
            .await
            .map_err(|e| format!("window: {e}"))?
            .forget();
        s.send(
            format!("<message to='{to}' type='chat' id='a{j}-{seq}'><body>{j} {seq} archived benchmark message</body></message>")
                .as_bytes(),
        )
        .await?;
    }
    Ok(s)
}

pub async fn mam(a: MamArgs, nofile: Option<u64>) -> Result<()> {
    let c = &a.common;
    let senders = a.senders.max(1);
    let total = a.messages as u64;
    let recipient = c.user(1);
    let to = format!("{recipient}@{}", c.domain);
    let names: Vec<String> = (1..=senders + 1).map(|i| c.user(i)).collect();
    let cfg = c.login_cfg(true).await?;
    let mut logins = login_named(c, cfg, names, true).await;
    require_all(&logins)?;
    let login_info = login_json(&logins);
    let mut sessions = std::mem::take(&mut logins.sessions).into_iter();
    let mut rcpt = sessions.next().flatten().ok_or("no recipient session")?;
    let mut seq = 0;
    let count_before = archive_count(&mut rcpt, &mut seq).await?;
    let newest_before = newest_id(&mut rcpt).await?;
    eprintln!("mam: archive of {to} holds {count_before} messages before the run");

    // (a) write rate
    let windows: Arc<Vec<Semaphore>> = Arc::new(
        (0..senders)
            .map(|_| Semaphore::new(a.window.max(1)))
            .collect(),
    );
    let cpu0 = CpuSample::read(c.pid);
    let t0 = Instant::now();
    let reader = tokio::spawn(receive(rcpt, total, windows.clone(), senders));
    let mut set = JoinSet::new();
    for (j, s) in sessions.enumerate() {
        let s = s.ok_or("missing sender session")?;
        let share = total / senders as u64 + u64::from((j as u64) < total % senders as u64);
        set.spawn(send_share(s, j, share, to.clone(), windows.clone()));
    }
    let mut senders_done = Vec::new();
    while let Some(r) = set.join_next().await {
        senders_done.push(r.map_err(|e| format!("sender task: {e}"))??);
    }
    let (mut rcpt, t_delivered) = reader.await.map_err(|e| format!("reader: {e}"))??;
    let deadline = Instant::now() + Duration::from_secs_f64(a.archive_timeout);
    let mut polls = 0;
    let archived = loop {
        let n = archive_count(&mut rcpt, &mut seq).await?;
        polls += 1;
        if n >= count_before + total {
            break n - count_before;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {total} messages archived after {}s",
                n - count_before,
                a.archive_timeout
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let t_archived = Instant::now();
    let cpu1 = CpuSample::read(c.pid);
    let write_s = (t_archived - t0).as_secs_f64();
    let deliver_s = (t_delivered - t0).as_secs_f64();
    eprintln!(
        "mam: {total} messages delivered in {deliver_s:.2}s, archived in {write_s:.2}s ({:.0}/s; {polls} count polls)",
        total as f64 / write_s
    );

    // (b) catch-up from a fresh device
    let mut sync_cfg = c.login_cfg(false).await?;
    sync_cfg.resource = "sync".into();
    let (mut sync, _) = xmpp::login(&sync_cfg, &recipient).await?;
    let mut page_ns = Vec::new();
    let mut fetched = 0usize;
    let mut last: Option<String> = None;
    let tc = Instant::now();
    for page in 0.. {
        let q = match &last {
            // After the first page, RSM <after/> the previous page's last (with after-id the
            // same bound, either works; RSM is what every client does).
            Some(l) => page_query(page, None, Some(l), a.page),
            None => page_query(page, newest_before.as_deref(), None, a.page),
        };
        let tp = Instant::now();
        let (fin, results) = iq(&mut sync, &format!("page{page}"), &q).await?;
        page_ns.push(tp.elapsed().as_nanos() as u64);
        fetched += results;
        if complete(&fin) || results == 0 {
            break;
        }
        last = element_text(&fin, b"last").map(|l| String::from_utf8_lossy(l).into_owned());
        if last.is_none() {
            return Err(format!("page without <last/>: {}", xml::snippet(&fin)));
        }
    }
    let catchup_s = tc.elapsed().as_secs_f64();
    let pages = page_ns.len();
    eprintln!(
        "mam: catch-up of {fetched} messages in {pages} pages of {}: {:.3}s",
        a.page, catchup_s
    );
    let (cpu_stat_ms, cpu_sched_ms) = cpu1.ms_since(&cpu0);

    let mut res = base_json("mam", c, nofile);
    merge(&mut res, login_info);
    merge(
        &mut res,
        json!({
            "messages": total,
            "senders": senders,
            "window": a.window,
            "archive_count_before": count_before,
            "archived": archived,
            "delivered_s": deliver_s,
            "archived_s": write_s,
            "delivered_per_s": (total as f64 / deliver_s).round(),
            "archived_per_s": (total as f64 / write_s).round(),
            "archive_rows_per_s": (2.0 * total as f64 / write_s).round(),
            "server_cpu_ms_writes": cpu_sched_ms.or(cpu_stat_ms),
            "catchup": {
                "page_max": a.page,
                "pages": pages,
                "fetched": fetched,
                "total_s": (catchup_s * 1000.0).round() / 1000.0,
                "messages_per_s": (fetched as f64 / catchup_s).round(),
                "page_rtt": latency_json(&mut page_ns),
            },
            "loadavg_end": stats::loadavg(),
        }),
    );
    emit(&res, c.out.as_deref())?;
    for mut s in senders_done.into_iter().chain([rcpt, sync]) {
        let _ = s.send(b"</stream:stream>").await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_rsm_values_with_or_without_attributes() {
        let fin = b"<iq type='result' id='x'><fin xmlns='urn:xmpp:mam:2' complete='true'><set xmlns='http://jabber.org/protocol/rsm'><first index='0'>11</first><last>12</last><count>2</count></set></fin></iq>";
        assert_eq!(element_text(fin, b"first"), Some(&b"11"[..]));
        assert_eq!(element_text(fin, b"last"), Some(&b"12"[..]));
        assert_eq!(element_text(fin, b"count"), Some(&b"2"[..]));
        assert!(complete(fin));
        assert_eq!(element_text(b"<a><lastx>1</lastx></a>", b"last"), None);
    }
}
