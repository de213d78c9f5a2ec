//! The outbound links: one per (local domain, remote domain), opened when the first stanza
//! for the pair comes and kept while it is used. Stanzas wait in the link's bounded queue
//! while it connects, in the order they came. A domain that could not be reached is not
//! tried again for a while (`s2s.retry_after_secs`, doubling): its stanzas are bounced at once
//! with the reason, rather than each waiting for another connection attempt to fail.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jid::Jid;
use minidom::Element;
use tokio::sync::mpsc;
use tracing::{debug, info_span, Instrument};

use super::{outbound, S2s};
use crate::router::Router;
use crate::stanza::{Condition, ErrorType, Kind, StanzaError};

/// Which link a stanza takes: from which of our domains, to which other one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Pair {
    pub local: String,
    pub remote: String,
}

struct Link {
    id: u64,
    queue: mpsc::Sender<Element>,
    /// A stream another server opened and that carries ours back (XEP-0288) speaks for its
    /// `to` domain only; stanzas from our other domains take links of their own.
    only_from: Option<String>,
}

/// Why a remote domain cannot be reached now.
#[derive(Clone, Debug)]
pub(super) struct Unreachable {
    pub timeout: bool,
    pub reason: String,
}

impl Unreachable {
    /// RFC 6120 §8.3.3.15/16: the remote server could not be found, or did not answer in time.
    pub fn stanza_error(&self, remote: &str) -> StanzaError {
        let condition = if self.timeout {
            Condition::RemoteServerTimeout
        } else {
            Condition::RemoteServerNotFound
        };
        StanzaError::new(ErrorType::Cancel, condition)
            .with_text(format!("cannot reach {remote}: {}", self.reason))
    }
}

struct Backoff {
    until: Instant,
    failures: u32,
    why: Unreachable,
}

#[derive(Default)]
pub(super) struct Pool {
    links: Mutex<HashMap<Pair, Link>>,
    backoff: Mutex<HashMap<String, Backoff>>,
    next_id: AtomicU64,
}

/// Hands a stanza for another domain to its link, opening the link if there is none.
pub(super) fn send(s2s: &Arc<S2s>, router: &Arc<Router>, kind: Kind, to: &Jid, stanza: Element) {
    let remote = to.domain().as_str().to_owned();
    let from_domain = match stanza.attr("from").and_then(|f| Jid::new(f).ok()) {
        Some(from) if s2s.serves(router, from.domain().as_str()) => from.domain().to_string(),
        // Only our own stanzas leave, stamped by the router: anything else is a bug upstream.
        _ => {
            debug!(%to, "stanza for another domain without a local sender dropped");
            return;
        }
    };
    if let Some(why) = s2s.pool.unreachable(&remote) {
        bounce(router, kind, &stanza, why.stanza_error(&remote));
        return;
    }
    // One link per hosted domain: its services (`conference.`) ride on it, authenticated
    // with dialback piggybacking (XEP-0220 §2.5).
    let mut pair = Pair {
        local: s2s.owner(&from_domain),
        remote,
    };
    if !s2s.pool.carries(&pair, &from_domain) {
        pair.local = from_domain;
    }
    send_on(s2s, router, kind, pair, stanza);
}

/// `send` on the link of `pair`, opened if needed.
pub(super) fn send_on(
    s2s: &Arc<S2s>,
    router: &Arc<Router>,
    kind: Kind,
    pair: Pair,
    stanza: Element,
) {
    let mut stanza = stanza;
    // A link found closed (it just ended) is replaced once.
    for _ in 0..2 {
        let queue = s2s.pool.queue(s2s, router, &pair);
        match queue.try_send(stanza) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(back)) => {
                let error = StanzaError::new(ErrorType::Wait, Condition::ResourceConstraint)
                    .with_text(format!(
                        "too many stanzas waiting for the connection to {}",
                        pair.remote
                    ));
                bounce(router, kind, &back, error);
                return;
            }
            Err(mpsc::error::TrySendError::Closed(back)) => {
                s2s.pool.forget_closed(&pair);
                stanza = back;
            }
        }
    }
    bounce(
        router,
        kind,
        &stanza,
        StanzaError::new(ErrorType::Wait, Condition::RemoteServerTimeout)
            .with_text(format!("the connection to {} keeps closing", pair.remote)),
    );
}

/// Tells the sender: presence is not answered with errors here (RFC 6121 leaves it to
/// presence's own rules), everything else is.
pub(super) fn bounce(router: &Router, kind: Kind, stanza: &Element, error: StanzaError) {
    if kind != Kind::Presence {
        router.bounce(stanza, error);
    }
}

impl Pool {
    fn queue(&self, s2s: &Arc<S2s>, router: &Arc<Router>, pair: &Pair) -> mpsc::Sender<Element> {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(link) = links.get(pair) {
            if !link.queue.is_closed() {
                return link.queue.clone();
            }
        }
        let (queue, waiting) = mpsc::channel(s2s.config.s2s.queue_limit.max(1));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        links.insert(
            pair.clone(),
            Link {
                id,
                queue: queue.clone(),
                only_from: None,
            },
        );
        // A root span: the link outlives the session whose stanza happened to open it.
        let span = info_span!(
            parent: None,
            "s2s",
            direction = "out",
            local = %pair.local,
            remote = %pair.remote,
            auth = tracing::field::Empty,
        );
        tokio::spawn(
            outbound::run_link(s2s.clone(), router.clone(), pair.clone(), id, waiting)
                .instrument(span),
        );
        queue
    }

    /// A queue for `pair` whose stanzas a stream another server opened will carry back
    /// (XEP-0288), if no link for the pair is open: its id and receiving end.
    pub(super) fn adopt(
        &self,
        pair: &Pair,
        capacity: usize,
    ) -> Option<(u64, mpsc::Receiver<Element>)> {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        if links.get(pair).is_some_and(|link| !link.queue.is_closed()) {
            return None;
        }
        let (queue, waiting) = mpsc::channel(capacity);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let only_from = Some(pair.local.clone());
        links.insert(
            pair.clone(),
            Link {
                id,
                queue,
                only_from,
            },
        );
        Some((id, waiting))
    }

    /// Whether the open link of `pair` (if any) can carry stanzas from `from_domain`.
    fn carries(&self, pair: &Pair, from_domain: &str) -> bool {
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        match links.get(pair) {
            Some(link) if !link.queue.is_closed() => link
                .only_from
                .as_deref()
                .is_none_or(|only| only == from_domain),
            _ => true,
        }
    }

    fn forget_closed(&self, pair: &Pair) {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        if links.get(pair).is_some_and(|link| link.queue.is_closed()) {
            links.remove(pair);
        }
    }

    /// The link `id` ends: new stanzas for its pair open another one.
    pub(super) fn remove(&self, pair: &Pair, id: u64) {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        if links.get(pair).is_some_and(|link| link.id == id) {
            links.remove(pair);
        }
    }

    /// Links open now (tests and the admin commands ask).
    /// The (local, remote) pairs with a link now, sorted.
    pub(super) fn pairs(&self) -> Vec<(String, String)> {
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        let mut pairs: Vec<_> = links
            .keys()
            .map(|pair| (pair.local.clone(), pair.remote.clone()))
            .collect();
        pairs.sort();
        pairs
    }

    pub(super) fn len(&self) -> usize {
        self.links.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn unreachable(&self, remote: &str) -> Option<Unreachable> {
        let backoff = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
        backoff
            .get(remote)
            .filter(|b| b.until > Instant::now())
            .map(|b| b.why.clone())
    }

    pub(super) fn failed(&self, remote: &str, why: Unreachable, base: Duration) {
        let mut backoff = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
        let failures = backoff.get(remote).map_or(0, |b| b.failures) + 1;
        let wait = base.saturating_mul(1 << (failures - 1).min(4));
        backoff.insert(
            remote.to_owned(),
            Backoff {
                until: Instant::now() + wait,
                failures,
                why,
            },
        );
    }

    pub(super) fn succeeded(&self, remote: &str) {
        self.backoff
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(remote);
    }
}
