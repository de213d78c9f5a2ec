//! XEP-0357 push registrations: the app servers (and their nodes) a user's devices asked to be
//! woken through.

use async_trait::async_trait;

use super::StorageResult;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRegistration {
    /// The app server's JID (e.g. `p2.siacs.eu`).
    pub service: String,
    /// The node on that service which identifies one device.
    pub node: String,
    /// The `publish-options` data form the client sent with `<enable/>` (e.g. a secret),
    /// serialized, to be sent back with every notification.
    pub publish_options: Option<String>,
}

#[async_trait]
pub trait PushStore: Send + Sync {
    /// Adds or replaces the registration for (service, node), stamped with `enabled_id` (a
    /// time-sortable id, see `crate::ids`). When the user then has more than `cap`, the
    /// oldest are dropped: a reinstalled app leaves its old node behind, and the newest
    /// registrations are the ones still in use. `NotFound` without the account.
    async fn enable_push(
        &self,
        username: &str,
        registration: &PushRegistration,
        enabled_id: i64,
        cap: u32,
    ) -> StorageResult<()>;
    /// Removes the registrations on `service`: only `node` when given, else all of them.
    /// Returns how many were removed.
    async fn disable_push(
        &self,
        username: &str,
        service: &str,
        node: Option<&str>,
    ) -> StorageResult<u64>;
    /// The user's registrations, oldest first.
    async fn push_registrations(&self, username: &str) -> StorageResult<Vec<PushRegistration>>;
}
