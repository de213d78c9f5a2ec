//! Secrets the server generates once and keeps across restarts (and shares between cluster
//! nodes through the database): keys for values that must stay stable, such as XEP-0421
//! occupant ids and the SCRAM decoy salts of unknown users.

use async_trait::async_trait;

use super::StorageResult;

#[async_trait]
pub trait ServerSecretStore: Send + Sync {
    /// The secret stored under `name`; when there is none yet, `fresh` is stored and
    /// returned. Concurrent first calls (two nodes starting at once) agree on one value.
    async fn server_secret(&self, name: &str, fresh: &[u8]) -> StorageResult<Vec<u8>>;
}
