//! SQLite backend, for single-node deployments that want no database server.
//!
//! SQLite allows one writer at a time. Every write transaction starts with `BEGIN IMMEDIATE`,
//! which takes the write lock up front (waiting up to the busy timeout): a deferred transaction
//! that reads and then writes could instead fail with `SQLITE_BUSY` when another writer got in
//! between, and its read (e.g. the offline cap check) could be stale.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::sql::{sql_stores, Dialect};
use super::{ArchivedMessage, StorageResult};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// How long a writer waits for another one before giving up with `SQLITE_BUSY`, unless
/// `storage.timeout_ms` says otherwise. Transactions here are a handful of statements, so
/// this is only reached if the disk is stuck or another process holds the database locked;
/// a brief lock is waited out.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct SqliteStorage {
    pool: SqlitePool,
}

impl SqliteStorage {
    /// Opens `sqlite://path` (creating the file and its folder if missing) or `sqlite::memory:`,
    /// and brings the schema up to date.
    pub async fn open(url: &str) -> StorageResult<Self> {
        SqliteStorage::open_with(url, BUSY_TIMEOUT).await
    }

    /// `open`, waiting up to `timeout` for a lock another connection holds.
    pub async fn open_with(url: &str, timeout: Duration) -> StorageResult<Self> {
        let in_memory = is_in_memory(url);
        let mut options = SqliteConnectOptions::from_str(url)?
            .foreign_keys(true)
            .busy_timeout(timeout);

        let pool = if in_memory {
            // An in-memory database lives only as long as a connection to it, and each
            // connection could otherwise end up with its own. One connection that never
            // expires keeps a single database for the life of the pool.
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(options)
                .await?
        } else {
            if let Some(dir) = options.get_filename().parent() {
                if !dir.as_os_str().is_empty() {
                    tokio::fs::create_dir_all(dir).await?;
                }
            }
            // WAL lets readers proceed while a write is in progress; with WAL, NORMAL only
            // risks losing the last transactions on power loss, never corrupting the file.
            options = options
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                // 64 MiB of page cache per connection instead of SQLite's 2 MiB: archive
                // appends for many users touch index pages all over the file, and every page
                // not cached is read back before it is written.
                .pragma("cache_size", "-65536");
            SqlitePoolOptions::new()
                // Waiting for a pooled connection is bounded by the same timeout as a lock.
                .acquire_timeout(timeout)
                // sqlx pings a connection before handing it out by default: for a file
                // opened in this process that tests nothing, and each ping is a round trip
                // to the connection's thread, one more than the statement itself.
                .test_before_acquire(false)
                .before_acquire(|conn, _| Box::pin(async move { Ok(reusable(conn)) }))
                .after_connect(|conn, _| Box::pin(check_writable(conn)))
                .connect_with(options)
                .await?
        };

        MIGRATOR.run(&pool).await?;
        Ok(SqliteStorage { pool })
    }

    /// Waits for in-flight queries and closes every connection, so the WAL is checkpointed and
    /// the file can be copied or removed safely.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

impl Dialect for SqliteStorage {
    /// Takes the database's write lock up front (see the module comment).
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    /// Nothing to lock row by row: the transaction already holds the only write lock.
    const LOCK_ROWS: &'static str = "";
    type Limit = i64;

    /// A negative `LIMIT` is no limit (`LIMIT NULL` is an error here).
    fn row_limit(max: Option<u32>) -> i64 {
        max.map_or(-1, i64::from)
    }
}

sql_stores!(SqliteStorage, sqlx::Sqlite);

/// Rows per archive INSERT statement (6 parameters each, well under SQLite's limit).
const APPEND_CHUNK: usize = 500;

impl SqliteStorage {
    /// Archive appends: multi-row INSERTs in one write transaction, far fewer statements than
    /// one per row.
    pub(super) async fn archive_insert(&self, batch: &[ArchivedMessage]) -> StorageResult<()> {
        let mut tx = self.begin_write().await?;
        for chunk in batch.chunks(APPEND_CHUNK) {
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO archive (id, owner, ts_ms, with_jid, outgoing, stanza) ",
            );
            qb.push_values(chunk, |mut row, m| {
                row.push_bind(m.id)
                    .push_bind(m.owner.as_str())
                    .push_bind(m.timestamp_ms)
                    .push_bind(m.with.as_str())
                    .push_bind(m.outgoing)
                    .push_bind(m.stanza.as_str());
            });
            qb.push(" ON CONFLICT DO NOTHING");
            qb.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Whether a pooled connection may be handed out again; if not, the pool closes it and opens
/// another. One still inside a transaction would refuse every later `BEGIN` ("non-zero
/// transaction depth") long after the database is fine again: that happens when a commit
/// failed on an I/O error (disk full, file not writable), SQLite rolled back by itself and
/// sqlx's own rollback failed too.
fn reusable(conn: &mut sqlx::SqliteConnection) -> bool {
    use sqlx::Connection;
    !conn.is_in_transaction()
}

/// A new connection is refused while the database cannot be written: SQLite would open it
/// read-only (its write-ahead log too) and it would stay so for life, failing writes long
/// after the file is writable again. A passive checkpoint writes if it can and never waits
/// for another connection, so it tells this cheaply (and only when a connection opens).
async fn check_writable(conn: &mut sqlx::SqliteConnection) -> Result<(), sqlx::Error> {
    match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .execute(conn)
        .await
    {
        Err(sqlx::Error::Database(e)) if is_unwritable(e.code().as_deref()) => {
            Err(sqlx::Error::Database(e))
        }
        // Anything else (e.g. busy) says nothing about writability.
        _ => Ok(()),
    }
}

/// SQLITE_READONLY (8) or SQLITE_IOERR (10), with any extended code.
fn is_unwritable(code: Option<&str>) -> bool {
    code.and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|c| matches!(c & 0xff, 8 | 10))
}

fn is_in_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::AccountStore;

    #[test]
    fn memory_urls_are_recognised() {
        assert!(is_in_memory("sqlite::memory:"));
        assert!(is_in_memory("sqlite://file.db?mode=memory"));
        assert!(!is_in_memory("sqlite://./data/corvid.db"));
    }

    /// The shared SQL (`super::sql`) relies on this: sqlx binds `$N` by number on SQLite too,
    /// including a number used twice.
    #[tokio::test]
    async fn numbered_placeholders_bind_by_number() {
        let s = SqliteStorage::open("sqlite::memory:").await.unwrap();
        let joined: String = sqlx::query_scalar("SELECT $2 || $1 || $2")
            .bind("a")
            .bind("b")
            .fetch_one(&s.pool)
            .await
            .unwrap();
        assert_eq!(joined, "bab");
        s.close().await;
    }

    #[tokio::test]
    async fn in_memory_database_is_shared_by_all_queries() {
        let s = SqliteStorage::open("sqlite::memory:").await.unwrap();
        s.create_account("alice", &[]).await.unwrap();
        for _ in 0..5 {
            assert!(s.account_exists("alice").await.unwrap());
        }
        s.close().await;
    }
}
