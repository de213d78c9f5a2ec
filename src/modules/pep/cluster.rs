//! A session's `+notify` interests are learned where the session is, from its own presence.
//! Notifications for a contact's sessions on other nodes of a cluster go to those nodes, which
//! hand each on to the sessions there that asked for the node.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use jid::{BareJid, FullJid, Jid};
use minidom::Element;

use super::PepState;
use crate::router::{ClusterTopic, NodeId, Router};

pub const TOPIC: &str = "pep-event";

/// Sends `event_child` of `owner`'s `node` to each node in `elsewhere`, for its sessions.
pub fn forward(
    router: &Router,
    owner: &BareJid,
    node: &str,
    event_child: &Element,
    elsewhere: HashMap<NodeId, Vec<FullJid>>,
) {
    let Some(cluster) = router.cluster() else {
        return;
    };
    let event = crate::xml::to_bytes(event_child);
    for (peer, sessions) in elsewhere {
        // The owner, the node, one session per line, an empty line, then the event.
        let mut payload = format!("{owner}\n{node}\n");
        for session in &sessions {
            payload.push_str(session.as_str());
            payload.push('\n');
        }
        payload.push('\n');
        let mut payload = payload.into_bytes();
        payload.extend_from_slice(&event);
        cluster.send(peer, TOPIC, payload);
    }
}

pub(super) struct RemoteEvents(pub Arc<PepState>);

#[async_trait]
impl ClusterTopic for RemoteEvents {
    async fn received(&self, router: &Arc<Router>, _from: NodeId, payload: Vec<u8>) {
        let Some(split) = payload.windows(2).position(|w| w == b"\n\n") else {
            return;
        };
        let Ok(head) = std::str::from_utf8(&payload[..split]) else {
            return;
        };
        let mut lines = head.lines();
        let (Some(owner), Some(node)) = (lines.next(), lines.next()) else {
            return;
        };
        let Ok(owner) = BareJid::new(owner) else {
            return;
        };
        let limits = crate::xml::XmlLimits::STORED;
        let Ok(event_child) = crate::xml::parse_standalone(&payload[split + 2..], limits) else {
            return;
        };
        let from = Jid::from(owner.clone());
        for session in lines.filter_map(|line| FullJid::new(line).ok()) {
            if !self.0.interests.wants(&session, node) || !router.is_bound(&session) {
                continue;
            }
            let target = Jid::from(session);
            let message = super::notify::message(router, &owner, &target, event_child.clone());
            router.route_from_user(&from, target, message).await;
        }
    }
}
