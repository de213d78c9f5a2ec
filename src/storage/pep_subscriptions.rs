//! Explicit XEP-0060 subscriptions to PEP nodes (§6.1), keyed by (owner, node, subscriber JID
//! as given, bare or full); they go when their node does.

use async_trait::async_trait;

use super::StorageResult;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PepSubscribe {
    /// Subscribed now or already.
    Subscribed,
    /// The node already has `max_per_node` subscribers; nothing was stored.
    Full,
}

#[async_trait]
pub trait PepSubscriptionStore: Send + Sync {
    /// Subscribes `subscriber` unless the node already has `max_per_node` other subscribers;
    /// `NotFound` if there is no such node.
    async fn subscribe_pep(
        &self,
        owner: &str,
        node: &str,
        subscriber: &str,
        max_per_node: u32,
    ) -> StorageResult<PepSubscribe>;
    /// False if there was no such subscription.
    async fn unsubscribe_pep(
        &self,
        owner: &str,
        node: &str,
        subscriber: &str,
    ) -> StorageResult<bool>;
    /// The subscribers of one node, sorted.
    async fn pep_subscribers(&self, owner: &str, node: &str) -> StorageResult<Vec<String>>;
    /// Every subscription to the owner's nodes as (node, subscriber), sorted.
    async fn pep_subscriptions(&self, owner: &str) -> StorageResult<Vec<(String, String)>>;
}
