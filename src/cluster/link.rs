//! The two connections to Redis every node holds: one publishing (what this node tells the
//! others, in order, pipelined), one subscribed (what they tell it).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use super::wire::{Entry, Envelope, Event};
use super::{Cluster, ClusterError};
use jid::FullJid;

use crate::router::{Location, NodeId, Outbound, SharedStanza};

/// How long one Redis command may take before the link counts as down.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a node waits before connecting again after losing Redis.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// The most items written in one pipeline.
const BATCH: usize = 512;

/// Removes a session from a node's hash only if it is still the one with this sequence
/// number: the cleanup of a session that was replaced never removes its replacement.
const COMPARE_AND_DELETE: &str = "local v = redis.call('HGET', KEYS[1], ARGV[1]) \
    if v and string.match(v, '^(%d+)') == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end \
    return 0";

pub enum Outgoing {
    /// A change to this node's sessions.
    Event(Event),
    /// An envelope for one node; `counted` in the link's queue limit (acknowledgements are
    /// not).
    Send {
        node: NodeId,
        counted: bool,
        bytes: Vec<u8>,
    },
    /// A stanza for a session on `node`, numbered when written.
    Stanza {
        node: NodeId,
        to: FullJid,
        xml: Vec<u8>,
    },
    /// A stanza many sessions get: those on one node share one envelope.
    Shared {
        node: NodeId,
        to: FullJid,
        stanza: Arc<SharedStanza>,
    },
    /// An envelope for every node.
    Broadcast(Vec<u8>),
    /// An `Awaited` envelope numbered `id` for every node: how many subscribers Redis handed
    /// it to goes to `Cluster::confirmations`.
    AwaitedBroadcast { id: u64, bytes: Vec<u8> },
    /// Write this node's sessions again, whole (after Redis lost them or a write failed).
    Republish,
    /// Leave the cluster (shutdown), then say so.
    Farewell(oneshot::Sender<()>),
    /// `Shared` items of one batch gathered per node and stanza (made by the writer only).
    Grouped {
        node: NodeId,
        to: Vec<FullJid>,
        stanza: Arc<SharedStanza>,
    },
}

/// Gathers the `Shared` items of a batch for the same node and the same stanza into one
/// `Grouped`, where the first of them was: a room's message fanned out to a hundred
/// occupants becomes one publish per node. Nothing for a recipient moves later than it was
/// queued, so what one session receives stays in order.
fn group_shared(items: &mut Vec<Outgoing>) {
    if !items.iter().any(|i| matches!(i, Outgoing::Shared { .. })) {
        return;
    }
    let mut out: Vec<Outgoing> = Vec::with_capacity(items.len());
    // (node, stanza) -> index of its `Grouped` in `out`.
    let mut groups: std::collections::HashMap<(NodeId, *const SharedStanza), usize> =
        std::collections::HashMap::new();
    for item in items.drain(..) {
        match item {
            Outgoing::Shared { node, to, stanza } => {
                let key = (node, Arc::as_ptr(&stanza));
                match groups.get(&key) {
                    Some(&at) => {
                        if let Some(Outgoing::Grouped { to: list, .. }) = out.get_mut(at) {
                            list.push(to);
                        }
                    }
                    None => {
                        groups.insert(key, out.len());
                        out.push(Outgoing::Grouped {
                            node,
                            to: vec![to],
                            stanza,
                        });
                    }
                }
            }
            other => out.push(other),
        }
    }
    *items = out;
}

/// Writes what this node has to say, in order, batching whatever queued meanwhile.
pub async fn write(cluster: Arc<Cluster>, mut outbox: mpsc::UnboundedReceiver<Outgoing>) {
    let mut conn = cluster.commands.clone();
    let mut batch = Vec::with_capacity(BATCH);
    while outbox.recv_many(&mut batch, BATCH).await > 0 {
        let mut pipe = redis::pipe();
        // What each reply of the pipeline answers, in order.
        let mut sent: Vec<Published> = Vec::new();
        let mut farewell = None;
        let mut items = std::mem::take(&mut batch);
        group_shared(&mut items);
        for item in items {
            match item {
                Outgoing::Event(event) => add_event(&cluster, &mut pipe, &event),
                Outgoing::Send {
                    node,
                    counted,
                    bytes,
                } => {
                    if counted {
                        cluster.queued.fetch_sub(1, Ordering::Relaxed);
                    }
                    pipe.publish(cluster.keys.node_channel(node), bytes.as_slice());
                    sent.push(Published::ToNode(node, None, bytes));
                }
                Outgoing::Stanza { node, to, xml } => {
                    cluster.queued.fetch_sub(1, Ordering::Relaxed);
                    let seq = cluster.delivery.next(node);
                    let from = cluster.me;
                    let bytes = Envelope::Stanza { from, seq, to, xml }.encode();
                    pipe.publish(cluster.keys.node_channel(node), bytes.as_slice());
                    sent.push(Published::ToNode(node, Some(seq), bytes));
                }
                Outgoing::Shared { .. } => {}
                Outgoing::Grouped { node, to, stanza } => {
                    cluster.queued.fetch_sub(to.len(), Ordering::Relaxed);
                    let seq = cluster.delivery.next(node);
                    let xml = crate::xml::to_bytes(&stanza.element);
                    let from = cluster.me;
                    let bytes = Envelope::Group { from, seq, to, xml }.encode();
                    pipe.publish(cluster.keys.node_channel(node), bytes.as_slice());
                    sent.push(Published::ToNode(node, Some(seq), bytes));
                }
                Outgoing::Broadcast(bytes) => {
                    pipe.publish(cluster.keys.all_channel(), bytes).ignore();
                }
                Outgoing::AwaitedBroadcast { id, bytes } => {
                    pipe.publish(cluster.keys.all_channel(), bytes);
                    sent.push(Published::Awaited(id));
                }
                Outgoing::Republish => add_republish(&cluster, &mut pipe),
                Outgoing::Farewell(done) => {
                    let me = cluster.me;
                    pipe.del(cluster.keys.alive(me)).ignore();
                    pipe.del(cluster.keys.node(me)).ignore();
                    pipe.del(cluster.keys.sessions(me)).ignore();
                    pipe.srem(cluster.keys.nodes(), me.0).ignore();
                    farewell = Some(done);
                }
            }
        }
        // The queue shrank: senders held back by a congested link may go on.
        cluster.wake_senders();
        let replies: Result<Vec<i64>, _> =
            match tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async(&mut conn)).await {
                Ok(result) => result.map_err(ClusterError::from),
                Err(_) => Err(ClusterError::Redis(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "timed out",
                )))),
            };
        match replies {
            Ok(receivers) => {
                for (published, receivers) in sent.into_iter().zip(receivers) {
                    match published {
                        Published::Awaited(id) => cluster
                            .confirmations
                            .reached(id, usize::try_from(receivers).unwrap_or(0)),
                        Published::ToNode(node, _, bytes) if receivers == 0 => {
                            cluster.node_unreachable(node);
                            cluster.undeliverable(node, bytes);
                        }
                        Published::ToNode(node, Some(seq), bytes) => {
                            cluster
                                .delivery
                                .track(node, seq, bytes, cluster.config.queue_limit);
                        }
                        Published::ToNode(_, None, _) => {}
                    }
                }
            }
            Err(e) => {
                if !cluster.dirty.swap(true, Ordering::Relaxed) {
                    error!(error = %e, "cluster: writing to Redis failed; deliveries to other nodes are handled as undeliverable until it is back");
                }
                for published in sent {
                    match published {
                        Published::ToNode(node, _, bytes) => {
                            cluster.node_unreachable(node);
                            cluster.undeliverable(node, bytes);
                        }
                        Published::Awaited(id) => cluster.confirmations.abandon(id),
                    }
                }
            }
        }
        if let Some(done) = farewell {
            let _ = done.send(());
        }
    }
}

/// What one reply of the writer's pipeline is about.
enum Published {
    /// An envelope for one node, with its number when it is a tracked stanza.
    ToNode(NodeId, Option<u64>, Vec<u8>),
    /// An `Awaited` broadcast, by number.
    Awaited(u64),
}

fn add_event(cluster: &Cluster, pipe: &mut redis::Pipeline, event: &Event) {
    let sessions = cluster.keys.sessions(cluster.me);
    match event {
        Event::Set { jid, entry, .. } => {
            pipe.hset(&sessions, jid.as_str(), entry.encode()).ignore();
        }
        Event::Unbound { jid, seq, .. } => {
            pipe.cmd("EVAL")
                .arg(COMPARE_AND_DELETE)
                .arg(1)
                .arg(&sessions)
                .arg(jid.as_str())
                .arg(seq.to_string())
                .ignore();
        }
    }
    pipe.publish(cluster.keys.directory_channel(), event.encode())
        .ignore();
}

/// This node's sessions, whole: the hash rewritten and each one announced, so that a node
/// whose snapshot missed them learns them from the channel.
fn add_republish(cluster: &Cluster, pipe: &mut redis::Pipeline) {
    let me = cluster.me;
    pipe.del(cluster.keys.sessions(me)).ignore();
    pipe.sadd(cluster.keys.nodes(), me.0).ignore();
    let Some(local) = cluster.local() else {
        return;
    };
    local.each_local(&mut |resource| {
        let event = Event::Set {
            node: me,
            jid: resource.jid.clone(),
            entry: Entry {
                seq: resource.seq,
                availability: resource.availability,
                flags: resource.flags,
            },
        };
        add_event(cluster, pipe, &event);
    });
}

/// Listens to the other nodes; after every (re)connection, rebuilds the mirror from Redis.
pub async fn subscribe(cluster: Arc<Cluster>) {
    // Until the sessions this node's number left in Redis before a restart are ended.
    let mut previous_life_swept = false;
    let mut reported = false;
    loop {
        match listen(&cluster, &mut previous_life_swept).await {
            Ok(()) => {}
            Err(e) => {
                if cluster.connected.load(Ordering::Relaxed) || !reported {
                    error!(error = %e, "cluster: no Redis; serving this node's sessions only until it is back");
                    reported = true;
                }
            }
        }
        if cluster.connected.swap(false, Ordering::Relaxed) {
            // No more waiting for room: what does not fit is undeliverable now.
            cluster.room.notify_waiters();
            // Nothing reaches the other nodes now: routing must not choose their sessions,
            // and no acknowledgement will come for what they had not confirmed.
            cluster.mirror.clear();
            for node in cluster.delivery.nodes() {
                cluster.give_up_on(node);
            }
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

async fn listen(
    cluster: &Arc<Cluster>,
    previous_life_swept: &mut bool,
) -> Result<(), ClusterError> {
    let mut pubsub = cluster.client.get_async_pubsub().await?;
    pubsub.subscribe(cluster.keys.directory_channel()).await?;
    pubsub
        .subscribe(cluster.keys.node_channel(cluster.me))
        .await?;
    pubsub.subscribe(cluster.keys.all_channel()).await?;
    let mut previous_life = Vec::new();
    if !*previous_life_swept {
        previous_life = super::liveness::take_previous_life(cluster).await?;
        *previous_life_swept = true;
    }
    let _ = cluster.outbox.send(Outgoing::Republish);
    cluster.dirty.store(false, Ordering::Relaxed);
    rebuild_mirror(cluster).await?;
    if let Some(cache) = cluster.roster_cache.get() {
        // Writes the other nodes announced while this one was not listening went unheard.
        cache.forget_all();
    }
    cluster.connected.store(true, Ordering::Relaxed);
    info!(
        node = cluster.me.0,
        "cluster: connected to Redis, directory rebuilt"
    );
    // Off this task: the session ends route through the link, whose subscription this task
    // must go on reading.
    if !previous_life.is_empty() {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            super::liveness::end_previous_life(&cluster, &previous_life).await;
        });
    }
    let directory = cluster.keys.directory_channel();
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        if message.get_channel_name() == directory {
            apply_event(cluster, message.get_payload_bytes());
        } else {
            match Envelope::decode(message.get_payload_bytes()) {
                Ok(envelope) if envelope_from(&envelope) != cluster.me => {
                    cluster.received(envelope).await;
                }
                // This node's own awaited broadcast: it applied it before sending.
                Ok(Envelope::Awaited { id, .. }) => cluster.confirmations.applied(id),
                Ok(_) => {}
                Err(e) => warn!(error = %e, "cluster: unreadable envelope"),
            }
        }
    }
    Err(ClusterError::Redis(redis::RedisError::from((
        redis::ErrorKind::Io,
        "subscription closed",
    ))))
}

fn envelope_from(envelope: &Envelope) -> NodeId {
    match envelope {
        Envelope::Stanza { from, .. }
        | Envelope::Group { from, .. }
        | Envelope::Ack { from, .. }
        | Envelope::Replaced { from, .. }
        | Envelope::Topic { from, .. }
        | Envelope::Awaited { from, .. }
        | Envelope::Applied { from, .. } => *from,
    }
}

fn apply_event(cluster: &Cluster, payload: &[u8]) {
    let event = match std::str::from_utf8(payload)
        .map_err(|_| super::wire::WireError::Malformed("not UTF-8"))
        .and_then(Event::decode)
    {
        Ok(event) => event,
        Err(e) => {
            warn!(error = %e, "cluster: unreadable directory event");
            return;
        }
    };
    if event.node() == cluster.me {
        return;
    }
    match event {
        Event::Set { node, jid, entry } => {
            end_if_replaced(cluster, &jid, entry.seq);
            cluster.mirror.set(node, jid, entry)
        }
        Event::Unbound { node, jid, seq } => cluster.mirror.unbind(node, &jid, seq),
    }
}

/// Two nodes bound the same full JID at once, each before hearing of the other: the later
/// bind wins everywhere (sequences come from the clock), as one node's would.
fn end_if_replaced(cluster: &Cluster, jid: &FullJid, remote_seq: u64) {
    let Some(local) = cluster.local() else {
        return;
    };
    let mut older_here = false;
    local.resources(&jid.to_bare(), &mut |resource| {
        if resource.jid == jid && resource.location == Location::Local && resource.seq < remote_seq
        {
            older_here = true;
        }
    });
    if older_here {
        local.order_local(jid, Outbound::Replaced);
    }
}

/// Reads every other node's sessions into a fresh mirror. Events that arrive meanwhile wait
/// in the subscription and are applied after: each carries a session's whole state, so
/// replaying one the snapshot already holds changes nothing.
async fn rebuild_mirror(cluster: &Arc<Cluster>) -> Result<(), ClusterError> {
    let mut conn = cluster.commands.clone();
    let nodes: Vec<u16> = redis::cmd("SMEMBERS")
        .arg(cluster.keys.nodes())
        .query_async(&mut conn)
        .await?;
    cluster.mirror.clear();
    for node in nodes.into_iter().map(NodeId).filter(|n| *n != cluster.me) {
        for (jid, value) in super::liveness::read_sessions(cluster, node).await? {
            match Entry::decode(&value) {
                Ok(entry) => cluster.mirror.set(node, jid, entry),
                Err(e) => warn!(error = %e, node = node.0, "cluster: unreadable session entry"),
            }
        }
    }
    Ok(())
}
