//! Names of the Redis keys and channels, all under the configured prefix.
//!
//! - `<p>:nodes`: set of the numbers of the nodes that announced themselves;
//! - `<p>:alive:<n>`: node n's heartbeat, expiring after the node timeout;
//! - `<p>:node:<n>`: hash describing node n (name, sessions, heartbeat time, state);
//! - `<p>:sessions:<n>`: hash of node n's sessions, full JID -> entry (`wire::Entry`). Only
//!   node n writes it, and the one node that wins `<p>:sweep:<n>` removes it when n is dead;
//! - `<p>:owner:<resource>`: the node serving a resource (a room), one at a time;
//! - `<p>:ended:<previd>`: the final count of a resumable session that ended (`ended`),
//!   expiring with its resumption timeout;
//! - channel `<p>:directory`: every node's changes to its sessions, as they happen;
//! - channel `<p>:to:<n>`: stanzas and module messages for node n;
//! - channel `<p>:all`: module messages for every node.
//!
//! The sessions live in one hash per node rather than one per user: a node rebuilding its
//! mirror reads whole hashes (with HSCAN, off the routing path), and the sweep of a dead node
//! reads and deletes exactly its sessions, without any scan of other nodes' keys.

use crate::router::NodeId;

#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    pub fn alive(&self, node: NodeId) -> String {
        format!("{}:alive:{}", self.prefix, node.0)
    }

    pub fn node(&self, node: NodeId) -> String {
        format!("{}:node:{}", self.prefix, node.0)
    }

    pub fn sessions(&self, node: NodeId) -> String {
        format!("{}:sessions:{}", self.prefix, node.0)
    }

    pub fn sweep(&self, node: NodeId) -> String {
        format!("{}:sweep:{}", self.prefix, node.0)
    }

    pub fn owner(&self, resource: &str) -> String {
        format!("{}:owner:{}", self.prefix, resource)
    }

    pub fn ended_session(&self, previd: &str) -> String {
        format!("{}:ended:{}", self.prefix, previd)
    }

    pub fn directory_channel(&self) -> String {
        format!("{}:directory", self.prefix)
    }

    pub fn node_channel(&self, node: NodeId) -> String {
        format!("{}:to:{}", self.prefix, node.0)
    }

    pub fn all_channel(&self) -> String {
        format!("{}:all", self.prefix)
    }
}
