//! This node's copy of the other nodes' sessions, kept current from the directory channel, so
//! that "where is this JID?" is answered from memory on the routing path.

use dashmap::DashMap;
use jid::{BareJid, FullJid};

use super::wire::Entry;
use crate::router::{Location, NodeId, Resource};

struct RemoteSession {
    jid: FullJid,
    node: NodeId,
    entry: Entry,
}

impl RemoteSession {
    fn resource(&self) -> Resource<'_> {
        Resource {
            jid: &self.jid,
            availability: self.entry.availability,
            flags: self.entry.flags,
            seq: self.entry.seq,
            location: Location::OtherNode(self.node),
        }
    }
}

#[derive(Default)]
pub struct Mirror {
    users: DashMap<BareJid, Vec<RemoteSession>>,
}

impl Mirror {
    /// A session of `node` is bound with `entry`. One full JID has one session in the
    /// cluster: the newest word about it wins, and the node it left ends its own session.
    pub fn set(&self, node: NodeId, jid: FullJid, entry: Entry) {
        let mut sessions = self.users.entry(jid.to_bare()).or_default();
        match sessions.iter_mut().find(|s| s.jid == jid) {
            // A replay of an older state of the same session (a snapshot read after it) is
            // not newer than what is here.
            Some(existing) if existing.node == node && existing.entry.seq > entry.seq => {}
            Some(existing) => {
                existing.node = node;
                existing.entry = entry;
            }
            None => sessions.push(RemoteSession { jid, node, entry }),
        }
    }

    /// Removes the session `seq` of `node`, if that is still the one bound to `jid`.
    pub fn unbind(&self, node: NodeId, jid: &FullJid, seq: u64) {
        let bare = jid.to_bare();
        let now_empty = match self.users.get_mut(&bare) {
            Some(mut sessions) => {
                sessions.retain(|s| !(s.jid == *jid && s.node == node && s.entry.seq == seq));
                sessions.is_empty()
            }
            None => false,
        };
        if now_empty {
            self.users
                .remove_if(&bare, |_, sessions| sessions.is_empty());
        }
    }

    /// Forgets `jid` whatever node had it (this node just bound it).
    pub fn forget(&self, jid: &FullJid) -> Option<NodeId> {
        let bare = jid.to_bare();
        let mut mut_sessions = self.users.get_mut(&bare)?;
        let index = mut_sessions.iter().position(|s| s.jid == *jid)?;
        let node = mut_sessions.swap_remove(index).node;
        let now_empty = mut_sessions.is_empty();
        drop(mut_sessions);
        if now_empty {
            self.users
                .remove_if(&bare, |_, sessions| sessions.is_empty());
        }
        Some(node)
    }

    /// Removes every session of `node`, returning each with whether it was available.
    pub fn remove_node(&self, node: NodeId) -> Vec<(FullJid, bool)> {
        let mut removed = Vec::new();
        self.users.retain(|_, sessions| {
            sessions.retain(|s| {
                if s.node == node {
                    removed.push((s.jid.clone(), s.entry.availability.is_available()));
                    false
                } else {
                    true
                }
            });
            !sessions.is_empty()
        });
        removed
    }

    pub fn clear(&self) {
        self.users.clear();
    }

    pub fn locate(&self, jid: &FullJid) -> Option<NodeId> {
        self.users
            .get(&jid.to_bare())
            .and_then(|sessions| sessions.iter().find(|s| s.jid == *jid).map(|s| s.node))
    }

    pub fn entry(&self, jid: &FullJid) -> Option<(NodeId, Entry)> {
        self.users.get(&jid.to_bare()).and_then(|sessions| {
            sessions
                .iter()
                .find(|s| s.jid == *jid)
                .map(|s| (s.node, s.entry))
        })
    }

    /// Calls `visit` for each of `user`'s sessions on other nodes, except those `skip` says
    /// this node holds itself.
    pub fn resources(
        &self,
        user: &BareJid,
        skip: impl Fn(&FullJid) -> bool,
        visit: &mut dyn FnMut(Resource<'_>),
    ) {
        if let Some(sessions) = self.users.get(user) {
            for session in sessions.iter().filter(|s| !skip(&s.jid)) {
                visit(session.resource());
            }
        }
    }

    pub fn has_any(&self, user: &BareJid) -> bool {
        self.users.contains_key(user)
    }

    /// Whether any session of `user` elsewhere takes messages to the bare JID.
    #[cfg(test)]
    fn any_available(&self, user: &BareJid) -> bool {
        self.users
            .get(user)
            .is_some_and(|sessions| sessions.iter().any(|s| s.entry.availability.is_available()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::{Availability, SessionFlags};

    fn entry(seq: u64, availability: Availability) -> Entry {
        Entry {
            seq,
            availability,
            flags: SessionFlags::default(),
        }
    }

    #[test]
    fn an_old_sessions_cleanup_leaves_the_newer_session_alone() {
        let mirror = Mirror::default();
        let jid = FullJid::new("a@x/r").unwrap();
        mirror.set(NodeId(1), jid.clone(), entry(10, Availability::Unavailable));
        // The client came back on node 2 before node 1 cleaned up.
        mirror.set(NodeId(2), jid.clone(), entry(3, Availability::Available(0)));
        mirror.unbind(NodeId(1), &jid, 10);
        assert_eq!(mirror.locate(&jid), Some(NodeId(2)));
        assert!(mirror.any_available(&jid.to_bare()));
        mirror.unbind(NodeId(2), &jid, 3);
        assert_eq!(mirror.locate(&jid), None);
        assert!(!mirror.has_any(&jid.to_bare()));
    }

    #[test]
    fn a_replayed_older_state_does_not_win_and_a_dead_node_is_removed_whole() {
        let mirror = Mirror::default();
        let a = FullJid::new("a@x/r").unwrap();
        let b = FullJid::new("b@x/r").unwrap();
        mirror.set(NodeId(1), a.clone(), entry(5, Availability::Available(1)));
        mirror.set(NodeId(1), a.clone(), entry(4, Availability::Unavailable));
        assert_eq!(
            mirror.entry(&a).map(|(_, e)| e.availability),
            Some(Availability::Available(1))
        );
        mirror.set(NodeId(2), b.clone(), entry(1, Availability::Unavailable));
        let removed = mirror.remove_node(NodeId(1));
        assert_eq!(removed, vec![(a.clone(), true)]);
        assert_eq!(mirror.locate(&a), None);
        assert_eq!(mirror.locate(&b), Some(NodeId(2)));
    }
}
