//! XEP-0198 §5 resumption across connections: the state of a bound session that outlives its
//! connection, the registry of resumable sessions by SM id, and the detached ("hibernating")
//! session that waits for its client to come back.
//!
//! Every resumable session, live or detached, is owned by exactly one task, which holds the
//! receiving end of its registry slot. A resuming connection asks that task for the state
//! through the slot; the task hands it over and stops. That is the same whether the old
//! connection is already gone (a detached session) or still looks alive (a zombie TCP
//! connection after the phone changed networks), so there is one path for both.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use tokio::sync::{oneshot, watch, Notify};
use tokio::time::Instant;
use tracing::{debug, info, Instrument};

use super::context::StreamContext;
use super::csi::CsiState;
use super::sm::SmState;
use crate::router::session_queue::{self, QueueSender, TrySendError};
use crate::router::{Outbound, QueueReceiver, Router, SessionEnd};
use crate::stanza::{self, Kind, StanzaError};

/// How long a resuming connection waits for the owner of the state to hand it over.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(10);

/// Expired resumable sessions whose final `h` is remembered for `<failed h/>`.
const EXPIRED_KEPT: usize = 10_000;

/// A request for the state: the owner sends it back through the oneshot.
pub type Takeover = oneshot::Sender<Box<Bound>>;

/// The state of a bound session that is not tied to its connection.
#[derive(Debug)]
pub struct Bound {
    /// The router's id of the session (the router entry stays while detached).
    pub session_id: u64,
    pub jid: FullJid,
    pub rx: QueueReceiver<Outbound>,
    pub stalled: Arc<Notify>,
    /// Stream Management, once the client enabled it.
    pub sm: Option<Box<SmState>>,
    /// Client State Indication, once the client used it.
    pub csi: Option<Box<CsiState>>,
    /// Stanzas taken off `rx` but not written, oldest first: they go before what `rx` holds.
    pub pending: VecDeque<Element>,
    /// The registry slot of a resumable session; whoever holds it owns the state.
    pub slot: Option<Slot>,
}

impl Bound {
    pub fn new(
        session_id: u64,
        jid: FullJid,
        rx: QueueReceiver<Outbound>,
        stalled: Arc<Notify>,
    ) -> Bound {
        Bound {
            session_id,
            jid,
            rx,
            stalled,
            sm: None,
            csi: None,
            pending: VecDeque::new(),
            slot: None,
        }
    }

    /// The client's inbound count, for `<failed h/>` once the session is gone.
    pub(crate) fn inbound_h(&self) -> u32 {
        self.sm.as_ref().map_or(0, |sm| sm.inbound)
    }
}

/// A detached session a new connection took over (XEP-0198 `<resume/>`).
pub struct Resumed {
    pub bound: Box<Bound>,
    /// The client's count of what it received.
    pub h: u32,
    /// `<resumed/>` already went out (inline in SASL2's `<success/>`).
    pub announced: bool,
}

/// Ownership of one registry entry.
#[derive(Debug)]
pub struct Slot {
    pub id: String,
    generation: u64,
    /// Every resumable session holds one for its whole life, so it is the session queue (about
    /// a hundred bytes) rather than tokio's `mpsc` (a cache-padded channel and a first block of
    /// slots, allocated up front).
    pub requests: QueueReceiver<Takeover>,
    /// Changes when the node drains: a live session is asked to move to another node.
    moving: watch::Receiver<u64>,
}

/// What the owner of a live resumable session is asked.
pub enum SlotRequest {
    /// Hand the state over to a resuming connection.
    Takeover(Takeover),
    /// This node drains: end the stream with `<system-shutdown/>` and wait, detached, for the
    /// client to resume (on another node, which then asks this one for the session).
    Move,
}

struct Entry {
    user: BareJid,
    generation: u64,
    requests: QueueSender<Takeover>,
}

#[derive(Default)]
struct Expired {
    h: HashMap<String, (BareJid, u32)>,
    order: VecDeque<String>,
}

/// Resumable sessions by SM id, and a bounded memory of the ones that ended.
pub struct Resumption {
    entries: Mutex<HashMap<String, Entry>>,
    expired: Mutex<Expired>,
    generations: AtomicU64,
    moving: watch::Sender<u64>,
}

impl Default for Resumption {
    fn default() -> Self {
        Resumption {
            entries: Mutex::default(),
            expired: Mutex::default(),
            generations: AtomicU64::default(),
            moving: watch::channel(0).0,
        }
    }
}

impl Resumption {
    /// Makes the caller the owner of `id` (a new id, or one it just resumed).
    pub fn register(&self, id: String, user: BareJid) -> Slot {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = session_queue::channel(1);
        let entry = Entry {
            user,
            generation,
            requests: tx,
        };
        lock(&self.entries).insert(id.clone(), entry);
        Slot {
            id,
            generation,
            requests: rx,
            moving: self.moving.subscribe(),
        }
    }

    /// Asks every live resumable session to move to another node (see `SlotRequest::Move`);
    /// returns how many resumable sessions there are, live or already detached.
    pub fn ask_to_move(&self) -> usize {
        self.moving
            .send_modify(|round| *round = round.wrapping_add(1));
        self.len()
    }

    /// Forgets a session that ended for real; its final `h` is kept for a later `<failed/>`.
    /// False when `slot` no longer owned the id (a resumed session took it over).
    pub fn retire(&self, slot: &Slot, h: u32) -> bool {
        let mut entries = lock(&self.entries);
        let Some(entry) = entries.get(&slot.id) else {
            return false;
        };
        if entry.generation != slot.generation {
            return false;
        }
        let Some(entry) = entries.remove(&slot.id) else {
            return false;
        };
        drop(entries);
        let mut expired = lock(&self.expired);
        if expired.order.len() >= EXPIRED_KEPT {
            if let Some(oldest) = expired.order.pop_front() {
                expired.h.remove(&oldest);
            }
        }
        expired.order.push_back(slot.id.clone());
        expired.h.insert(slot.id.clone(), (entry.user, h));
        true
    }

    /// Takes the state of session `id` from its owner for `user`. `Err` carries the `h` to put
    /// in `<failed/>`, known when the session of that user expired recently.
    pub async fn take(&self, id: &str, user: &BareJid) -> Result<Box<Bound>, Option<u32>> {
        self.take_within(id, user, TAKEOVER_TIMEOUT).await
    }

    /// `take`, waiting at most `wait` for the owner to hand the state over.
    pub async fn take_within(
        &self,
        id: &str,
        user: &BareJid,
        wait: Duration,
    ) -> Result<Box<Bound>, Option<u32>> {
        let requests = lock(&self.entries)
            .get(id)
            .filter(|e| &e.user == user)
            .map(|e| e.requests.clone());
        let Some(requests) = requests else {
            return Err(self.expired_h(id, user));
        };
        let (tx, mut rx) = oneshot::channel();
        match requests.try_send(tx) {
            Ok(()) => {}
            // Another connection is resuming the same session right now; one of them wins,
            // and it is the one that asked first.
            Err(TrySendError::Full(_) | TrySendError::Closed(_)) => {
                return Err(self.expired_h(id, user));
            }
        }
        let handed = tokio::time::timeout(wait, &mut rx).await.map(Result::ok);
        match handed {
            Ok(Some(bound)) => Ok(bound),
            Ok(None) => Err(self.expired_h(id, user)),
            Err(_) => {
                // Closed first, so that the owner either handed the state over already (it is
                // taken here) or gets it back from its send: never dropped with the channel.
                rx.close();
                rx.try_recv().map_err(|_| self.expired_h(id, user))
            }
        }
    }

    fn expired_h(&self, id: &str, user: &BareJid) -> Option<u32> {
        lock(&self.expired)
            .h
            .get(id)
            .filter(|(owner, _)| owner == user)
            .map(|(_, h)| *h)
    }

    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Waits for a takeover request on an optional slot (never, without one).
pub async fn takeover_requested(slot: &mut Option<Slot>) -> Option<Takeover> {
    match slot {
        Some(slot) => slot.requests.recv().await,
        None => std::future::pending().await,
    }
}

/// `takeover_requested`, and the request to move away from a draining node, for a live
/// session (a detached one has nothing to move).
pub async fn requested(slot: &mut Option<Slot>) -> Option<SlotRequest> {
    let Some(slot) = slot else {
        return std::future::pending().await;
    };
    tokio::select! {
        request = slot.requests.recv() => request.map(SlotRequest::Takeover),
        Ok(()) = slot.moving.changed() => Some(SlotRequest::Move),
    }
}

/// Parks a resumable session whose connection broke: the router keeps queuing for it and its
/// presence stays until the client resumes or the timeout passes.
pub fn detach(ctx: Arc<StreamContext>, bound: Box<Bound>) {
    ctx.router.set_detached(&bound.jid, true);
    info!(jid = %bound.jid, "session detached, waiting for resumption");
    // Taken here, while the caller still holds its own, so shutdown never sees a gap.
    let alive = ctx.router.track_task();
    let counted = ctx.router.metrics().session_detached();
    // Still in the connection's span, so the session's later life is logged with it.
    tokio::spawn(
        async move {
            hibernate(ctx, bound).await;
            drop((alive, counted));
        }
        .in_current_span(),
    );
}

enum Wake {
    Takeover(Takeover),
    Stanza(Element),
    Stalled,
    /// Why, for the log, and how the session ended, for the end hooks.
    End(&'static str, SessionEnd),
}

async fn hibernate(ctx: Arc<StreamContext>, mut bound: Box<Bound>) {
    let timeout = bound.sm.as_ref().map_or(0, |sm| sm.max_secs);
    let deadline = Instant::now() + Duration::from_secs(timeout);
    // What was already waiting when the connection broke (a stalled client's full queue)
    // plus one more queue's worth: the bound the router's queue would have applied.
    let limit = bound.pending.len() + bound.rx.len() + ctx.config.limits.session_queue;
    // Held until the session resumes or ends; parking one too many ends the oldest.
    let mut parked = ctx.detached.park(&bound.jid.to_bare());
    let mut shutdown = ctx.router.shutdown_signal();
    let (why, end) = loop {
        let mut slot = bound.slot.take();
        let wake = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => Wake::End("resumption timeout", SessionEnd::ConnectionLost),
            // Ended as a timeout would end it: for the account, this is the stalest session.
            _ = parked.evicted() => Wake::End("too many detached sessions", SessionEnd::ConnectionLost),
            request = takeover_requested(&mut slot) => match request {
                Some(request) => Wake::Takeover(request),
                None => Wake::End("registry entry gone", SessionEnd::ByServer),
            },
            item = bound.rx.recv() => match item {
                Some(Outbound::Stanza(el)) => Wake::Stanza(*el),
                Some(Outbound::Shared(shared)) => Wake::Stanza(shared.0.element_to(&shared.1)),
                Some(Outbound::Replaced) => {
                    Wake::End("replaced by a new session", SessionEnd::ByServer)
                }
                Some(Outbound::Terminate(_, why)) => Wake::End(why, SessionEnd::ByServer),
                None => Wake::End("queue closed", SessionEnd::ByServer),
            },
            // Its client is told nothing (there is no connection): the resumption state dies
            // with the process, and the queue goes to offline storage.
            _ = shutdown.wait() => Wake::End("server shutdown", SessionEnd::ByServer),
            // A full queue (taken care of by draining) or a leftover wakeup from the live
            // connection: either way, nothing must stay stored to end the resumed session.
            _ = bound.stalled.notified() => Wake::Stalled,
        };
        bound.slot = slot;
        match wake {
            Wake::Takeover(request) => match request.send(bound) {
                Ok(()) => return,
                Err(back) => bound = back,
            },
            Wake::Stanza(el) => {
                bound.pending.push_back(el);
                if bound.pending.len() > limit {
                    break ("queue full while detached", SessionEnd::ConnectionLost);
                }
            }
            Wake::Stalled => {}
            Wake::End(why, end) => break (why, end),
        }
    };
    // Its place under the cap is free from here on, while the session is taken down.
    drop(parked);
    info!(jid = %bound.jid, why, "detached session ends");
    end_session(&ctx, *bound, Vec::new(), end).await;
}

/// Ends a bound session for real: unbinds it (session-end hooks run: unavailable presence,
/// rooms left), then deals with everything that never reached the client or was never
/// acknowledged, oldest first (see `dispose`).
pub async fn end_session(
    ctx: &StreamContext,
    mut bound: Bound,
    in_flight: Vec<Element>,
    why: SessionEnd,
) {
    let retired = match (bound.slot.take(), bound.inbound_h()) {
        (Some(slot), h) if ctx.resumption.retire(&slot, h) => Some((slot.id, h)),
        _ => None,
    };
    let resumable_for = bound.sm.as_ref().map_or(0, |sm| sm.max_secs);
    let router = &ctx.router;
    router.unbind(bound.session_id, &bound.jid, why).await;
    bound.rx.close();
    let mut left: Vec<Element> = Vec::new();
    if let Some(sm) = bound.sm.as_mut() {
        left.extend(sm.unacked.drain(..));
    }
    left.extend(in_flight);
    if let Some(csi) = bound.csi.as_mut() {
        left.extend(csi.take_held());
    }
    left.extend(bound.pending.drain(..));
    while let Some(item) = bound.rx.try_recv() {
        match item {
            Outbound::Stanza(el) => left.push(*el),
            Outbound::Shared(shared) => left.push(shared.0.element_to(&shared.1)),
            Outbound::Replaced | Outbound::Terminate(..) => {}
        }
    }
    if !left.is_empty() {
        debug!(jid = %bound.jid, stanzas = left.len(), "undelivered after session end");
    }
    dispose(router, left, bound.session_id).await;
    // After the stanzas are stored: a client told this count finds them.
    if let Some((id, h)) = retired {
        let user = bound.jid.to_bare();
        super::cluster_resume::remember_ended(ctx, &id, &user, h, resumable_for).await;
    }
}

/// RFC 6120 §10 / XEP-0198 §5 for stanzas a session never delivered: messages are delivered
/// again, now that the session is gone (another resource or offline storage takes them); IQ
/// requests get `<service-unavailable/>` so their sender is not left waiting; presence and the
/// rest are dropped (presence is state, the next broadcast supersedes it). `ended`: the
/// session's id, which tells the router which other sessions already hold a copy.
pub async fn dispose(router: &Arc<Router>, stanzas: Vec<Element>, ended: u64) {
    for el in stanzas {
        match Kind::of(&el) {
            Some(Kind::Message) => {
                let Some(to) = el.attr("to").and_then(|t| Jid::new(t).ok()) else {
                    continue;
                };
                if router.is_shutting_down() {
                    // Straight to storage, in this session's order: delivering again would
                    // queue it behind later messages.
                    router.store_offline(&to.to_bare(), el).await;
                } else {
                    router.redeliver(to, el, ended).await;
                }
            }
            Some(Kind::Iq) if matches!(stanza::stanza_type(&el), "get" | "set") => {
                router.bounce(&el, StanzaError::service_unavailable());
            }
            _ => {}
        }
    }
}
