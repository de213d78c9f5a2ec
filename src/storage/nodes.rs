//! Node numbers: the bits of every sortable id that say which node made it (`crate::ids`).
//! Nodes sharing a database get different numbers, so their ids never collide; a node keeps
//! its number across restarts, so its ids stay in the order they were made.

use async_trait::async_trait;

use super::StorageResult;

/// How often a node retries when another node took the number it was about to claim.
pub const CLAIM_ATTEMPTS: usize = 8;

/// The lowest number not yet taken, below `limit`: one statement, the same on both backends
/// except for the placeholder.
pub const LOWEST_FREE_NUMBER: &str = "WITH RECURSIVE candidate(n) AS \
    (SELECT 0 UNION ALL SELECT n + 1 FROM candidate WHERE n + 1 < {limit}) \
    SELECT MIN(n) FROM candidate WHERE n NOT IN (SELECT number FROM cluster_nodes)";

#[async_trait]
pub trait NodeStore: Send + Sync {
    /// The number registered for `name`; a name seen for the first time gets the lowest free
    /// number below `limit`. `None` when all of them are taken.
    async fn node_number(&self, name: &str, limit: u16) -> StorageResult<Option<u16>>;
}
