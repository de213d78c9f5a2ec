//! What the server remembers about each session's presence: the last available presence it
//! broadcast (to answer probes and to show newly subscribed contacts) and whom it sent
//! directed presence to (so they hear when it goes away, RFC 6121 §4.6).

use std::collections::HashSet;

use dashmap::DashMap;
use jid::{FullJid, Jid};
use minidom::Element;

#[derive(Default)]
pub struct PresenceState {
    last: DashMap<FullJid, Element>,
    directed: DashMap<FullJid, HashSet<Jid>>,
}

impl PresenceState {
    pub fn set_last(&self, session: &FullJid, presence: Element) {
        self.last.insert(session.clone(), presence);
    }

    pub fn last(&self, session: &FullJid) -> Option<Element> {
        self.last.get(session).map(|p| p.clone())
    }

    pub fn forget_last(&self, session: &FullJid) {
        self.last.remove(session);
    }

    pub fn add_directed(&self, session: &FullJid, to: Jid) {
        self.directed.entry(session.clone()).or_default().insert(to);
    }

    pub fn remove_directed(&self, session: &FullJid, to: &Jid) {
        if let Some(mut set) = self.directed.get_mut(session) {
            set.remove(to);
        }
    }

    /// Everyone the session sent directed presence to, forgetting them.
    pub fn take_directed(&self, session: &FullJid) -> Vec<Jid> {
        self.directed
            .remove(session)
            .map(|(_, set)| set.into_iter().collect())
            .unwrap_or_default()
    }
}
