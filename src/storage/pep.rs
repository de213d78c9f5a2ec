//! Personal eventing (XEP-0163): each account's pubsub nodes with their configuration, and the
//! items published to them. Only nodes with `persist_items` keep items here; the module keeps
//! the last item of the others in memory.

use async_trait::async_trait;

use super::StorageResult;

/// Who may read a node's items (XEP-0060 §4.5). `roster` and `authorize` are not offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessModel {
    /// Anyone, contact or not (OMEMO bundles and device lists).
    Open,
    /// The owner and contacts subscribed to the owner's presence (the PEP default).
    Presence,
    /// The owner only.
    Whitelist,
}

impl AccessModel {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessModel::Open => "open",
            AccessModel::Presence => "presence",
            AccessModel::Whitelist => "whitelist",
        }
    }

    pub fn parse(s: &str) -> Option<AccessModel> {
        match s {
            "open" => Some(AccessModel::Open),
            "presence" => Some(AccessModel::Presence),
            "whitelist" => Some(AccessModel::Whitelist),
            _ => None,
        }
    }
}

/// `pubsub#send_last_published_item`: when a new subscriber gets the last item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SendLastItem {
    Never,
    OnSub,
    /// The XEP-0163 default: also to each newly available resource.
    OnSubAndPresence,
}

impl SendLastItem {
    pub fn as_str(self) -> &'static str {
        match self {
            SendLastItem::Never => "never",
            SendLastItem::OnSub => "on_sub",
            SendLastItem::OnSubAndPresence => "on_sub_and_presence",
        }
    }

    pub fn parse(s: &str) -> Option<SendLastItem> {
        match s {
            "never" => Some(SendLastItem::Never),
            "on_sub" => Some(SendLastItem::OnSub),
            "on_sub_and_presence" => Some(SendLastItem::OnSubAndPresence),
            _ => None,
        }
    }
}

/// The node configuration fields corvid supports (XEP-0060 §16.4.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeConfig {
    pub access_model: AccessModel,
    /// At least 1; the oldest items beyond it are dropped.
    pub max_items: u32,
    pub persist_items: bool,
    pub send_last_published_item: SendLastItem,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PepNode {
    pub name: String,
    pub config: NodeConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PepItem {
    pub id: String,
    /// Time-sortable id (see `crate::ids`) given at publication: the items' order, newest
    /// last, and when the item was published.
    pub seq: i64,
    /// The payload element as serialized XML.
    pub payload: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PepCreate {
    Created,
    /// The owner already has `max_nodes` nodes; nothing was created.
    Full,
}

/// Nodes are keyed by (owner username, node name); everything goes when the account does.
#[async_trait]
pub trait PepStore: Send + Sync {
    /// Every node of the owner, sorted by name.
    async fn pep_nodes(&self, owner: &str) -> StorageResult<Vec<PepNode>>;
    async fn pep_node(&self, owner: &str, node: &str) -> StorageResult<Option<NodeConfig>>;
    /// Creates the node unless the owner already has `max_nodes`. `Conflict` if it exists,
    /// `NotFound` if the account does not.
    async fn create_pep_node(
        &self,
        owner: &str,
        node: &str,
        config: &NodeConfig,
        max_nodes: u32,
    ) -> StorageResult<PepCreate>;
    /// Replaces the configuration and drops the oldest items beyond the new `max_items` (every
    /// item when `persist_items` is off). False if there is no such node.
    async fn configure_pep_node(
        &self,
        owner: &str,
        node: &str,
        config: &NodeConfig,
    ) -> StorageResult<bool>;
    /// Deletes the node with its items; false if there was no such node.
    async fn delete_pep_node(&self, owner: &str, node: &str) -> StorageResult<bool>;
    /// Stores the item as the node's newest, replacing one with the same id, then drops the
    /// oldest items beyond the node's `max_items`. `NotFound` if there is no such node.
    async fn publish_pep_item(&self, owner: &str, node: &str, item: &PepItem) -> StorageResult<()>;
    /// The newest `max` items (all when `None`), oldest first.
    async fn pep_items(
        &self,
        owner: &str,
        node: &str,
        max: Option<u32>,
    ) -> StorageResult<Vec<PepItem>>;
    /// The items with these ids that exist, oldest first.
    async fn pep_items_by_id(
        &self,
        owner: &str,
        node: &str,
        ids: &[String],
    ) -> StorageResult<Vec<PepItem>>;
    /// The newest item of each of these nodes that has one, as (node, item), sorted by node.
    async fn pep_last_items(
        &self,
        owner: &str,
        nodes: &[String],
    ) -> StorageResult<Vec<(String, PepItem)>>;
    /// Removes one item; false if it did not exist.
    async fn retract_pep_item(&self, owner: &str, node: &str, id: &str) -> StorageResult<bool>;
    /// Removes every item of the node; how many there were.
    async fn purge_pep_node(&self, owner: &str, node: &str) -> StorageResult<u64>;
}

/// SQL placeholders `$first, $first+1, …` for an `IN (…)` list of `n` values (both backends
/// accept numbered placeholders).
pub(super) fn placeholders(n: usize, first: usize) -> String {
    (0..n)
        .map(|i| format!("${}", first + i))
        .collect::<Vec<_>>()
        .join(", ")
}
