//! What the server remembers about each session's presence: the last available presence it
//! broadcast (to answer probes and to show newly subscribed contacts) and whom it sent
//! directed presence to (so they hear when it goes away, RFC 6121 §4.6).

use std::collections::HashSet;

use dashmap::DashMap;
use jid::{FullJid, Jid};
use minidom::Element;

#[derive(Default)]
pub struct PresenceState {
    /// Serialized: every available session has one, and an element tree (names, namespaces,
    /// an attribute map per element) takes several times the bytes of its XML. It is read
    /// back only to answer a probe or show a new contact, far less often than it is held.
    last: DashMap<FullJid, Box<[u8]>>,
    directed: DashMap<FullJid, HashSet<Jid>>,
}

impl PresenceState {
    pub fn set_last(&self, session: &FullJid, presence: &Element) {
        let bytes = crate::xml::to_bytes(presence).into_boxed_slice();
        self.last.insert(session.clone(), bytes);
    }

    pub fn last(&self, session: &FullJid) -> Option<Element> {
        let bytes = self.last.get(session)?;
        match crate::xml::parse_standalone(&bytes, crate::xml::XmlLimits::STORED) {
            Ok(presence) => Some(presence),
            Err(e) => {
                // Written by `set_last` from a parsed element, so this would be a bug in the
                // writer; the probe then goes unanswered rather than the server failing.
                tracing::warn!(error = %e, %session, "stored presence does not parse");
                None
            }
        }
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
