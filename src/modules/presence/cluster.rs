//! Presence a session last broadcast is kept by the node the session is on. When another node
//! needs it (to answer a probe, to show a new session its siblings, for a contact just
//! allowed to see the user), it asks that node, which sends it as it would its own.

use std::sync::Arc;

use async_trait::async_trait;
use jid::{FullJid, Jid};

use super::Presence;
use crate::router::{ClusterTopic, Location, NodeId, Router};
use crate::stanza;

pub const TOPIC: &str = "presence-last";

impl Presence {
    /// Sends `resource`'s last available presence to `to`, as from `resource`, wherever the
    /// resource is bound.
    pub(super) async fn send_last(&self, router: &Arc<Router>, resource: &FullJid, to: Jid) {
        if let Some(mut presence) = self.state.last(resource) {
            stanza::set_attr(&mut presence, "to", to.to_string());
            router
                .route_from_user(&Jid::from(resource.clone()), to, presence)
                .await;
            return;
        }
        let Some(cluster) = router.cluster() else {
            return;
        };
        if let Location::OtherNode(node) = router.directory().locate(resource) {
            cluster.send(node, TOPIC, format!("{resource}\n{to}").into_bytes());
        }
    }
}

/// The receiving side: another node asks for one of this node's sessions' last presence.
pub(super) struct LastPresence(pub Arc<Presence>);

#[async_trait]
impl ClusterTopic for LastPresence {
    async fn received(&self, router: &Arc<Router>, _from: NodeId, payload: Vec<u8>) {
        let Ok(text) = std::str::from_utf8(&payload) else {
            return;
        };
        let Some((resource, to)) = text.split_once('\n') else {
            return;
        };
        let (Ok(resource), Ok(to)) = (FullJid::new(resource), Jid::new(to)) else {
            return;
        };
        if let Some(mut presence) = self.0.state.last(&resource) {
            stanza::set_attr(&mut presence, "to", to.to_string());
            router
                .route_from_user(&Jid::from(resource), to, presence)
                .await;
        }
    }
}
