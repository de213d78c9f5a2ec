//! What modules contribute to XEP-0030 service discovery: features, identities, items and
//! nodes, for the server's domain and for every local account's bare JID. The disco module
//! answers the queries; it only knows what modules put here.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use jid::{BareJid, Jid};

use super::Router;
use crate::stanza::StanzaError;

/// The entity a contribution describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DiscoTarget {
    /// The server's own domain.
    Server,
    /// Every local account's bare JID (answered by the server on the user's behalf).
    Account,
}

/// A disco#info identity (XEP-0030 §3.1).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Identity {
    pub category: String,
    pub kind: String,
    pub name: Option<String>,
}

impl Identity {
    pub fn new(category: &str, kind: &str) -> Identity {
        Identity {
            category: category.to_owned(),
            kind: kind.to_owned(),
            name: None,
        }
    }

    pub fn named(mut self, name: &str) -> Identity {
        self.name = Some(name.to_owned());
        self
    }
}

/// A disco#items item (XEP-0030 §4.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub jid: String,
    pub node: Option<String>,
    pub name: Option<String>,
}

impl Item {
    pub fn new(jid: impl Into<String>) -> Item {
        Item {
            jid: jid.into(),
            node: None,
            name: None,
        }
    }

    pub fn with_node(mut self, node: impl Into<String>) -> Item {
        self.node = Some(node.into());
        self
    }

    pub fn named(mut self, name: impl Into<String>) -> Item {
        self.name = Some(name.into());
        self
    }
}

/// The disco#info of a node.
#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    pub identities: Vec<Identity>,
    pub features: Vec<String>,
}

/// One disco query, as a contributor sees it.
pub struct DiscoQuery<'a> {
    pub from: &'a Jid,
    /// `None` when the query was addressed to the server's domain.
    pub account: Option<&'a BareJid>,
    /// The hosted domain asked about: the server's, or the account's.
    pub domain: &'a str,
    /// The `node` attribute, for node handlers.
    pub node: Option<&'a str>,
}

/// Items a module lists for an entity, such as the MUC service on the server or an account's
/// PEP nodes. Which entity depends on how it was registered.
#[async_trait]
pub trait ItemSource: Send + Sync {
    async fn items(&self, router: &Arc<Router>, query: &DiscoQuery<'_>) -> Vec<Item>;
}

/// Answers disco#info and disco#items for a node it registered (an ad-hoc command list, a
/// XEP-0115 `node#ver`, …). A node nobody registered is `item-not-found`. For an account
/// node the account may not exist, and anyone may ask: the handler decides what each
/// requester learns, and its error goes back as the answer.
#[async_trait]
pub trait NodeHandler: Send + Sync {
    async fn info(
        &self,
        _router: &Arc<Router>,
        _query: &DiscoQuery<'_>,
    ) -> Result<NodeInfo, StanzaError> {
        Ok(NodeInfo::default())
    }

    async fn items(
        &self,
        _router: &Arc<Router>,
        _query: &DiscoQuery<'_>,
    ) -> Result<Vec<Item>, StanzaError> {
        Ok(Vec::new())
    }
}

/// Everything contributed for one target.
#[derive(Default)]
pub struct Contributions {
    features: Vec<&'static str>,
    identities: Vec<Identity>,
    /// Sorted by module name.
    items: Vec<(&'static str, Arc<dyn ItemSource>)>,
    nodes: HashMap<String, Arc<dyn NodeHandler>>,
}

impl Contributions {
    pub fn features(&self) -> &[&'static str] {
        &self.features
    }

    /// Sorted by category, type and name: the order XEP-0115 hashes them in, and one that does
    /// not depend on which module registered first.
    pub fn identities(&self) -> Vec<&Identity> {
        let mut identities: Vec<&Identity> = self.identities.iter().collect();
        identities.sort_unstable();
        identities
    }

    /// Every source's items, sources in module-name order.
    pub async fn items(&self, router: &Arc<Router>, query: &DiscoQuery<'_>) -> Vec<Item> {
        let mut items = Vec::new();
        for (_, source) in &self.items {
            items.extend(source.items(router, query).await);
        }
        items
    }

    pub fn node(&self, node: &str) -> Option<&Arc<dyn NodeHandler>> {
        self.nodes.get(node)
    }
}

/// Contributions for both targets.
#[derive(Default)]
pub struct Discovery {
    server: Contributions,
    account: Contributions,
}

impl Discovery {
    pub fn of(&self, target: DiscoTarget) -> &Contributions {
        match target {
            DiscoTarget::Server => &self.server,
            DiscoTarget::Account => &self.account,
        }
    }

    fn of_mut(&mut self, target: DiscoTarget) -> &mut Contributions {
        match target {
            DiscoTarget::Server => &mut self.server,
            DiscoTarget::Account => &mut self.account,
        }
    }

    pub(super) fn feature(&mut self, target: DiscoTarget, feature: &'static str) {
        let features = &mut self.of_mut(target).features;
        if !features.contains(&feature) {
            features.push(feature);
        }
    }

    pub(super) fn identity(&mut self, target: DiscoTarget, identity: Identity) {
        let identities = &mut self.of_mut(target).identities;
        if !identities.contains(&identity) {
            identities.push(identity);
        }
    }

    pub(super) fn items(
        &mut self,
        target: DiscoTarget,
        module: &'static str,
        source: Arc<dyn ItemSource>,
    ) {
        // Items have no order of their own; any fixed one keeps answers stable.
        let items = &mut self.of_mut(target).items;
        let at = items.partition_point(|(m, _)| *m <= module);
        items.insert(at, (module, source));
    }

    /// Returns false when another module holds `node` already.
    pub(super) fn node(
        &mut self,
        target: DiscoTarget,
        node: String,
        handler: Arc<dyn NodeHandler>,
    ) -> bool {
        match self.of_mut(target).nodes.entry(node) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(handler);
                true
            }
        }
    }
}
