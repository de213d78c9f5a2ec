//! XEP-0191 blocklists.

use std::collections::HashSet;

use async_trait::async_trait;

use super::StorageResult;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockWrite {
    /// Stored; how many of the given JIDs were not blocked before.
    Stored(u64),
    /// The new JIDs would take the list past its cap; nothing was stored.
    Full,
}

/// Each account's list of blocked JIDs. JIDs are stored as the caller gives them (already
/// normalized strings); the store does not interpret them.
#[async_trait]
pub trait BlocklistStore: Send + Sync {
    /// The blocked JIDs, sorted.
    async fn blocklist(&self, username: &str) -> StorageResult<Vec<String>>;
    /// Adds `jids` (duplicates and already blocked ones are fine) unless the list would then
    /// hold more than `max_items`. The check and the insert are one transaction, so concurrent
    /// requests cannot overshoot the cap. `NotFound` if the account does not exist.
    async fn block(
        &self,
        username: &str,
        jids: &[String],
        max_items: u32,
    ) -> StorageResult<BlockWrite>;
    /// Removes `jids`; how many were blocked.
    async fn unblock(&self, username: &str, jids: &[String]) -> StorageResult<u64>;
    /// Empties the list; how many JIDs were blocked.
    async fn unblock_all(&self, username: &str) -> StorageResult<u64>;
}

/// The distinct JIDs of `jids` that are not in `existing`.
pub(super) fn new_jids<'a>(jids: &'a [String], existing: &HashSet<String>) -> Vec<&'a str> {
    let mut fresh: Vec<&str> = jids
        .iter()
        .map(String::as_str)
        .filter(|j| !existing.contains(*j))
        .collect();
    fresh.sort_unstable();
    fresh.dedup();
    fresh
}
