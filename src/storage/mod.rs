//! Storage behind traits, one per concern. The server only ever talks to these traits; the
//! SQLite and PostgreSQL implementations are chosen once, from the configured URL. Both run the
//! same SQL (`sql`); `sqlite` and `postgres` hold only how each connects, migrates and where its
//! dialect differs.

mod admin;
mod archive;
mod blocking;
mod fast;
mod invites;
mod login_times;
mod muc;
pub mod nodes;
mod pep;
mod pep_subscriptions;
mod postgres;
mod private_xml;
mod push;
mod qualify;
mod roster;
mod roster_cache;
mod secrets;
mod sql;
mod sqlite;
mod uploads;
mod vcard;

use std::sync::Arc;

use async_trait::async_trait;

pub use admin::AdminStore;
pub use archive::{
    ArchiveBound, ArchiveDefault, ArchiveFilter, ArchivePage, ArchivePrefs, ArchiveQuery,
    ArchiveStore, ArchivedMessage,
};
pub use blocking::{BlockWrite, BlocklistStore};
pub use fast::{FastSlot, FastToken, FastTokenStore};
pub use invites::{InviteState, InviteStore, StoredInvite};
pub use login_times::BatchedLoginTimes;
pub use muc::{MucStore, StoredAffiliation, StoredRoom};
pub use nodes::NodeStore;
pub use pep::{AccessModel, NodeConfig, PepCreate, PepItem, PepNode, PepStore, SendLastItem};
pub use pep_subscriptions::{PepSubscribe, PepSubscriptionStore};
pub use postgres::PostgresStorage;
pub use private_xml::{PrivateXmlStore, PrivateXmlWrite};
pub use push::{PushRegistration, PushStore};
pub use roster::{
    LastActivity, LastActivityStore, RosterItem, RosterStore, RosterWrite, Subscription,
};
pub use roster_cache::CachedRosterStore;
pub use secrets::ServerSecretStore;
pub use sqlite::SqliteStorage;
pub use uploads::{StoredUpload, UploadStore, UploadUsage};
pub use vcard::{StoredVcard, VcardStore};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("already exists")]
    Conflict,
    #[error("not found")]
    NotFound,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported storage url '{0}': expected sqlite://… or postgres://…")]
    UnsupportedUrl(String),
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
}

pub type StorageResult<T> = Result<T, StorageError>;

/// Which SCRAM hash a credential set belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramHash {
    Sha1,
    Sha256,
}

impl ScramHash {
    pub fn as_str(self) -> &'static str {
        match self {
            ScramHash::Sha1 => "SCRAM-SHA-1",
            ScramHash::Sha256 => "SCRAM-SHA-256",
        }
    }
}

/// What RFC 5802 lets a server keep instead of the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramCredentials {
    pub hash: ScramHash,
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

/// An account's credentials for one hash, with its standing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginCredentials {
    pub credentials: ScramCredentials,
    pub disabled: bool,
}

/// Accounts of the hosted domains, each keyed by its bare JID (`alice@example.org`, already in
/// normal form). So is everything stored per account in the other stores: the `username` and
/// `owner` parameters everywhere are that key.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Moves accounts an earlier single-domain release stored under their localpart alone to
    /// `localpart@domain`, with everything stored for them (see `qualify`); how many moved.
    async fn qualify_accounts(&self, domain: &str) -> StorageResult<u64>;
    /// Creates the account with one credential set per hash; `Conflict` if it exists.
    async fn create_account(&self, username: &str, creds: &[ScramCredentials])
        -> StorageResult<()>;
    /// Replaces every credential set of an existing account and revokes its FAST tokens;
    /// `NotFound` if there is none.
    async fn set_credentials(
        &self,
        username: &str,
        creds: &[ScramCredentials],
    ) -> StorageResult<()>;
    /// Deletes the account and everything stored for it (offline messages included);
    /// `NotFound` if there is none.
    async fn delete_account(&self, username: &str) -> StorageResult<()>;
    async fn account_exists(&self, username: &str) -> StorageResult<bool>;
    async fn credentials(
        &self,
        username: &str,
        hash: ScramHash,
    ) -> StorageResult<Option<ScramCredentials>> {
        Ok(self
            .login_credentials(username, hash)
            .await?
            .map(|login| login.credentials))
    }
    /// What a password login reads: `credentials`, and whether an administrator disabled the
    /// account (`AdminStore::is_disabled`), in one statement instead of two.
    async fn login_credentials(
        &self,
        username: &str,
        hash: ScramHash,
    ) -> StorageResult<Option<LoginCredentials>>;
    /// All usernames, sorted.
    async fn list_accounts(&self) -> StorageResult<Vec<String>>;
}

/// A message kept for a user who had no available resource (XEP-0160).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineMessage {
    /// Time-sortable id (see `crate::ids`); delivery order is ascending id.
    pub id: i64,
    /// Milliseconds since the Unix epoch at which the server received it.
    pub received_at_ms: i64,
    /// The stanza as serialized XML.
    pub stanza: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfflinePush {
    Stored,
    /// The user already has `cap` messages waiting; nothing was stored.
    Full,
}

#[async_trait]
pub trait OfflineStore: Send + Sync {
    /// Stores one message unless the user already has `cap` waiting. The check and the insert
    /// are one transaction, so concurrent senders cannot overshoot the cap. `NotFound` if the
    /// account does not exist (messages live and die with their account); `Conflict` if the id
    /// is already stored.
    async fn push(
        &self,
        username: &str,
        msg: &OfflineMessage,
        cap: u32,
    ) -> StorageResult<OfflinePush>;
    /// The waiting messages in ascending id order, without removing them.
    async fn peek(&self, username: &str) -> StorageResult<Vec<OfflineMessage>>;
    /// Removes the messages with id <= `up_to_id` (those that were delivered).
    async fn remove_up_to(&self, username: &str, up_to_id: i64) -> StorageResult<u64>;
    async fn count(&self, username: &str) -> StorageResult<u64>;
}

/// A backend's connections: closing waits for queries in flight, so nothing half-written is
/// left behind (and SQLite checkpoints its WAL).
#[async_trait]
pub trait Connections: Send + Sync {
    async fn close(&self);
}

#[async_trait]
impl Connections for SqliteStorage {
    async fn close(&self) {
        SqliteStorage::close(self).await;
    }
}

#[async_trait]
impl Connections for PostgresStorage {
    async fn close(&self) {
        PostgresStorage::close(self).await;
    }
}

/// Everything the server stores, behind one handle.
#[derive(Clone)]
pub struct Storage {
    pub accounts: Arc<dyn AccountStore>,
    pub offline: Arc<dyn OfflineStore>,
    pub roster: Arc<dyn RosterStore>,
    pub last_activity: Arc<dyn LastActivityStore>,
    pub blocklist: Arc<dyn BlocklistStore>,
    pub vcard: Arc<dyn VcardStore>,
    pub pep: Arc<dyn PepStore>,
    pub private_xml: Arc<dyn PrivateXmlStore>,
    pub pep_subscriptions: Arc<dyn PepSubscriptionStore>,
    pub muc: Arc<dyn MucStore>,
    pub push: Arc<dyn PushStore>,
    pub secrets: Arc<dyn ServerSecretStore>,
    pub nodes: Arc<dyn NodeStore>,
    pub fast: Arc<dyn FastTokenStore>,
    pub archive: Arc<dyn ArchiveStore>,
    pub admin: Arc<dyn AdminStore>,
    pub invites: Arc<dyn InviteStore>,
    pub uploads: Arc<dyn UploadStore>,
    /// Where uploaded files' bytes are, when this process serves or manages uploads.
    pub upload_files: Option<Arc<dyn crate::modules::upload::FileStore>>,
    connections: Arc<dyn Connections>,
}

impl Storage {
    /// Opens (and migrates) the backend named by `url`: `sqlite://path` or `postgres://…`,
    /// with the default `storage.timeout_ms`.
    pub async fn open(url: &str) -> StorageResult<Storage> {
        Storage::open_with(&crate::config::StorageConfig {
            url: url.to_string(),
            ..Default::default()
        })
        .await
    }

    /// `open`, with every `[storage]` setting.
    pub async fn open_with(config: &crate::config::StorageConfig) -> StorageResult<Storage> {
        let url = config.url.as_str();
        if url.starts_with("sqlite:") {
            Ok(Storage::from_backend(Arc::new(
                SqliteStorage::open_with(url, config.timeout()).await?,
            )))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Storage::from_backend(Arc::new(
                PostgresStorage::open_with(url, config.timeout()).await?,
            )))
        } else {
            Err(StorageError::UnsupportedUrl(url.to_string()))
        }
    }

    /// Opens storage for a `corvid` command run with `config`: `open_with`, then
    /// `qualify_accounts` under the main domain, as a server start does.
    pub async fn open_for(config: &crate::config::Config) -> StorageResult<Storage> {
        let storage = Storage::open_with(&config.storage).await?;
        storage.qualify_accounts(&config.domain).await?;
        Ok(crate::modules::upload::attach_files(storage, config))
    }

    /// Accounts of an earlier single-domain release move under `domain` (see `qualify`).
    pub async fn qualify_accounts(&self, domain: &str) -> StorageResult<()> {
        let moved = self.accounts.qualify_accounts(domain).await?;
        if moved > 0 {
            tracing::info!(
                accounts = moved,
                %domain,
                "accounts stored by localpart are now stored by bare JID"
            );
        }
        Ok(())
    }

    /// Login times are kept in memory and written in batches (see `login_times`).
    pub fn with_batched_login_times(mut self) -> Storage {
        self.admin = Arc::new(BatchedLoginTimes::new(self.admin));
        self
    }

    /// Puts an in-memory cache of up to `max_users` rosters in front of the roster store.
    pub fn with_roster_cache(self, max_users: usize) -> Storage {
        self.with_shared_roster_cache(max_users).0
    }

    /// `with_roster_cache`, with a handle on the cache (a cluster keeps its nodes' caches
    /// in step through it).
    pub fn with_shared_roster_cache(
        mut self,
        max_users: usize,
    ) -> (Storage, Arc<CachedRosterStore>) {
        let cache = Arc::new(CachedRosterStore::new(self.roster, max_users));
        self.roster = cache.clone();
        (self, cache)
    }

    /// Wraps a backend the caller opened itself, e.g. with non-default options, while keeping
    /// its own `Arc` to call backend-specific methods such as `close()`.
    pub fn from_backend<B>(backend: Arc<B>) -> Storage
    where
        B: AccountStore
            + OfflineStore
            + RosterStore
            + LastActivityStore
            + BlocklistStore
            + VcardStore
            + PepStore
            + PrivateXmlStore
            + PepSubscriptionStore
            + MucStore
            + PushStore
            + ServerSecretStore
            + NodeStore
            + FastTokenStore
            + ArchiveStore
            + AdminStore
            + InviteStore
            + UploadStore
            + Connections
            + 'static,
    {
        Storage {
            accounts: backend.clone(),
            offline: backend.clone(),
            roster: backend.clone(),
            last_activity: backend.clone(),
            blocklist: backend.clone(),
            vcard: backend.clone(),
            pep: backend.clone(),
            private_xml: backend.clone(),
            pep_subscriptions: backend.clone(),
            muc: backend.clone(),
            push: backend.clone(),
            secrets: backend.clone(),
            nodes: backend.clone(),
            fast: backend.clone(),
            archive: backend.clone(),
            admin: backend.clone(),
            invites: backend.clone(),
            uploads: backend.clone(),
            upload_files: None,
            connections: backend,
        }
    }

    /// Deletes the account with everything stored for it, its archive included: the archive
    /// is keyed by JID, not by account (rooms have archives too), so the account's rows do not
    /// take it along. `NotFound` if there is no such account.
    pub async fn delete_account_and_archive(&self, username: &str) -> StorageResult<()> {
        self.accounts.delete_account(username).await?;
        self.archive.archive_delete_owner(username).await?;
        crate::modules::upload::delete_files_of(self, username).await?;
        Ok(())
    }

    /// Keeps uploaded files in `files`: deleting an account deletes them too.
    pub fn with_upload_files(
        mut self,
        files: Arc<dyn crate::modules::upload::FileStore>,
    ) -> Storage {
        self.upload_files = Some(files);
        self
    }

    /// Closes the backend's connections (at shutdown, after the last write).
    pub async fn close(&self) {
        if let Err(e) = self.admin.flush().await {
            tracing::warn!(error = %e, "writing the last login times failed");
        }
        self.connections.close().await;
    }
}

/// Maps a unique violation to `Conflict`: inserting and catching the violation is the only
/// race-free existence check.
fn conflict_on_unique(e: sqlx::Error) -> StorageError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StorageError::Conflict,
        _ => StorageError::Database(e),
    }
}

/// Rows that belong to an account fail their foreign key when it does not exist: `NotFound`,
/// which callers turn into the right stanza error.
fn not_found_on_foreign_key(e: sqlx::Error) -> StorageError {
    match &e {
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => StorageError::NotFound,
        _ => StorageError::Database(e),
    }
}

/// Both databases only have signed integers; the schema's CHECK keeps iterations in u32 range,
/// so a failure here means the row was written by something else.
fn iterations_from_db(n: i64) -> StorageResult<u32> {
    u32::try_from(n).map_err(|e| StorageError::Database(sqlx::Error::Decode(Box::new(e))))
}

/// COUNT(*) and rows-affected are never negative; clamping avoids a panic path for nothing.
fn count_from_db(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}
