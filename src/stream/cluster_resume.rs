//! XEP-0198 resumption on a cluster, and the draining of a node.
//!
//! The state of a resumable session (its unacked stanzas, its router queue) lives in the
//! process that served it and cannot move: a client that comes back through the load
//! balancer to another node gets `<failed h/>` instead of `<resumed/>`, and nothing is lost
//! on the way. The id names the node that holds the session (`sm::resumption_id`); the node
//! the client reached asks that one on `ASK_TOPIC`. The holder ends the session as the
//! resumption timeout would (what the client's `h` does not acknowledge goes to offline
//! storage, or to the account's other resources) and only then answers with its count of the
//! client's stanzas, so the client's fresh session finds every unacknowledged stanza stored.
//!
//! Every node notes in Redis the final count of each resumable session that ends there
//! (after storing its unacknowledged stanzas), for the resumption timeout: a client that
//! comes back after its node stopped gracefully, or restarted, gets `<failed h='…'/>` from
//! that note without waiting on a holder that cannot answer. A holder killed outright writes
//! nothing: the client gets `<failed/>` without `h`, and what the dead node held
//! unacknowledged died with it.
//!
//! Draining (`corvid ctl cluster drain`) stops new logins on a node and asks its live
//! resumable sessions to go (`<system-shutdown/>`); they stay detached here, and their clients
//! resume elsewhere by the path above.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use jid::BareJid;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::context::StreamContext;
use super::resumption::{self, Bound};
use super::sm;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::router::{ClusterLink, ClusterTopic, Module, NodeId, Registry, Router, SessionEnd};

/// Another node asks this one to end a resumable session whose client came back there.
const ASK_TOPIC: &str = "sm-resume";
/// The answer: this node's count of the client's stanzas, when the session was found.
const ANSWER_TOPIC: &str = "sm-resume-answer";

/// How long the resuming client waits for the holder's answer before `<failed/>` without
/// `h`. The holder needs one round trip through Redis and the offline writes of the session.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// How long the holder waits for the session's task to hand the state over (it is a select
/// away, detached or live): shorter than `ANSWER_WAIT`, so that the answer still counts.
const HANDOVER_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug, Serialize, Deserialize)]
struct Ask {
    /// The asker's number for this question, echoed in the answer.
    id: u64,
    previd: String,
    /// The account the resuming client authenticated as: only its own sessions are found.
    user: String,
    /// The client's count of the stanzas it handled.
    h: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct Answer {
    id: u64,
    /// The holder's count of the client's stanzas; None when there is no such session of
    /// that user (never was, or too long ago).
    h: Option<u32>,
}

/// The registration of the two topics (and of the cluster's ad-hoc command), on a node of a
/// cluster only.
pub struct ClusterResume;

/// The module, when `config` makes this server a node of a cluster.
pub fn module(config: &Config) -> Option<Arc<dyn Module>> {
    config
        .cluster
        .redis_url()
        .map(|_| Arc::new(ClusterResume) as Arc<dyn Module>)
}

impl Module for ClusterResume {
    fn name(&self) -> &'static str {
        "cluster-resume"
    }

    fn register(self: Arc<Self>, registry: &mut Registry) {
        let desk = registry.service::<Desk>();
        registry.cluster_topic(ASK_TOPIC, Arc::new(Asked(desk.clone())));
        registry.cluster_topic(ANSWER_TOPIC, Arc::new(Answered(desk)));
        crate::control::cluster::register(registry);
    }
}

/// A question out: the node asked, and where its answer goes.
type Waiting = (NodeId, oneshot::Sender<Option<u32>>);

/// This node's side of the conversation: where its resumable sessions are, and the
/// questions it waits on.
#[derive(Default)]
pub struct Desk {
    /// The streams' shared state, which holds the resumption table. The router is built
    /// before it, so streams leave it here when they first make a session resumable: a node
    /// that never did has nothing another node could ask for.
    streams: OnceLock<Weak<StreamContext>>,
    waiting: Mutex<HashMap<u64, Waiting>>,
    questions: AtomicU64,
}

impl Desk {
    fn streams(&self) -> Option<Arc<StreamContext>> {
        self.streams.get().and_then(Weak::upgrade)
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waiting>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The node behind the router's cluster link, on a node of a cluster.
pub fn cluster_node(router: &Router) -> Option<&Cluster> {
    let link: &dyn ClusterLink = router.cluster()?.as_ref();
    let link: &dyn Any = link;
    link.downcast_ref::<Cluster>()
}

/// This node's number, for the resumption ids it makes; None on a single node.
pub fn node_number(router: &Router) -> Option<u16> {
    router.cluster().map(|link| link.node().0)
}

/// Whether this node is draining: it takes no new logins.
pub fn is_draining(router: &Router) -> bool {
    cluster_node(router).is_some_and(Cluster::is_draining)
}

/// Called where a session becomes resumable: from now on other nodes may ask for it.
pub fn attach(ctx: &Arc<StreamContext>) {
    if ctx.router.cluster().is_none() {
        return;
    }
    if let Some(desk) = ctx.router.service::<Desk>() {
        if desk.streams.get().is_none() {
            let _ = desk.streams.set(Arc::downgrade(ctx));
        }
    }
}

/// Asks every live resumable session of this node to go (see `SlotRequest::Move`); returns
/// how many resumable sessions the node has.
pub fn ask_to_move(router: &Router) -> usize {
    router
        .service::<Desk>()
        .and_then(|desk| desk.streams())
        .map_or(0, |streams| streams.resumption.ask_to_move())
}

/// XEP-0198 §5 `<resume previd h/>` from `user`: the session itself when this node holds it;
/// otherwise `Err` with the `h` for `<failed/>` (after the node that held it ended it, when
/// another node did).
pub async fn take(
    ctx: &StreamContext,
    previd: &str,
    user: &BareJid,
    h: u32,
) -> Result<Box<Bound>, Option<u32>> {
    let Some(link) = ctx.router.cluster() else {
        return ctx.resumption.take(previd, user).await;
    };
    let taken = match sm::node_of_id(previd).map(NodeId) {
        Some(holder) if holder != link.node() => {
            // A session that ended already (its node stopped, say) needs no question.
            if let Some(known) = ended_h(&ctx.router, previd, user).await {
                return Err(Some(known));
            }
            Err(ask(&ctx.router, link, holder, previd, user, h).await)
        }
        _ => ctx.resumption.take(previd, user).await,
    };
    match taken {
        // Not known here or by its holder: an earlier process of either may have ended it.
        Err(None) => Err(ended_h(&ctx.router, previd, user).await),
        other => other,
    }
}

/// The count noted in Redis for the ended session `previd` of `user`.
async fn ended_h(router: &Router, previd: &str, user: &BareJid) -> Option<u32> {
    let cluster = cluster_node(router)?;
    match cluster.ended_session_h(previd, user).await {
        Ok(h) => h,
        Err(e) => {
            warn!(error = %e, "could not read the count of an ended session from Redis");
            None
        }
    }
}

/// Called where a resumable session of `user` ended for good with `h` stanzas of its client
/// handled: any node can tell a client that resumes within `resumable_secs`.
pub async fn remember_ended(
    ctx: &StreamContext,
    previd: &str,
    user: &BareJid,
    h: u32,
    resumable_secs: u64,
) {
    let Some(cluster) = cluster_node(&ctx.router) else {
        return;
    };
    // Redis out of reach: not worth a wait per ending session; a client that resumes on
    // another node then gets `<failed/>` without `h`.
    if resumable_secs == 0 || !cluster.is_connected() {
        debug!(
            previd,
            "count of an ended session not noted: Redis out of reach"
        );
        return;
    }
    let ttl = Duration::from_secs(resumable_secs);
    match cluster.remember_ended_session(previd, user, h, ttl).await {
        Ok(()) => debug!(previd, h, "count of an ended session noted in Redis"),
        Err(e) => warn!(error = %e, "could not note the count of an ended session in Redis"),
    }
}

/// Asks `holder` to end the session and waits (bounded) for its count.
async fn ask(
    router: &Router,
    link: &Arc<dyn ClusterLink>,
    holder: NodeId,
    previd: &str,
    user: &BareJid,
    h: u32,
) -> Option<u32> {
    if !link.is_alive(holder) {
        debug!(node = holder.0, "resumption id of a node that is gone");
        return None;
    }
    let desk = router.service::<Desk>()?;
    let id = desk.questions.fetch_add(1, Ordering::Relaxed);
    let ask = Ask {
        id,
        previd: previd.to_owned(),
        user: user.to_string(),
        h,
    };
    let payload = serde_json::to_vec(&ask).ok()?;
    let (tx, rx) = oneshot::channel();
    desk.waiting().insert(id, (holder, tx));
    let answer = if link.send(holder, ASK_TOPIC, payload) {
        tokio::time::timeout(ANSWER_WAIT, rx).await.ok()
    } else {
        None
    };
    desk.waiting().remove(&id);
    match answer {
        Some(Ok(h)) => h,
        _ => {
            warn!(
                node = holder.0,
                "no answer about a session to resume from its node"
            );
            None
        }
    }
}

/// Receives questions from nodes that a client came back to.
struct Asked(Arc<Desk>);

#[async_trait]
impl ClusterTopic for Asked {
    async fn received(&self, router: &Arc<Router>, from: NodeId, payload: Vec<u8>) {
        let ask: Ask = match serde_json::from_slice(&payload) {
            Ok(ask) => ask,
            Err(e) => {
                warn!(error = %e, node = from.0, "unreadable resumption question");
                return;
            }
        };
        let desk = self.0.clone();
        let router = router.clone();
        // Off the link's receiving task: ending a session writes to storage.
        tokio::spawn(async move {
            let h = end_for_resumption_elsewhere(&desk, &ask).await;
            let answer = Answer { id: ask.id, h };
            let sent = serde_json::to_vec(&answer)
                .ok()
                .zip(router.cluster())
                .is_some_and(|(payload, link)| link.send(from, ANSWER_TOPIC, payload));
            if !sent {
                warn!(node = from.0, "could not answer a resumption question");
            }
        });
    }
}

/// Ends the session `ask` names, if it is one of the asking user's: the client's `h`
/// acknowledges what it got, the rest is handled as at the resumption timeout.
async fn end_for_resumption_elsewhere(desk: &Desk, ask: &Ask) -> Option<u32> {
    let streams = desk.streams()?;
    let user = BareJid::new(&ask.user).ok()?;
    // Shutdown waits for the offline writes below.
    let _alive = streams.router.track_task();
    let taken = streams
        .resumption
        .take_within(&ask.previd, &user, HANDOVER_WAIT)
        .await;
    let mut bound = match taken {
        Ok(bound) => bound,
        // Ended already (timed out, say): its count is remembered, its stanzas stored.
        Err(known) => return known,
    };
    if let Some(sm) = bound.sm.as_mut() {
        if let Err(too_high) = sm.ack(ask.h) {
            // Nothing is dropped on a count that cannot be right: a duplicate rather than a gap.
            debug!(
                h = too_high.h,
                sent = too_high.sent,
                "resuming client's h is too high"
            );
        }
    }
    let h = bound.inbound_h();
    info!(jid = %bound.jid, "session ends: its client resumes on another node");
    resumption::end_session(&streams, *bound, Vec::new(), SessionEnd::ConnectionLost).await;
    Some(h)
}

/// Receives the answers to this node's questions.
struct Answered(Arc<Desk>);

#[async_trait]
impl ClusterTopic for Answered {
    async fn received(&self, _router: &Arc<Router>, from: NodeId, payload: Vec<u8>) {
        let answer: Answer = match serde_json::from_slice(&payload) {
            Ok(answer) => answer,
            Err(e) => {
                warn!(error = %e, node = from.0, "unreadable resumption answer");
                return;
            }
        };
        let mut waiting = self.0.waiting();
        if waiting
            .get(&answer.id)
            .is_some_and(|(asked, _)| *asked == from)
        {
            if let Some((_, tx)) = waiting.remove(&answer.id) {
                let _ = tx.send(answer.h);
            }
        }
    }
}
