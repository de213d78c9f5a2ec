//! The local session table: bare JID -> bound resources, with each one's presence state and
//! outbound queue.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use jid::{BareJid, FullJid};
use minidom::Element;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::Notify;

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

/// Something a session opted into receiving: a list it fetched and now gets pushes for
/// ("interested resource"), or copies of its account's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// The roster (RFC 6121 §2.1.6).
    Roster,
    /// The blocklist (XEP-0191 §3.3).
    Blocklist,
    /// Message carbons (XEP-0280), enabled per session.
    Carbons,
}

impl Interest {
    fn bit(self) -> u8 {
        match self {
            Interest::Roster => 1,
            Interest::Blocklist => 2,
            Interest::Carbons => 4,
        }
    }
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

pub struct SessionEntry {
    pub id: u64,
    pub jid: FullJid,
    pub tx: mpsc::Sender<Outbound>,
    pub availability: Availability,
    /// The lists this session fetched and so receives pushes for (bits of `Interest`). Kept
    /// on the entry, so a session that replaces another under the same full JID starts with
    /// none.
    interests: u8,
    /// Woken when the queue overflows; the session then ends itself.
    stalled: Arc<Notify>,
    /// The connection is gone but the session waits to be resumed (XEP-0198): stanzas are
    /// still queued for it, but nobody reads them right now (push notifications care).
    detached: bool,
}

#[derive(Default)]
pub(super) struct SessionTable {
    users: DashMap<BareJid, Vec<SessionEntry>>,
    next_id: AtomicU64,
    count: AtomicUsize,
}

impl SessionTable {
    /// Adds a session; returns its id and the entry it replaced, if any.
    pub fn insert(
        &self,
        jid: FullJid,
        tx: mpsc::Sender<Outbound>,
        stalled: Arc<Notify>,
    ) -> (u64, Option<SessionEntry>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let entry = SessionEntry {
            id,
            jid: jid.clone(),
            tx,
            availability: Availability::Unavailable,
            interests: 0,
            stalled,
            detached: false,
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
        (id, replaced)
    }

    /// Removes the session only if `id` still owns the JID (a replacement may have taken it).
    pub fn remove(&self, jid: &FullJid, id: u64) -> Option<SessionEntry> {
        let bare = jid.to_bare();
        let mut removed = None;
        let now_empty = match self.users.get_mut(&bare) {
            Some(mut resources) => {
                if let Some(i) = resources.iter().position(|e| e.id == id) {
                    removed = Some(resources.swap_remove(i));
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

    /// Sets a session's availability; returns the previous one (None if not bound).
    pub fn set_availability(
        &self,
        jid: &FullJid,
        availability: Availability,
    ) -> Option<Availability> {
        let mut resources = self.users.get_mut(&jid.to_bare())?;
        let entry = resources.iter_mut().find(|e| &e.jid == jid)?;
        Some(std::mem::replace(&mut entry.availability, availability))
    }

    pub fn available(&self, user: &BareJid) -> Vec<(FullJid, i8)> {
        self.available_with_ids(user)
            .into_iter()
            .map(|(jid, priority, _)| (jid, priority))
            .collect()
    }

    /// `available`, with each session's id (ids grow with every bind).
    pub fn available_with_ids(&self, user: &BareJid) -> Vec<(FullJid, i8, u64)> {
        self.users
            .get(user)
            .map(|resources| {
                resources
                    .iter()
                    .filter_map(|e| match e.availability {
                        Availability::Available(p) => Some((e.jid.clone(), p, e.id)),
                        Availability::Unavailable => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn set_interested(&self, jid: &FullJid, interest: Interest) {
        if let Some(mut resources) = self.users.get_mut(&jid.to_bare()) {
            if let Some(entry) = resources.iter_mut().find(|e| &e.jid == jid) {
                entry.interests |= interest.bit();
            }
        }
    }

    pub fn clear_interested(&self, jid: &FullJid, interest: Interest) {
        if let Some(mut resources) = self.users.get_mut(&jid.to_bare()) {
            if let Some(entry) = resources.iter_mut().find(|e| &e.jid == jid) {
                entry.interests &= !interest.bit();
            }
        }
    }

    pub fn set_detached(&self, jid: &FullJid, detached: bool) {
        if let Some(mut resources) = self.users.get_mut(&jid.to_bare()) {
            if let Some(entry) = resources.iter_mut().find(|e| &e.jid == jid) {
                entry.detached = detached;
            }
        }
    }

    pub fn is_detached(&self, jid: &FullJid) -> bool {
        self.users
            .get(&jid.to_bare())
            .is_some_and(|resources| resources.iter().any(|e| &e.jid == jid && e.detached))
    }

    pub fn interested(&self, user: &BareJid, interest: Interest) -> Vec<FullJid> {
        self.select(user, |e| e.interests & interest.bit() != 0)
    }

    /// Sessions bound for `user`, detached ones included.
    pub fn count(&self, user: &BareJid) -> usize {
        self.users.get(user).map_or(0, |resources| resources.len())
    }

    pub fn has_any(&self, user: &BareJid) -> bool {
        self.users.contains_key(user)
    }

    pub fn bound(&self, user: &BareJid) -> Vec<FullJid> {
        self.select(user, |_| true)
    }

    fn select(&self, user: &BareJid, keep: impl Fn(&SessionEntry) -> bool) -> Vec<FullJid> {
        self.users
            .get(user)
            .map(|resources| {
                resources
                    .iter()
                    .filter(|e| keep(e))
                    .map(|e| e.jid.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn contains(&self, jid: &FullJid) -> bool {
        self.users
            .get(&jid.to_bare())
            .is_some_and(|resources| resources.iter().any(|e| &e.jid == jid))
    }

    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Queues a stanza for a session without waiting. A full queue means the client stopped
    /// reading: the session is told to end, and the stanza is handed back to the caller.
    pub fn deliver(&self, to: &FullJid, stanza: Element) -> Result<(), Element> {
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

    /// `deliver` for a shared stanza: no copy of the tree per recipient.
    pub fn deliver_shared(&self, to: &FullJid, stanza: &Arc<SharedStanza>) -> bool {
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
