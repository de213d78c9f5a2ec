//! Rooms on a cluster: each room is served by one node at a time, the one Redis names as its
//! owner (`ClusterLink::owner("muc:<room>")`). A node that receives a stanza for a room it
//! does not serve passes it, unchanged, to the node that does, which handles it as if the
//! router had brought it there; occupants on other nodes get what the room sends through the
//! router, which already reaches sessions wherever they are.
//!
//! Which node serves a room is remembered per room, so that Redis is asked once per room
//! and not per stanza; it is asked again when that node dies or cannot be reached, and, by a
//! node serving a room, once per node timeout (a node cut off from Redis that long had its
//! rooms taken over: its occupants are sent to the new node with status 332). A node
//! that becomes a room's owner loads it from storage as a single node does at start:
//! persistent rooms come back with their configuration, affiliations and subject (and their
//! archive, which is in storage anyway); the in-memory history and the occupants are lost with
//! the node that held them. Those occupants' self-pings (XEP-0410) then reach a room that
//! does not know them and get `not-acceptable`: their clients join again.
//!
//! A single node has no cluster link and none of this runs.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dashmap::DashMap;
use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use tokio::sync::mpsc;
use tracing::warn;

use super::room::{ItemExtra, Role};
use super::{departures, persist, Muc};
use crate::router::{
    ClusterLink, ClusterTopic, NodeGoneHook, NodeId, Router, SessionEnd, ShutdownHook,
};
use crate::stanza::{self, Condition, ErrorType, Kind, StanzaError};

/// Stanzas for rooms, passed to the node serving them.
pub(super) const TOPIC: &str = "muc";

/// How many times a stanza may be passed on: once by the node that received it, and once more
/// by a node that was asked but no longer serves the room (it moved meanwhile). Never more,
/// so two nodes that each believe the other serves a room cannot pass a stanza back and forth.
pub(super) const FORWARDS: u8 = 2;

/// Marks a passed stanza as the goodbye of a session lost on the node it came from.
const LOST: u8 = b'l';

/// What a node that is shutting down tells the others on `TOPIC`: it serves no room any more.
const LEAVING: u8 = b'L';

/// How long a node that said it is leaving is not taken for a room's node, although Redis
/// still names it: until its heartbeat key is gone and another node can take its rooms. A
/// node that comes back later than this serves whatever it held as before.
const LEAVING_FOR: Duration = Duration::from_secs(10);

/// Where rooms are served, as far as this node knows.
#[derive(Default)]
pub(super) struct Placement {
    owners: DashMap<BareJid, Owner>,
    /// Held while Redis is asked about a room nobody here knows the node of: a room taken over
    /// is loaded from storage before any other stanza may create a fresh one under its name.
    finding: tokio::sync::Mutex<()>,
    /// This node is shutting down: it serves no room any more.
    leaving: AtomicBool,
    /// Other nodes that said they are shutting down, and when.
    departing: DashMap<NodeId, Instant>,
}

struct Owner {
    node: NodeId,
    /// When Redis said so.
    since: Instant,
}

enum Serving {
    Here,
    There(NodeId),
    /// Redis could not say, or storage could not give the room taken over.
    Unknown,
}

impl Placement {
    /// What this node remembers of `room`'s node. That it serves the room itself is asked
    /// again after `recheck`: a node cut off from Redis long enough for its heartbeat to lapse
    /// had its rooms taken over, and learns so here. Another node is believed while it lives,
    /// unless `trust_others` is false: a stanza was passed here by a node that believes this
    /// node serves the room, so one of the two is wrong.
    fn known(
        &self,
        room: &BareJid,
        cluster: &Arc<dyn ClusterLink>,
        recheck: Duration,
        trust_others: bool,
    ) -> Option<Serving> {
        let owner = self.owners.get(room)?;
        if owner.node == cluster.node() {
            (owner.since.elapsed() < recheck).then_some(Serving::Here)
        } else if trust_others && cluster.is_alive(owner.node) {
            Some(Serving::There(owner.node))
        } else {
            None
        }
    }

    fn remember(&self, room: &BareJid, node: NodeId) {
        let since = Instant::now();
        self.owners.insert(room.clone(), Owner { node, since });
    }

    fn forget(&self, room: &BareJid, node: NodeId) {
        self.owners.remove_if(room, |_, owner| owner.node == node);
    }

    fn forget_node(&self, node: NodeId) {
        self.owners.retain(|_, owner| owner.node != node);
    }

    fn is_departing(&self, node: NodeId) -> bool {
        self.departing
            .get(&node)
            .is_some_and(|since| since.elapsed() < LEAVING_FOR)
    }
}

impl Muc {
    /// The node serving `room`; when that is this node for the first time, the room is loaded
    /// from storage first. `trust_others`: see `Placement::known`.
    async fn serving(
        &self,
        router: &Arc<Router>,
        cluster: &Arc<dyn ClusterLink>,
        room: &BareJid,
        trust_others: bool,
    ) -> Serving {
        if self.placement.leaving.load(Ordering::Relaxed) {
            return Serving::Unknown;
        }
        let recheck = Duration::from_secs(router.config().cluster.node_timeout_secs.max(1));
        if let Some(known) = self.placement.known(room, cluster, recheck, trust_others) {
            return known;
        }
        let _finding = self.placement.finding.lock().await;
        if let Some(known) = self.placement.known(room, cluster, recheck, true) {
            // Found meanwhile by the stanza that held the lock.
            if trust_others || matches!(known, Serving::Here) {
                return known;
            }
        }
        let Some(node) = cluster.owner(&format!("muc:{room}")).await else {
            if self.room(room).is_some() {
                // Without Redis the room goes on here for the occupants it can reach; asked
                // again after `recheck`, not at every stanza.
                self.placement.remember(room, cluster.node());
                return Serving::Here;
            }
            return Serving::Unknown;
        };
        if self.placement.is_departing(node) {
            return Serving::Unknown;
        }
        if node != cluster.node() {
            if let Some(handle) = self.room(room) {
                // Served here until now: another node took it over while this one was cut
                // off. Its occupants here are in a room nobody else knows.
                warn!(room = %room, node = node.0, "a room served here was taken over by another node");
                self.send_away(router, &handle).await;
            }
            self.placement.remember(room, node);
            return Serving::There(node);
        }
        // Taken over (or claimed for the first time): what another node served is in
        // storage, if it was persistent. A copy here would be from before, so none is kept
        // of rooms served elsewhere.
        if self.room(room).is_none() {
            self.ensure_loaded(router).await;
            match persist::load_room(router, &self.limits, room).await {
                Ok(Some(loaded)) => {
                    self.rooms()
                        .entry(room.clone())
                        .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(loaded)));
                }
                Ok(None) => {}
                Err(e) => {
                    // Serving it without its stored configuration would create a new
                    // room under its name; the next stanza tries again.
                    warn!(error = %e, room = %room, "cannot load a MUC room taken over");
                    return Serving::Unknown;
                }
            }
        }
        self.placement.remember(room, node);
        Serving::Here
    }

    /// Stops serving a room here: each occupant is told it is out because the service here
    /// stops (status 332), so that its client joins again, on the node serving the room now.
    /// The room itself (its storage, its archive) lives on there.
    async fn send_away(&self, router: &Arc<Router>, handle: &super::RoomHandle) {
        let mut room = handle.lock().await;
        if room.gone {
            return;
        }
        for occupant in &room.occupants {
            let presence = room.presence_of(
                occupant,
                Role::None,
                occupant,
                false,
                &[SERVICE_SHUTDOWN],
                ItemExtra::default(),
            );
            router
                .route(Kind::Presence, Jid::from(occupant.jid.clone()), presence)
                .await;
        }
        room.occupants.clear();
        // Not `Muc::forget`, which deletes the archive.
        room.gone = true;
        self.rooms().remove(&room.jid);
    }

    /// Handles a stanza for a room on the node that serves it: here, or passed on there.
    /// `forwards` says how many times it may still be passed on; `lost`, that it is the
    /// goodbye of a session lost on the node it came from.
    pub(super) async fn to_serving_node(
        &self,
        router: &Arc<Router>,
        kind: Kind,
        to: Jid,
        stanza: Element,
        forwards: u8,
        lost: bool,
    ) {
        let Some(cluster) = router.cluster() else {
            self.handle_here(router, kind, to, stanza).await;
            return;
        };
        let room = to.to_bare();
        // A stanza passed on by another node has its last hop left when that node believed
        // this one serves the room: what this node remembers may be the stale side.
        let trust_others = forwards == FORWARDS;
        match self.serving(router, cluster, &room, trust_others).await {
            Serving::Here if lost => {
                // The room tells a session lost from one that left (status 333) by why it
                // ended, which only the node it was on knew.
                let session = stanza.attr("from").and_then(|f| FullJid::new(f).ok());
                match session {
                    Some(session) => {
                        self.departures
                            .note_elsewhere(&session, SessionEnd::ConnectionLost);
                        self.handle_here(router, kind, to, stanza).await;
                        self.departures.forget(&session);
                    }
                    None => self.handle_here(router, kind, to, stanza).await,
                }
            }
            Serving::Here => self.handle_here(router, kind, to, stanza).await,
            Serving::There(node) if forwards > 0 => {
                let lost = lost || self.is_goodbye_of_lost_session(kind, &stanza);
                let payload = encode(forwards - 1, lost, &to, &stanza);
                if !cluster.send(node, TOPIC, payload) {
                    self.placement.forget(&room, node);
                    unreachable(router, kind, &stanza);
                }
            }
            Serving::There(node) => {
                warn!(room = %room, node = node.0, "a room's stanza passed on too often; dropped");
                unreachable(router, kind, &stanza);
            }
            Serving::Unknown => unreachable(router, kind, &stanza),
        }
    }
}

impl Muc {
    /// An unavailable presence the presence module sends for a session of this node that was
    /// lost (its connection broke, or the server ended it).
    fn is_goodbye_of_lost_session(&self, kind: Kind, stanza: &Element) -> bool {
        kind == Kind::Presence
            && stanza::stanza_type(stanza) == "unavailable"
            && stanza
                .attr("from")
                .and_then(|f| FullJid::new(f).ok())
                .is_some_and(|session| self.departures.is_lost(&session))
    }
}

/// The room's node cannot be reached now: the sender hears so, as from a remote service
/// that timed out (XEP-0410 tells clients to try again later rather than to rejoin).
fn unreachable(router: &Router, kind: Kind, stanza: &Element) {
    let asks = match kind {
        Kind::Iq => matches!(stanza::stanza_type(stanza), "get" | "set"),
        Kind::Message => true,
        Kind::Presence => stanza::stanza_type(stanza) == "available",
    };
    if asks {
        router.bounce(
            stanza,
            StanzaError::new(ErrorType::Wait, Condition::RemoteServerTimeout),
        );
    }
}

/// The forwards left, whether it is the goodbye of a lost session, the address the router
/// had, and the stanza as it was.
fn encode(forwards: u8, lost: bool, to: &Jid, stanza: &Element) -> Vec<u8> {
    let xml = crate::xml::to_bytes(stanza);
    let mut payload = Vec::with_capacity(3 + to.as_str().len() + xml.len());
    payload.push(b'0' + forwards);
    payload.push(if lost { LOST } else { b'-' });
    payload.extend_from_slice(to.as_str().as_bytes());
    payload.push(b'\n');
    payload.extend_from_slice(&xml);
    payload
}

fn decode(payload: &[u8]) -> Option<(u8, bool, Jid, Element)> {
    let (&first, rest) = payload.split_first()?;
    let forwards = first.checked_sub(b'0').filter(|n| *n < FORWARDS)?;
    let (&flag, rest) = rest.split_first()?;
    let lost = match flag {
        LOST => true,
        b'-' => false,
        _ => return None,
    };
    let newline = rest.iter().position(|b| *b == b'\n')?;
    let to = Jid::new(std::str::from_utf8(&rest[..newline]).ok()?).ok()?;
    let xml = &rest[newline + 1..];
    let limits = crate::xml::XmlLimits::with_max_size(xml.len().max(1));
    let stanza = crate::xml::parse_standalone(xml, limits).ok()?;
    Some((forwards, lost, to, stanza))
}

/// What other nodes send on `TOPIC`, handled in the order it came but off the task that
/// receives from the cluster link: a room waiting on storage (its archive's queue full, a room
/// loaded when taken over) must not hold up deliveries to this node's sessions.
pub(super) struct Inbox {
    muc: Arc<Muc>,
    queue: OnceLock<mpsc::UnboundedSender<(NodeId, Vec<u8>)>>,
}

impl Inbox {
    pub(super) fn new(muc: Arc<Muc>) -> Arc<Inbox> {
        Arc::new(Inbox {
            muc,
            queue: OnceLock::new(),
        })
    }
}

#[async_trait]
impl ClusterTopic for Inbox {
    /// The node believed to serve the room took nothing (it died before its heartbeat
    /// lapsed): forget it, and tell the sender to try again, as when no node could be found.
    async fn undelivered(&self, router: &Arc<Router>, node: NodeId, payload: Vec<u8>) {
        let Some((_, _, to, stanza)) = decode(&payload) else {
            return;
        };
        self.muc.placement.forget(&to.to_bare(), node);
        if let Some(kind) = Kind::of(&stanza) {
            unreachable(router, kind, &stanza);
        }
    }

    async fn received(&self, router: &Arc<Router>, from: NodeId, payload: Vec<u8>) {
        let queue = self.queue.get_or_init(|| {
            let (queue, items) = mpsc::unbounded_channel();
            // The router owns this inbox: a strong reference here would keep both alive
            // after shutdown, the task waiting forever.
            tokio::spawn(work(self.muc.clone(), Arc::downgrade(router), items));
            queue
        });
        let _ = queue.send((from, payload));
    }
}

async fn work(
    muc: Arc<Muc>,
    router: Weak<Router>,
    mut items: mpsc::UnboundedReceiver<(NodeId, Vec<u8>)>,
) {
    while let Some((from, payload)) = items.recv().await {
        let Some(router) = router.upgrade() else {
            return;
        };
        // A room's fan-out from here fills the link towards the other nodes: wait for room
        // rather than lose groupchat messages (this inbox queues meanwhile, not Redis).
        if let Some(link) = router.cluster().filter(|link| link.is_congested()) {
            link.room().await;
        }
        muc.received(&router, from, payload).await;
    }
}

impl Muc {
    async fn received(&self, router: &Arc<Router>, from: NodeId, payload: Vec<u8>) {
        if router.cluster().is_none() {
            return;
        }
        if payload == [LEAVING] {
            self.placement.departing.insert(from, Instant::now());
            self.placement.forget_node(from);
            return;
        }
        let decoded = decode(&payload).and_then(|(forwards, lost, to, stanza)| {
            Kind::of(&stanza).map(|kind| (forwards, lost, to, kind, stanza))
        });
        let Some((forwards, lost, to, kind, stanza)) = decoded else {
            warn!(node = from.0, "unreadable room stanza from another node");
            return;
        };
        if to.node().is_none() {
            return;
        }
        self.to_serving_node(router, kind, to, stanza, forwards, lost)
            .await;
    }
}

#[async_trait]
impl NodeGoneHook for Muc {
    /// The rooms `node` served are served by whoever asks first now; its sessions that were
    /// occupants of rooms served here leave them as sessions lost without a word do.
    async fn node_gone(&self, router: &Arc<Router>, node: NodeId, sessions: &[FullJid]) {
        self.placement.forget_node(node);
        if sessions.is_empty() {
            return;
        }
        let gone: HashSet<&FullJid> = sessions.iter().collect();
        departures::lose_occupants(self, router, |jid| gone.contains(jid)).await;
    }
}

#[async_trait]
impl ShutdownHook for Muc {
    /// On a node of a cluster that stops, after its own sessions ended: the occupants left in
    /// its rooms are on other nodes. Each is told it is out because the service here shuts
    /// down (status 332), and the others stop passing rooms' stanzas here, so that the
    /// occupants' clients join again on a node that stays.
    async fn shutdown(&self, router: &Arc<Router>) {
        let Some(cluster) = router.cluster() else {
            return;
        };
        self.placement.leaving.store(true, Ordering::Relaxed);
        cluster.broadcast(TOPIC, vec![LEAVING]);
        for handle in self.all_rooms() {
            self.send_away(router, &handle).await;
        }
    }
}

/// XEP-0045 status 332: removed because the service is shutting down.
const SERVICE_SHUTDOWN: u16 = 332;

/// The public persistent rooms of `service` as storage has them: a room created or
/// configured on another node is listed by every node.
pub(super) async fn stored_public_rooms(
    muc: &Muc,
    router: &Arc<Router>,
    service: &str,
) -> Vec<(BareJid, String)> {
    let rows = match router.storage().muc.muc_rooms().await {
        Ok(rows) => rows,
        Err(e) => {
            warn!(error = %e, "cannot list the stored MUC rooms");
            return Vec::new();
        }
    };
    rows.into_iter()
        .filter_map(|row| {
            let jid = BareJid::new(&row.jid).ok()?;
            if jid.domain().as_str() != service {
                return None;
            }
            let config = super::config::RoomConfig::from_stored(&row.config, &muc.limits);
            config.public.then_some((jid, config.name))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passed_stanza_reads_back_and_garbage_does_not() {
        let to = Jid::new("room@conference.localhost/nick").unwrap();
        let stanza: Element = "<message xmlns='jabber:client' from='a@localhost/r' \
            to='room@conference.localhost/nick' type='chat'><body>hi &amp; bye</body></message>"
            .parse()
            .unwrap();
        let (forwards, lost, back_to, back) = decode(&encode(1, true, &to, &stanza)).unwrap();
        assert_eq!((forwards, lost, &back_to), (1, true, &to));
        assert_eq!(back, stanza);
        let (_, lost, _, _) = decode(&encode(0, false, &to, &stanza)).unwrap();
        assert!(!lost);
        assert!(decode(&encode(FORWARDS, false, &to, &stanza)).is_none());
        assert!(decode(b"").is_none());
        assert!(decode(b"1-room@conference.localhost").is_none());
        assert!(decode(b"1xroom@conference.localhost\n<message xmlns='jabber:client'/>").is_none());
        assert!(decode(b"1-room@conference.localhost\n<message").is_none());
    }
}
