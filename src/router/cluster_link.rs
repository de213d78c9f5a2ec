//! What the router and the modules see of a cluster: a link to the other nodes that carries
//! module messages by topic, and the moments when another node's sessions vanish. A single
//! node has no link; modules that keep per-node state (presence, rooms) ask for it and do
//! nothing more when there is none.

use std::sync::Arc;

use async_trait::async_trait;
use jid::FullJid;

use super::directory::NodeId;
use super::Router;

/// The cluster as modules use it. Sends are queued without waiting; per destination node
/// they arrive in the order they were sent. `Any`, so that operations can reach the node
/// behind the link (`corvid::cluster::Cluster`: draining, the list of nodes).
#[async_trait]
pub trait ClusterLink: std::any::Any + Send + Sync {
    /// This node.
    fn node(&self) -> NodeId;

    /// Hands `payload` to the `topic` handler on `node`; false when it cannot be queued (the
    /// link is down or full): the caller falls back as if that node were gone.
    fn send(&self, node: NodeId, topic: &'static str, payload: Vec<u8>) -> bool;

    /// `send` to every other node.
    fn broadcast(&self, topic: &'static str, payload: Vec<u8>) -> bool;

    /// `broadcast`, returning once every node Redis handed it to has handled it: a write
    /// whose answer the user waits for (a block, say) is then in force elsewhere before
    /// anything the user does next. Waits at most the link's Redis timeout (a node that hangs
    /// holds nobody longer); false when that could not be confirmed.
    async fn broadcast_and_wait(&self, topic: &'static str, payload: Vec<u8>) -> bool;

    /// Whether the queue towards the other nodes is filling up faster than Redis takes it:
    /// a sender should then wait (`room`) before routing more.
    fn is_congested(&self) -> bool {
        false
    }

    /// Waits (bounded, and not at all when Redis is lost) until the queue towards the other
    /// nodes has room again.
    async fn room(&self) {}

    /// Whether `node` is known to be alive (heartbeating).
    fn is_alive(&self, node: NodeId) -> bool;

    /// The node that serves `resource` (a room, say), one at a time in the cluster: the
    /// node holding it if that one is alive, else this node, which takes it over. `None`
    /// when Redis cannot be reached.
    async fn owner(&self, resource: &str) -> Option<NodeId>;
}

/// A module's receiver of messages on one topic from other nodes.
#[async_trait]
pub trait ClusterTopic: Send + Sync {
    async fn received(&self, router: &Arc<Router>, from: NodeId, payload: Vec<u8>);

    /// What this node sent on the topic to `node` was taken by nobody there (the node is
    /// gone, or the link failed): the sender may answer for it instead of losing it.
    async fn undelivered(&self, _router: &Arc<Router>, _node: NodeId, _payload: Vec<u8>) {}
}

/// Another node stopped (its heartbeat lapsed, or the link to it failed). Every node runs
/// these hooks for the sessions it knew were there, once; the session-end hooks (presence
/// unavailable to contacts) run for each of those sessions on one node only.
#[async_trait]
pub trait NodeGoneHook: Send + Sync {
    async fn node_gone(&self, router: &Arc<Router>, node: NodeId, sessions: &[FullJid]);
}
