//! The cluster's answer to "where is this JID?": this node's session table for its own
//! sessions, the mirror for the other nodes', and the link for delivering to those.

use std::sync::Arc;

use jid::{BareJid, FullJid};
use minidom::Element;
use tokio::sync::Notify;

use super::wire::{Entry, Envelope, Event};
use super::Cluster;
use crate::router::{
    Availability, Directory, Location, Outbound, Replaced, Resource, SessionFlag, SessionFlags,
    SharedStanza,
};

pub struct ClusterDirectory {
    pub(super) local: Arc<dyn Directory>,
    pub(super) cluster: Arc<Cluster>,
}

impl ClusterDirectory {
    /// Tells the other nodes the session's state now.
    fn publish_state(&self, jid: &FullJid) {
        let mut found = None;
        self.local.resources(&jid.to_bare(), &mut |resource| {
            if resource.jid == jid {
                found = Some(Entry {
                    seq: resource.seq,
                    availability: resource.availability,
                    flags: resource.flags,
                });
            }
        });
        if let Some(entry) = found {
            self.cluster.publish(Event::Set {
                node: self.cluster.me,
                jid: jid.clone(),
                entry,
            });
        }
    }

    fn is_local(&self, jid: &FullJid) -> bool {
        self.local.locate(jid) == Location::Local
    }
}

impl Directory for ClusterDirectory {
    fn bind(
        &self,
        jid: FullJid,
        tx: crate::router::QueueSender<Outbound>,
        stalled: Arc<Notify>,
    ) -> (u64, Option<Replaced>) {
        // RFC 6120 §7.7.2.2 across nodes: the session another node holds under this JID ends.
        if let Some(node) = self.cluster.mirror.forget(&jid) {
            self.cluster.send_envelope(
                node,
                Envelope::Replaced {
                    from: self.cluster.me,
                    to: jid.clone(),
                },
            );
        }
        let (seq, replaced) = self.local.bind(jid.clone(), tx, stalled);
        self.cluster.publish(Event::Set {
            node: self.cluster.me,
            jid,
            entry: Entry {
                seq,
                availability: Availability::Unavailable,
                flags: SessionFlags::default(),
            },
        });
        (seq, replaced)
    }

    fn unbind(&self, jid: &FullJid, seq: u64) -> Option<Availability> {
        let last = self.local.unbind(jid, seq)?;
        self.cluster.publish(Event::Unbound {
            node: self.cluster.me,
            jid: jid.clone(),
            seq,
        });
        Some(last)
    }

    fn set_availability(&self, jid: &FullJid, availability: Availability) -> Option<Availability> {
        let previous = self.local.set_availability(jid, availability)?;
        if previous != availability {
            self.publish_state(jid);
        }
        Some(previous)
    }

    fn set_flag(&self, jid: &FullJid, flag: SessionFlag, on: bool) {
        let before = self.local.flags(jid);
        self.local.set_flag(jid, flag, on);
        if self.local.flags(jid) != before {
            self.publish_state(jid);
        }
    }

    fn locate(&self, jid: &FullJid) -> Location {
        match self.local.locate(jid) {
            Location::Unbound => self
                .cluster
                .mirror
                .locate(jid)
                .map_or(Location::Unbound, Location::OtherNode),
            here => here,
        }
    }

    fn flags(&self, jid: &FullJid) -> SessionFlags {
        if self.is_local(jid) {
            return self.local.flags(jid);
        }
        self.cluster
            .mirror
            .entry(jid)
            .map(|(_, entry)| entry.flags)
            .unwrap_or_default()
    }

    fn resources(&self, user: &BareJid, visit: &mut dyn FnMut(Resource<'_>)) {
        self.local.resources(user, visit);
        // A JID this node just bound may still be in the mirror under its old node.
        self.cluster
            .mirror
            .resources(user, |jid| self.is_local(jid), visit);
    }

    fn count(&self, user: &BareJid) -> usize {
        let mut count = 0;
        self.resources(user, &mut |_| count += 1);
        count
    }

    fn has_any(&self, user: &BareJid) -> bool {
        self.local.has_any(user) || self.cluster.mirror.has_any(user)
    }

    fn local_count(&self) -> usize {
        self.local.local_count()
    }

    fn deliver(&self, to: &FullJid, stanza: Element) -> Result<(), Element> {
        if self.is_local(to) {
            return self.local.deliver(to, stanza);
        }
        match self.cluster.mirror.locate(to) {
            Some(node) => {
                if self
                    .cluster
                    .send_stanza(node, to, crate::xml::to_bytes(&stanza))
                {
                    Ok(())
                } else {
                    Err(stanza)
                }
            }
            None => Err(stanza),
        }
    }

    fn deliver_shared(&self, to: &FullJid, stanza: &Arc<SharedStanza>) -> bool {
        if self.is_local(to) {
            return self.local.deliver_shared(to, stanza);
        }
        match self.cluster.mirror.locate(to) {
            Some(node) => self.cluster.send_shared(node, to, stanza),
            None => false,
        }
    }

    fn each_local(&self, visit: &mut dyn FnMut(Resource<'_>)) {
        self.local.each_local(visit);
    }

    fn order_local(&self, to: &FullJid, order: Outbound) -> bool {
        self.local.order_local(to, order)
    }
}
