//! "Where is this JID?" as a seam. The router asks two questions:
//!
//! - for any address, `Router::destination`: the server of a hosted domain, an account of
//!   one, a hosted service (component), or another domain (the remote-domain egress);
//! - for an account, this `Directory`: which resources it has, with which availability and
//!   flags, and where each one is bound (`Location`).
//!
//! The in-process session table (`sessions::SessionTable`) is the single-node directory. A
//! cluster directory (one that shares entries through Redis, say) wraps it: it registers
//! with `Registry::directory`, keeps answering for this node's sessions through the table it
//! was given, adds the entries of the other nodes, and forwards stanzas for them itself. Its
//! answers carry `Location::OtherNode`, which the table never gives. Neither the router nor
//! any module changes for it: both only ever ask the directory.

use std::sync::Arc;

use async_trait::async_trait;

use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use tokio::sync::Notify;

use super::flags::{SessionFlag, SessionFlags};
use super::sessions::{Availability, Outbound, SharedStanza};
use super::Router;
use crate::stanza::Kind;

/// A node of a cluster, numbered as `crate::ids` numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NodeId(pub u16);

/// Where a full JID of a hosted domain is bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// A session of this node.
    Local,
    /// A session of another node of the cluster: the directory forwards what is delivered to
    /// it. A single node never answers this.
    OtherNode(NodeId),
    /// No session.
    Unbound,
}

impl Location {
    pub fn is_bound(self) -> bool {
        !matches!(self, Location::Unbound)
    }
}

/// One bound resource of an account, as the directory knows it.
#[derive(Clone, Copy, Debug)]
pub struct Resource<'a> {
    pub jid: &'a FullJid,
    pub availability: Availability,
    pub flags: SessionFlags,
    /// Grows with every bind: what was bound after a given session.
    pub seq: u64,
    pub location: Location,
}

impl Resource<'_> {
    /// Available with a non-negative priority: it takes messages to the bare JID
    /// (RFC 6121 §8.5.2.1.1).
    pub fn takes_bare_messages(&self) -> bool {
        matches!(self.availability, Availability::Available(p) if p >= 0)
    }
}

/// What the local session that held a full JID before a new bind gets told.
pub type Replaced = super::session_queue::QueueSender<Outbound>;

/// The answer for resources of accounts. Called on the routing hot path: implementations
/// answer from memory, without waiting.
pub trait Directory: Send + Sync {
    /// A session of this node bound `jid`. Returns its sequence number and, when it replaced
    /// a session of this node bound to the same JID, that session's queue.
    fn bind(
        &self,
        jid: FullJid,
        tx: super::session_queue::QueueSender<Outbound>,
        stalled: Arc<Notify>,
    ) -> (u64, Option<Replaced>);

    /// Removes the session of this node `seq` bound, if it still holds `jid`; returns its
    /// last availability.
    fn unbind(&self, jid: &FullJid, seq: u64) -> Option<Availability>;

    /// Returns the previous availability (`None` if the session is not bound).
    fn set_availability(&self, jid: &FullJid, availability: Availability) -> Option<Availability>;

    fn set_flag(&self, jid: &FullJid, flag: SessionFlag, on: bool);

    fn locate(&self, jid: &FullJid) -> Location;

    /// Empty for a JID with no session.
    fn flags(&self, jid: &FullJid) -> SessionFlags;

    /// Calls `visit` for each bound resource of `user`, wherever it is bound.
    fn resources(&self, user: &BareJid, visit: &mut dyn FnMut(Resource<'_>));

    /// Sessions bound for `user`, disconnected ones included.
    fn count(&self, user: &BareJid) -> usize;

    fn has_any(&self, user: &BareJid) -> bool;

    /// Sessions bound on this node.
    fn local_count(&self) -> usize;

    /// Queues a stanza for a session without waiting (a local queue, or the link to the node
    /// holding it). A full local queue means the client stopped reading: the session is told
    /// to end, and the stanza is handed back.
    fn deliver(&self, to: &FullJid, stanza: Element) -> Result<(), Element>;

    /// `deliver` for a stanza many sessions receive; false when it was not queued.
    fn deliver_shared(&self, to: &FullJid, stanza: &Arc<SharedStanza>) -> bool;

    /// Calls `visit` for every session bound on this node (administration: who is online).
    /// A directory that wraps this node's table passes the call on.
    fn each_local(&self, _visit: &mut dyn FnMut(Resource<'_>)) {}

    /// Hands a session of this node an order that is not a stanza (end the session); false
    /// when no such session is bound here or its queue cannot take it.
    fn order_local(&self, _to: &FullJid, _order: Outbound) -> bool {
        false
    }
}

/// Builds the directory around this node's session table (see `Registry::directory`).
pub type DirectoryFactory = Box<dyn FnOnce(Box<dyn Directory>) -> Box<dyn Directory> + Send + Sync>;

/// A service with its own domain on this server (XEP-0114-style, but in-process), such as the
/// MUC service at `conference.<domain>`: every stanza addressed to that domain or to any JID
/// at it is handed over as is, `from` already stamped.
#[async_trait]
pub trait Component: Send + Sync {
    async fn handle(&self, router: &Arc<Router>, kind: Kind, to: Jid, stanza: Element);

    /// Whether the server's own answers for the service (an error bouncing what it sent)
    /// are handed to it. In-process services take none; an external component (XEP-0114)
    /// learns from them that what it sent went nowhere.
    fn takes_replies(&self) -> bool {
        false
    }
}

/// The answer to "where is this address?" for everything the router routes.
pub enum Destination<'r> {
    /// A hosted domain itself.
    Server,
    /// An account of a hosted domain, or one of its resources: the `Directory` knows where.
    Account,
    /// A hosted domain with a resource but no local part: nothing lives there.
    Nothing,
    /// A service hosted here under its own domain.
    Service(&'r Arc<dyn Component>),
    /// Another domain, through the remote-domain egress (federation).
    Remote(&'r Arc<dyn Component>),
    /// Another domain with no egress.
    Unreachable,
}

impl Destination<'_> {
    pub(super) fn of<'r>(
        to: &Jid,
        hosted: &std::collections::HashSet<String>,
        components: &'r std::collections::HashMap<String, Arc<dyn Component>>,
        remote: Option<&'r Arc<dyn Component>>,
    ) -> Destination<'r> {
        let domain = to.domain().as_str();
        if !hosted.contains(domain) {
            return match (components.get(domain), remote) {
                (Some(service), _) => Destination::Service(service),
                (None, Some(egress)) => Destination::Remote(egress),
                (None, None) => Destination::Unreachable,
            };
        }
        match (to.node(), to.resource()) {
            (Some(_), _) => Destination::Account,
            (None, None) => Destination::Server,
            (None, Some(_)) => Destination::Nothing,
        }
    }
}
