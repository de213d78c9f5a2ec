//! The local session table (bare JID -> bound resources, with each one's presence state,
//! flags and outbound queue), and what the router hands a session.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use jid::{BareJid, FullJid};
use minidom::Element;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::Notify;

use super::directory::{Directory, Location, Replaced, Resource};
use super::flags::{SessionFlag, SessionFlags};

/// One stanza going to many sessions (a room's message to its occupants), serialized once:
/// each session writes `head`, its own `to`, then `tail`, instead of a copy of the tree
/// serialized again.
#[derive(Debug)]
pub struct SharedStanza {
    /// The stanza without `to`.
    pub element: Element,
    /// The serialized stanza up to just after its element name (`<message`).
    head: Vec<u8>,
    /// The rest of the serialized stanza.
    tail: Vec<u8>,
}

impl SharedStanza {
    pub fn new(mut element: Element) -> SharedStanza {
        crate::stanza::remove_attr(&mut element, "to");
        let bytes = crate::xml::to_bytes(&element);
        let split = 1 + element.name().len();
        SharedStanza {
            head: bytes[..split].to_vec(),
            tail: bytes[split..].to_vec(),
            element,
        }
    }

    /// The serialized stanza addressed to `to`.
    pub fn bytes_to(&self, to: &FullJid) -> Vec<u8> {
        let to = crate::xml::escape_attr(to.as_str());
        let mut out = Vec::with_capacity(self.head.len() + to.len() + 6 + self.tail.len());
        out.extend_from_slice(&self.head);
        out.extend_from_slice(b" to='");
        out.extend_from_slice(to.as_bytes());
        out.push(b'\'');
        out.extend_from_slice(&self.tail);
        out
    }

    /// The stanza as a tree addressed to `to`, for the paths that keep stanzas as trees
    /// (stream management's unacknowledged queue, CSI, re-routing at session end).
    pub fn element_to(&self, to: &FullJid) -> Element {
        let mut element = self.element.clone();
        crate::stanza::set_attr(&mut element, "to", to.to_string());
        element
    }
}

/// What the router hands a session task.
#[derive(Debug)]
pub enum Outbound {
    /// Boxed: the queue's slots are allocated in blocks per session, so their size is paid by
    /// every idle session.
    Stanza(Box<Element>),
    /// A stanza shared by many recipients, for the session `to`.
    Shared(Box<(Arc<SharedStanza>, FullJid)>),
    /// Another session bound the same full JID: end with `<conflict/>`.
    Replaced,
}

/// Why a session ended, for the hooks that run when it does (and anyone they route to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The client closed its stream.
    Closed,
    /// The connection was lost (or never came back within the stream-management timeout).
    ConnectionLost,
    /// The server ended the stream: a stream error, a replacing session, shutdown.
    ByServer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Bound, but no available presence sent yet (or unavailable sent since).
    Unavailable,
    /// Available with this priority.
    Available(i8),
}

impl Availability {
    pub fn is_available(self) -> bool {
        matches!(self, Availability::Available(_))
    }
}

struct SessionEntry {
    seq: u64,
    jid: FullJid,
    tx: mpsc::Sender<Outbound>,
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
#[derive(Default)]
pub(super) struct SessionTable {
    users: DashMap<BareJid, Vec<SessionEntry>>,
    next_seq: AtomicU64,
    count: AtomicUsize,
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
        tx: mpsc::Sender<Outbound>,
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

#[cfg(test)]
mod shared_tests {
    use super::*;

    #[test]
    fn a_shared_stanza_writes_what_its_copy_would() {
        let message: Element = "<message xmlns='jabber:client' from='r@c.x/n&amp;m' type='groupchat' to='stale@x/y'><body>a &lt; b</body></message>"
            .parse()
            .unwrap();
        let shared = SharedStanza::new(message);
        let to = FullJid::new("u@x/it's").unwrap();
        let copy = shared.element_to(&to);
        let written: Element = String::from_utf8(shared.bytes_to(&to))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(written, copy);
        assert_eq!(written.attr("to"), Some("u@x/it's"));
    }
}
