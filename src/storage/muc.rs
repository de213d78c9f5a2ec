//! XEP-0045 persistent rooms: each room's configuration and subject, and its affiliation list.
//! Occupants and history live in memory only.

use async_trait::async_trait;

use super::StorageResult;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRoom {
    /// The room's bare JID (`room@conference.example.org`), already normalized.
    pub jid: String,
    /// The room configuration, serialized by the MUC module (opaque to storage).
    pub config: String,
    pub subject: String,
    /// Nick of whoever set the subject, empty if unknown.
    pub subject_nick: String,
}

/// One entry of a room's affiliation list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAffiliation {
    /// A bare JID, as the module normalized it.
    pub jid: String,
    /// `owner`, `admin`, `member` or `outcast` (`none` is never stored).
    pub affiliation: String,
}

#[async_trait]
pub trait MucStore: Send + Sync {
    /// Every stored room, sorted by JID.
    async fn muc_rooms(&self) -> StorageResult<Vec<StoredRoom>>;
    /// Inserts or replaces the room's row (its affiliations are kept).
    async fn save_muc_room(&self, room: &StoredRoom) -> StorageResult<()>;
    /// Deletes the room and its affiliations; false if it was not stored.
    async fn delete_muc_room(&self, jid: &str) -> StorageResult<bool>;
    /// The room's affiliations, sorted by JID.
    async fn muc_affiliations(&self, room: &str) -> StorageResult<Vec<StoredAffiliation>>;
    /// Sets one JID's affiliation; `None` removes it. `NotFound` if the room is not stored.
    async fn set_muc_affiliation(
        &self,
        room: &str,
        jid: &str,
        affiliation: Option<&str>,
    ) -> StorageResult<()>;
}
