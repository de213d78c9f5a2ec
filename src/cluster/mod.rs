//! Several nodes, one service: nodes share PostgreSQL for storage and Redis for who is where.
//!
//! Each node keeps a mirror of the other nodes' sessions (`mirror`), fed by the directory
//! channel, so routing decisions never wait on Redis. A stanza for a session elsewhere is
//! published on that node's channel (`link`); Redis says how many subscribers took it, and
//! none means the node is gone: the stanza is then handled here as undeliverable (offline
//! storage, or an error to its sender) instead of vanishing. Heartbeats with an expiry tell
//! who is alive; one node sweeps a dead node's sessions (`liveness`).
//!
//! Pub/sub rather than streams: delivery is to a live session or not at all (what is not
//! taken goes to offline storage at once, on the sender's node, where the stanza still is),
//! so nothing needs keeping in Redis, trimming, or acknowledging; one publish per stanza is
//! one round trip in a pipeline, and order per sender-recipient pair follows from one
//! publishing connection per node and one subscribing connection per node.

mod confirm;
mod delivery;
mod directory;
mod ended;
mod keys;
mod link;
mod liveness;
mod mirror;
pub mod wire;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

use async_trait::async_trait;
use jid::{FullJid, Jid};
use minidom::Element;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::config::ClusterConfig;
use crate::router::SharedStanza;
use crate::router::{ClusterLink, Directory, Module, NodeId, Registry, Router, ShutdownHook};
use crate::stanza::{self, Kind, StanzaError};
use directory::ClusterDirectory;
use keys::Keys;
use link::Outgoing;
use mirror::Mirror;
use wire::{Envelope, Event};

pub use liveness::NodeStatus;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// The longest a sender waits for room in a congested link queue: a pipeline that takes
/// longer has failed (`link::REDIS_TIMEOUT`), and what does not fit is then undeliverable.
const ROOM_WAIT: std::time::Duration = link::REDIS_TIMEOUT;

/// The topic on which the node that swept a dead node tells the others which sessions it had.
const NODE_GONE_TOPIC: &str = "node-gone";

/// The topic on which a node that shuts down says it leaves: the others hand what it did not
/// acknowledge to the undeliverable path at once, before a restarted process of the same
/// number acknowledges numbers it never saw.
const NODE_LEFT_TOPIC: &str = "node-left";

/// The topic on which a node says it wrote a user's roster: the others drop their cached copy.
const ROSTER_WRITTEN_TOPIC: &str = "roster-written";

pub struct Cluster {
    me: NodeId,
    name: String,
    config: ClusterConfig,
    keys: Keys,
    client: redis::Client,
    commands: redis::aio::ConnectionManager,
    mirror: Mirror,
    outbox: mpsc::UnboundedSender<Outgoing>,
    outbox_rx: Mutex<Option<mpsc::UnboundedReceiver<Outgoing>>>,
    /// Stanzas in `outbox`, bounded by `config.queue_limit`.
    queued: AtomicUsize,
    /// When a full queue was last reported (milliseconds since the epoch).
    queue_full_reported: std::sync::atomic::AtomicU64,
    /// Told when the writer took items off `outbox` and the queue is below the mark at which
    /// senders wait (`congested`), or when the link went down.
    room: tokio::sync::Notify,
    local: OnceLock<Arc<dyn Directory>>,
    router: OnceLock<Weak<Router>>,
    /// Subscribed to Redis with the mirror rebuilt: other nodes can be reached.
    connected: AtomicBool,
    /// A write to Redis failed: this node's sessions must be written again.
    dirty: AtomicBool,
    /// Other nodes seen heartbeating at the last check.
    alive: RwLock<HashSet<NodeId>>,
    /// Stopping to take logins so that clients move to other nodes.
    draining: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    roster_cache: OnceLock<Arc<crate::storage::CachedRosterStore>>,
    /// Stanzas sent to each node and not yet acknowledged by it: if it dies, they are
    /// handled here as undeliverable (at least once: one it took just before dying may
    /// also be stored offline).
    delivery: delivery::Delivery,
    /// Broadcasts waited on until every node applied them (`broadcast_and_wait`).
    confirmations: confirm::Confirmations,
}

impl Cluster {
    /// A node named `name` with number `me` of the cluster `config` describes. Nothing is
    /// connected yet: Redis may still be starting, and the node serves its own sessions
    /// meanwhile.
    pub fn new(
        config: &ClusterConfig,
        me: NodeId,
        name: String,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let url = config.redis_url().unwrap_or_default();
        let client = redis::Client::open(url)?;
        let manager = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(link::REDIS_TIMEOUT))
            .set_response_timeout(Some(link::REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(std::time::Duration::from_secs(1));
        let commands = client.get_connection_manager_lazy(manager)?;
        let (outbox, outbox_rx) = mpsc::unbounded_channel();
        Ok(Arc::new(Cluster {
            me,
            name,
            config: config.clone(),
            keys: Keys::new(&config.key_prefix),
            client,
            commands,
            mirror: Mirror::default(),
            outbox,
            outbox_rx: Mutex::new(Some(outbox_rx)),
            queued: AtomicUsize::new(0),
            queue_full_reported: std::sync::atomic::AtomicU64::new(0),
            room: tokio::sync::Notify::new(),
            local: OnceLock::new(),
            router: OnceLock::new(),
            connected: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
            alive: RwLock::new(HashSet::new()),
            draining: AtomicBool::new(false),
            tasks: Mutex::new(Vec::new()),
            roster_cache: OnceLock::new(),
            delivery: delivery::Delivery::default(),
            confirmations: confirm::Confirmations::default(),
        }))
    }

    /// Starts the link and the heartbeat for the router built with this module.
    pub fn start(self: &Arc<Self>, router: &Arc<Router>) {
        let _ = self.router.set(Arc::downgrade(router));
        router.set_cluster(self.clone());
        let Some(outbox) = self
            .outbox_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.push(tokio::spawn(link::write(self.clone(), outbox)));
        tasks.push(tokio::spawn(link::subscribe(self.clone())));
        tasks.push(tokio::spawn(liveness::heartbeat(self.clone())));
        tasks.push(tokio::spawn(delivery::acknowledge(self.clone())));
        let cluster = Arc::downgrade(self);
        router.metrics().add_sampler(Box::new(move |metrics| {
            if let Some(cluster) = cluster.upgrade() {
                let alive = cluster.alive.read().map_or(0, |alive| alive.len());
                let queued = cluster.queued.load(Ordering::Relaxed);
                metrics.set_cluster(cluster.is_connected(), alive, queued);
            }
        }));
        info!(node = %self.name, number = self.me.0, "cluster node started");
    }

    /// Keeps `cache` in step with the other nodes' writes, and them with this node's.
    pub fn share_roster_cache(self: &Arc<Self>, cache: Arc<crate::storage::CachedRosterStore>) {
        let cluster = Arc::downgrade(self);
        cache.on_write(Box::new(move |username| {
            if let Some(cluster) = cluster.upgrade() {
                cluster.broadcast(ROSTER_WRITTEN_TOPIC, username.as_bytes().to_vec());
            }
        }));
        let _ = self.roster_cache.set(cache);
    }

    fn router(&self) -> Option<Arc<Router>> {
        self.router.get().and_then(Weak::upgrade)
    }

    fn local(&self) -> Option<&Arc<dyn Directory>> {
        self.local.get()
    }

    /// Whether other nodes can be reached now.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Stops (or resumes) taking logins on this node.
    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Every node of the cluster as Redis knows them, this one included.
    pub async fn nodes(&self) -> Result<Vec<NodeStatus>, ClusterError> {
        liveness::nodes(self).await
    }

    fn publish(&self, event: Event) {
        let _ = self.outbox.send(Outgoing::Event(event));
    }

    /// Whether the link takes one more item for another node now: it must be up, and its
    /// queue below `queue_limit` (a full one is reported once a second at most).
    fn admit(&self) -> bool {
        if !self.is_connected() {
            return false;
        }
        if self.queued.fetch_add(1, Ordering::Relaxed) >= self.config.queue_limit {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            let now = crate::ids::now_ms();
            let last = self.queue_full_reported.swap(now, Ordering::Relaxed);
            if now.saturating_sub(last) >= 1000 {
                warn!(
                    "cluster link queue full though senders waited; stanzas for other nodes \
                     handled as undeliverable"
                );
            }
            return false;
        }
        true
    }

    /// Whether the link's queue is half full or more, with Redis reachable: the writer is
    /// falling behind, and senders should wait before adding more (`wait_for_room`).
    fn congested(&self) -> bool {
        self.is_connected()
            && self.queued.load(Ordering::Relaxed) >= self.config.queue_limit.div_ceil(2)
    }

    /// Backpressure: waits until the queue is below half full again, as long as the writer
    /// makes progress. Bounded by `ROOM_WAIT`, and over at once when Redis is lost, so that a
    /// dead Redis holds no session: what does not fit then is handled as undeliverable.
    async fn wait_for_room(&self) {
        let deadline = tokio::time::Instant::now() + ROOM_WAIT;
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.congested() {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    /// Called by the writer after it took items off the queue, and when the link goes down.
    fn wake_senders(&self) {
        if !self.congested() {
            self.room.notify_waiters();
        }
    }

    /// Queues an envelope for `node`; false when the link cannot take it.
    /// A module's message on `topic`, from this node.
    fn topic_envelope(&self, topic: &str, payload: Vec<u8>) -> Envelope {
        Envelope::Topic {
            from: self.me,
            topic: topic.to_owned(),
            payload,
        }
    }

    fn send_envelope(&self, node: NodeId, envelope: Envelope) -> bool {
        self.admit()
            && self
                .outbox
                .send(Outgoing::Send {
                    node,
                    counted: true,
                    bytes: envelope.encode(),
                })
                .is_ok()
    }

    /// Queues an answer to `node` about what it sent here (an acknowledgement, a
    /// confirmation): outside the queue limit, which is for what senders add.
    fn send_reply(&self, node: NodeId, envelope: &Envelope) {
        let _ = self.outbox.send(Outgoing::Send {
            node,
            counted: false,
            bytes: envelope.encode(),
        });
    }

    /// Queues a stanza for the session `to` on `node` (numbered when written, so that
    /// `node` acknowledges it); false when the link cannot take it.
    fn send_stanza(&self, node: NodeId, to: &FullJid, xml: Vec<u8>) -> bool {
        self.admit()
            && self
                .outbox
                .send(Outgoing::Stanza {
                    node,
                    to: to.clone(),
                    xml,
                })
                .is_ok()
    }

    /// `send_stanza` for a stanza many sessions get: the writer sends one envelope per node
    /// for all of its recipients there.
    fn send_shared(&self, node: NodeId, to: &FullJid, stanza: &Arc<SharedStanza>) -> bool {
        self.admit()
            && self
                .outbox
                .send(Outgoing::Shared {
                    node,
                    to: to.clone(),
                    stanza: stanza.clone(),
                })
                .is_ok()
    }

    /// `node` is gone or out of reach: what it did not acknowledge is handled here.
    fn give_up_on(self: &Arc<Self>, node: NodeId) {
        for bytes in self.delivery.take(node) {
            self.undeliverable(node, bytes);
        }
    }

    /// `node` did not take what was published to it: it is gone (or cut off from Redis). Its
    /// sessions leave the mirror at once, so that routing stops choosing them; the sweep
    /// that runs the session ends comes when its heartbeat lapses.
    fn node_unreachable(self: &Arc<Self>, node: NodeId) {
        let removed = self.mirror.remove_node(node);
        self.give_up_on(node);
        if !removed.is_empty() {
            warn!(
                node = node.0,
                sessions = removed.len(),
                "a node took no delivery; its sessions are unreachable until it comes back"
            );
        }
    }

    /// What could not be delivered to `node`: a stanza is handled as if its session had
    /// ended here, a module's message goes back to the module.
    fn undeliverable(self: &Arc<Self>, node: NodeId, bytes: Vec<u8>) {
        let Some(router) = self.router() else {
            return;
        };
        match Envelope::decode(&bytes) {
            Ok(Envelope::Stanza { to, xml, .. }) => {
                if let Some(stanza) = parse_stanza(&xml) {
                    tokio::spawn(async move { undeliverable(&router, to, stanza).await });
                }
            }
            Ok(Envelope::Group { to, xml, .. }) => {
                if let Some(stanza) = parse_stanza(&xml) {
                    let shared = SharedStanza::new(stanza);
                    tokio::spawn(async move {
                        for to in to {
                            let stanza = shared.element_to(&to);
                            undeliverable(&router, to, stanza).await;
                        }
                    });
                }
            }
            Ok(Envelope::Topic { topic, payload, .. }) => {
                if let Some(handler) = router.cluster_topic(&topic) {
                    tokio::spawn(async move { handler.undelivered(&router, node, payload).await });
                }
            }
            Ok(Envelope::Replaced { .. })
            | Ok(Envelope::Ack { .. })
            | Ok(Envelope::Awaited { .. })
            | Ok(Envelope::Applied { .. })
            | Err(_) => {}
        }
    }

    /// Something from another node.
    async fn received(self: &Arc<Self>, envelope: Envelope) {
        let Some(router) = self.router() else {
            return;
        };
        match envelope {
            // A node shutting down takes no more stanzas: it neither delivers nor acknowledges
            // them, and their senders handle them when it says it leaves (`NODE_LEFT_TOPIC`),
            // with the recipients' sessions wherever they are now. Handled here instead, they
            // would race the process's exit on their way to offline storage.
            Envelope::Stanza { .. } | Envelope::Group { .. } if router.is_shutting_down() => {}
            Envelope::Stanza {
                from, seq, to, xml, ..
            } => {
                self.delivery.received(from, seq);
                let Some(stanza) = parse_stanza(&xml) else {
                    return;
                };
                let delivered = match self.local() {
                    Some(local) => local.deliver(&to, stanza),
                    None => Err(stanza),
                };
                if let Err(stanza) = delivered {
                    tokio::spawn(async move { undeliverable(&router, to, stanza).await });
                }
            }
            Envelope::Group { from, seq, to, xml } => {
                self.delivery.received(from, seq);
                let Some(stanza) = parse_stanza(&xml) else {
                    return;
                };
                let shared = Arc::new(SharedStanza::new(stanza));
                let mut missed = Vec::new();
                for to in to {
                    let delivered = self
                        .local()
                        .is_some_and(|local| local.deliver_shared(&to, &shared));
                    if !delivered {
                        missed.push(to);
                    }
                }
                if !missed.is_empty() {
                    tokio::spawn(async move {
                        for to in missed {
                            let stanza = shared.element_to(&to);
                            undeliverable(&router, to, stanza).await;
                        }
                    });
                }
            }
            Envelope::Ack { from, upto } => self.delivery.acknowledged(from, upto),
            Envelope::Replaced { to, .. } => {
                if let Some(local) = self.local() {
                    local.order_local(&to, crate::router::Outbound::Replaced);
                }
            }
            Envelope::Topic {
                from,
                topic,
                payload,
            } => self.topic(&router, from, &topic, payload).await,
            Envelope::Awaited {
                from,
                id,
                topic,
                payload,
            } => {
                self.topic(&router, from, &topic, payload).await;
                self.send_reply(from, &Envelope::Applied { from: self.me, id });
            }
            Envelope::Applied { id, .. } => self.confirmations.applied(id),
        }
    }

    /// A message on `topic` from another node.
    async fn topic(
        self: &Arc<Self>,
        router: &Arc<Router>,
        from: NodeId,
        topic: &str,
        payload: Vec<u8>,
    ) {
        match topic {
            crate::router::PENDING_IQ_TOPIC => {
                if let Some(answer) = parse_stanza(&payload) {
                    router.answer_forwarded_iq(answer);
                }
            }
            ROSTER_WRITTEN_TOPIC => {
                if let (Some(cache), Ok(username)) =
                    (self.roster_cache.get(), std::str::from_utf8(&payload))
                {
                    cache.forget_written_elsewhere(username);
                }
            }
            NODE_LEFT_TOPIC => {
                info!(node = from.0, "a node left the cluster");
                // Its sessions first: what is handed back must not be routed to it again.
                self.mirror.remove_node(from);
                self.give_up_on(from);
            }
            NODE_GONE_TOPIC => {
                if let Some((node, sessions)) = liveness::decode_gone(&payload) {
                    self.mirror.remove_node(node);
                    self.give_up_on(node);
                    router.node_gone(node, &sessions, false).await;
                }
            }
            _ => match router.cluster_topic(topic) {
                Some(handler) => handler.received(router, from, payload).await,
                None => warn!(topic, "cluster message on a topic nobody here takes"),
            },
        }
    }
}

/// A stanza another node serialized.
fn parse_stanza(xml: &[u8]) -> Option<Element> {
    let limits = crate::xml::XmlLimits::with_max_size(xml.len().max(1));
    match crate::xml::parse_standalone(xml, limits) {
        Ok(stanza) => Some(stanza),
        Err(e) => {
            error!(error = %e, "unreadable stanza from another node");
            None
        }
    }
}

/// RFC 6121 §8.5.3.2 for a session that was gone when the stanza reached it: a message goes
/// to the user's other resources or offline storage, an IQ request is answered with an
/// error, presence is dropped.
async fn undeliverable(router: &Arc<Router>, to: FullJid, stanza: Element) {
    match Kind::of(&stanza) {
        Some(Kind::Message) => router.redeliver(Jid::from(to), stanza, u64::MAX).await,
        Some(Kind::Iq) if matches!(stanza::stanza_type(&stanza), "get" | "set") => {
            router.bounce(&stanza, StanzaError::service_unavailable());
        }
        _ => {}
    }
}

/// Takes a resource over from `ARGV[2]` (its holder, dead, or empty when nobody held it),
/// unless another node took it first: returns the holder now.
const TAKE_OVER: &str = "local current = redis.call('GET', KEYS[1]) \
    if current and current ~= ARGV[2] then return current end \
    redis.call('SET', KEYS[1], ARGV[1]) return ARGV[1]";

#[async_trait]
impl ClusterLink for Cluster {
    fn node(&self) -> NodeId {
        self.me
    }

    fn send(&self, node: NodeId, topic: &'static str, payload: Vec<u8>) -> bool {
        self.send_envelope(node, self.topic_envelope(topic, payload))
    }

    fn broadcast(&self, topic: &'static str, payload: Vec<u8>) -> bool {
        if !self.is_connected() {
            return false;
        }
        let envelope = self.topic_envelope(topic, payload);
        self.outbox
            .send(Outgoing::Broadcast(envelope.encode()))
            .is_ok()
    }

    async fn broadcast_and_wait(&self, topic: &'static str, payload: Vec<u8>) -> bool {
        if !self.is_connected() {
            return false;
        }
        let (id, applied) = self.confirmations.open();
        let bytes = Envelope::Awaited {
            from: self.me,
            id,
            topic: topic.to_owned(),
            payload,
        }
        .encode();
        if self
            .outbox
            .send(Outgoing::AwaitedBroadcast { id, bytes })
            .is_err()
        {
            self.confirmations.abandon(id);
            return false;
        }
        let confirmed = matches!(
            tokio::time::timeout(link::REDIS_TIMEOUT, applied).await,
            Ok(Ok(()))
        );
        if !confirmed {
            self.confirmations.abandon(id);
        }
        confirmed
    }

    fn is_congested(&self) -> bool {
        self.congested()
    }

    async fn room(&self) {
        self.wait_for_room().await;
    }

    fn is_alive(&self, node: NodeId) -> bool {
        node == self.me
            || self
                .alive
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&node)
    }

    async fn owner(&self, resource: &str) -> Option<NodeId> {
        let key = self.keys.owner(resource);
        let mut conn = self.commands.clone();
        let current: Option<u16> =
            liveness::with_timeout(redis::cmd("GET").arg(&key).query_async(&mut conn))
                .await
                .ok()?;
        if let Some(holder) = current.map(NodeId) {
            // Asked of Redis, not of the last heartbeat's view: a node that just started has
            // not seen the others yet, and must not take their rooms.
            let alive: bool = liveness::with_timeout(
                redis::cmd("EXISTS")
                    .arg(self.keys.alive(holder))
                    .query_async(&mut conn),
            )
            .await
            .ok()?;
            if holder == self.me || alive {
                return Some(holder);
            }
        }
        let stale = current.map(|n| n.to_string()).unwrap_or_default();
        let holder: u16 = liveness::with_timeout(
            redis::cmd("EVAL")
                .arg(TAKE_OVER)
                .arg(1)
                .arg(&key)
                .arg(self.me.0)
                .arg(stale)
                .query_async(&mut conn),
        )
        .await
        .ok()?;
        Some(NodeId(holder))
    }
}

impl Module for Cluster {
    fn name(&self) -> &'static str {
        "cluster"
    }

    fn register(self: Arc<Self>, registry: &mut Registry) {
        let cluster = self.clone();
        registry.directory(Box::new(move |local| {
            let local: Arc<dyn Directory> = Arc::from(local);
            let _ = cluster.local.set(local.clone());
            Box::new(ClusterDirectory { local, cluster })
        }));
        registry.shutdown_hook(crate::router::Priority::Notify, Arc::new(Farewell(self)));
    }
}

/// At shutdown, after every session ended (and said so): this node leaves the cluster.
struct Farewell(Arc<Cluster>);

#[async_trait]
impl ShutdownHook for Farewell {
    async fn shutdown(&self, _router: &Arc<Router>) {
        // Published before the farewell's cleanup, on the same connection: every other node
        // hears it before anything from a restarted process of this number.
        if !self.0.broadcast_and_wait(NODE_LEFT_TOPIC, Vec::new()).await {
            warn!("could not tell the other nodes that this one leaves");
        }
        let (done, finished) = tokio::sync::oneshot::channel();
        if self.0.outbox.send(Outgoing::Farewell(done)).is_ok() {
            let _ = tokio::time::timeout(link::REDIS_TIMEOUT * 2, finished).await;
        }
        for task in self
            .0
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
        info!(node = %self.0.name, "left the cluster");
    }
}
