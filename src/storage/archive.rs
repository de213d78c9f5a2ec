//! The message archive (XEP-0313): one row per archived message, keyed by the archive's owner
//! (a bare JID: `user@domain` for a user, `room@service` for a MUC room) and the message's
//! server-generated, time-sortable id (see `crate::ids`). Ids are globally unique and their
//! order is the archive order, so every page is one range scan of `(owner, id)` or
//! `(owner, with, id)`.

use async_trait::async_trait;

use super::StorageResult;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedMessage {
    /// The archive's bare JID.
    pub owner: String,
    pub id: i64,
    /// Milliseconds since the Unix epoch at which the server archived it.
    pub timestamp_ms: i64,
    /// The other party's bare JID (the `with` of a query).
    pub with: String,
    /// The owner sent it (rather than received it).
    pub outgoing: bool,
    /// The message as serialized XML.
    pub stanza: String,
}

/// Which rows of one archive a query covers. Every bound is optional; all given ones apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveFilter {
    pub with: Option<String>,
    /// `timestamp_ms >= start_ms`.
    pub start_ms: Option<i64>,
    /// `timestamp_ms <= end_ms`.
    pub end_ms: Option<i64>,
    /// `id > after_id` (exclusive).
    pub after_id: Option<i64>,
    /// `id < before_id` (exclusive).
    pub before_id: Option<i64>,
    /// Only these ids.
    pub ids: Option<Vec<i64>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveQuery {
    pub filter: ArchiveFilter,
    /// Rows per page.
    pub limit: u32,
    /// Take the newest `limit` rows of the filtered range instead of the oldest.
    pub backward: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivePage {
    /// Always in ascending id (chronological) order, also for a backward page.
    pub rows: Vec<ArchivedMessage>,
    /// No filtered row lies beyond this page in the paging direction (after the last row
    /// going forward, before the first row going backward).
    pub complete: bool,
}

/// One end of an archive: its oldest or newest message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveBound {
    pub id: i64,
    pub timestamp_ms: i64,
}

/// XEP-0313 §7 default archiving behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveDefault {
    Always,
    Never,
    /// Only messages with JIDs in the owner's roster.
    Roster,
}

impl ArchiveDefault {
    pub fn as_str(self) -> &'static str {
        match self {
            ArchiveDefault::Always => "always",
            ArchiveDefault::Never => "never",
            ArchiveDefault::Roster => "roster",
        }
    }

    pub fn parse(s: &str) -> Option<ArchiveDefault> {
        match s {
            "always" => Some(ArchiveDefault::Always),
            "never" => Some(ArchiveDefault::Never),
            "roster" => Some(ArchiveDefault::Roster),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivePrefs {
    pub default: ArchiveDefault,
    /// Bare JIDs always archived, whatever the default.
    pub always: Vec<String>,
    /// Bare JIDs never archived (wins over `always` if a JID is in both).
    pub never: Vec<String>,
}

#[async_trait]
pub trait ArchiveStore: Send + Sync {
    /// Stores the batch in one transaction. A record whose id is already stored is skipped, so
    /// the writer can retry a batch whose commit succeeded but whose answer was lost without
    /// storing anything twice.
    async fn archive_append(&self, batch: &[ArchivedMessage]) -> StorageResult<()>;
    /// One page of `owner`'s archive.
    async fn archive_query(&self, owner: &str, query: &ArchiveQuery) -> StorageResult<ArchivePage>;
    /// How many rows `filter` covers.
    async fn archive_count(&self, owner: &str, filter: &ArchiveFilter) -> StorageResult<u64>;
    /// Whether `owner`'s archive holds the message `id`.
    async fn archive_contains(&self, owner: &str, id: i64) -> StorageResult<bool>;
    /// The oldest and newest message, `None` for an empty archive.
    async fn archive_bounds(
        &self,
        owner: &str,
    ) -> StorageResult<Option<(ArchiveBound, ArchiveBound)>>;
    /// Deletes all but the newest `keep` messages of `owner`; returns how many went.
    async fn archive_trim(&self, owner: &str, keep: u64) -> StorageResult<u64>;
    /// Deletes every message (of every archive) archived before `before_ms`.
    async fn archive_expire(&self, before_ms: i64) -> StorageResult<u64>;
    /// Deletes `owner`'s messages and preferences (account or room deletion).
    async fn archive_delete_owner(&self, owner: &str) -> StorageResult<u64>;
    async fn archive_prefs(&self, owner: &str) -> StorageResult<Option<ArchivePrefs>>;
    async fn set_archive_prefs(&self, owner: &str, prefs: &ArchivePrefs) -> StorageResult<()>;
}

/// JSON for a JID list column.
pub(super) fn jids_to_json(jids: &[String]) -> String {
    serde_json::to_string(jids).unwrap_or_else(|_| "[]".into())
}

pub(super) fn jids_from_json(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}
