//! The sessions bound on this node (bare JID -> bound resources, with each one's presence
//! state, flags and outbound queue): the single-node `Directory`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use jid::{BareJid, FullJid};
use minidom::Element;
use tokio::sync::Notify;

use super::directory::{Directory, Location, Replaced, Resource};
use super::flags::{SessionFlag, SessionFlags};
use super::session_queue::{QueueSender, TrySendError};
use super::sessions::{Availability, Outbound, SharedStanza};

struct SessionEntry {
    seq: u64,
    jid: FullJid,
    tx: QueueSender<Outbound>,
    availability: Availability,
    /// Bits of the modules' flags (and `DISCONNECTED`). Kept on the entry, so a session that
    /// replaces another under the same full JID starts with none.
    flags: SessionFlags,
    /// Woken when the queue overflows; the session then ends itself.
    stalled: Arc<Notify>,
}

impl SessionEntry {
    fn resource(&self) -> Resource<'_> {
        Resource {
            jid: &self.jid,
            availability: self.availability,
            flags: self.flags,
            seq: self.seq,
            location: Location::Local,
        }
    }
}

/// The sessions bound on this node: the single-node `Directory`.
pub(super) struct SessionTable {
    users: DashMap<BareJid, Vec<SessionEntry>>,
    next_seq: AtomicU64,
    count: AtomicUsize,
}

impl Default for SessionTable {
    fn default() -> Self {
        SessionTable {
            users: DashMap::new(),
            // From the clock, in microseconds: a restarted node's sessions come after the
            // ones it had before, so other nodes of a cluster can tell them apart.
            next_seq: AtomicU64::new(crate::ids::now_ms().saturating_mul(1000)),
            count: AtomicUsize::new(0),
        }
    }
}

impl SessionTable {
    fn with_entry<R>(&self, jid: &FullJid, f: impl FnOnce(&mut SessionEntry) -> R) -> Option<R> {
        let mut resources = self.users.get_mut(&jid.to_bare())?;
        resources.iter_mut().find(|e| &e.jid == jid).map(f)
    }
}

impl Directory for SessionTable {
    fn bind(
        &self,
        jid: FullJid,
        tx: QueueSender<Outbound>,
        stalled: Arc<Notify>,
    ) -> (u64, Option<Replaced>) {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let entry = SessionEntry {
            seq,
            jid: jid.clone(),
            tx,
            availability: Availability::Unavailable,
            flags: SessionFlags::default(),
            stalled,
        };
        let mut resources = self.users.entry(jid.to_bare()).or_default();
        let replaced = resources
            .iter()
            .position(|e| e.jid == jid)
            .map(|i| resources.swap_remove(i));
        // Most accounts have one session: a first push would reserve room for four.
        resources.reserve_exact(1);
        resources.push(entry);
        if replaced.is_none() {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        (seq, replaced.map(|old| old.tx))
    }

    fn unbind(&self, jid: &FullJid, seq: u64) -> Option<Availability> {
        let bare = jid.to_bare();
        let mut removed = None;
        let now_empty = match self.users.get_mut(&bare) {
            Some(mut resources) => {
                if let Some(i) = resources.iter().position(|e| e.seq == seq) {
                    removed = Some(resources.swap_remove(i).availability);
                }
                resources.is_empty()
            }
            None => false,
        };
        if now_empty {
            self.users
                .remove_if(&bare, |_, resources| resources.is_empty());
        }
        if removed.is_some() {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    fn set_availability(&self, jid: &FullJid, availability: Availability) -> Option<Availability> {
        self.with_entry(jid, |entry| {
            std::mem::replace(&mut entry.availability, availability)
        })
    }

    fn set_flag(&self, jid: &FullJid, flag: SessionFlag, on: bool) {
        self.with_entry(jid, |entry| entry.flags = entry.flags.with(flag, on));
    }

    fn locate(&self, jid: &FullJid) -> Location {
        let bound = self
            .users
            .get(&jid.to_bare())
            .is_some_and(|resources| resources.iter().any(|e| &e.jid == jid));
        if bound {
            Location::Local
        } else {
            Location::Unbound
        }
    }

    fn flags(&self, jid: &FullJid) -> SessionFlags {
        self.users
            .get(&jid.to_bare())
            .and_then(|resources| resources.iter().find(|e| &e.jid == jid).map(|e| e.flags))
            .unwrap_or_default()
    }

    fn resources(&self, user: &BareJid, visit: &mut dyn FnMut(Resource<'_>)) {
        if let Some(resources) = self.users.get(user) {
            for entry in resources.iter() {
                visit(entry.resource());
            }
        }
    }

    fn count(&self, user: &BareJid) -> usize {
        self.users.get(user).map_or(0, |resources| resources.len())
    }

    fn has_any(&self, user: &BareJid) -> bool {
        self.users.contains_key(user)
    }

    fn local_count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    fn deliver(&self, to: &FullJid, stanza: Element) -> Result<(), Element> {
        let Some(resources) = self.users.get(&to.to_bare()) else {
            return Err(stanza);
        };
        let Some(entry) = resources.iter().find(|e| &e.jid == to) else {
            return Err(stanza);
        };
        match entry.tx.try_send(Outbound::Stanza(Box::new(stanza))) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(Outbound::Stanza(stanza))) => {
                entry.stalled.notify_one();
                Err(*stanza)
            }
            Err(TrySendError::Closed(Outbound::Stanza(stanza))) => Err(*stanza),
            Err(_) => Ok(()),
        }
    }

    fn each_local(&self, visit: &mut dyn FnMut(Resource<'_>)) {
        for resources in self.users.iter() {
            for entry in resources.iter() {
                visit(entry.resource());
            }
        }
    }

    fn order_local(&self, to: &FullJid, order: Outbound) -> bool {
        self.users.get(&to.to_bare()).is_some_and(|resources| {
            resources
                .iter()
                .find(|e| &e.jid == to)
                .is_some_and(|entry| entry.tx.try_send(order).is_ok())
        })
    }

    fn deliver_shared(&self, to: &FullJid, stanza: &Arc<SharedStanza>) -> bool {
        let Some(resources) = self.users.get(&to.to_bare()) else {
            return false;
        };
        let Some(entry) = resources.iter().find(|e| &e.jid == to) else {
            return false;
        };
        let item = Outbound::Shared(Box::new((stanza.clone(), to.clone())));
        match entry.tx.try_send(item) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                entry.stalled.notify_one();
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }
}
