//! SQLite backend, for single-node deployments that want no database server.
//!
//! SQLite allows one writer at a time. Every write transaction starts with `BEGIN IMMEDIATE`,
//! which takes the write lock up front (waiting up to the busy timeout): a deferred transaction
//! that reads and then writes could instead fail with `SQLITE_BUSY` when another writer got in
//! between, and its read (e.g. the offline cap check) could be stale.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use super::{
    conflict_on_unique, count_from_db, iterations_from_db, AccountStore, OfflineMessage,
    OfflinePush, OfflineStore, ScramCredentials, ScramHash, StorageError, StorageResult,
};

mod archive;
mod blocking;
mod fast;
mod muc;
mod nodes;
mod pep;
mod push;
mod roster;
mod secrets;
mod vcard;

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

    async fn begin_write(&self) -> StorageResult<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
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

async fn account_exists_in(
    tx: &mut Transaction<'_, Sqlite>,
    username: &str,
) -> StorageResult<bool> {
    let row = sqlx::query("SELECT 1 FROM accounts WHERE username = ?")
        .bind(username)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.is_some())
}

async fn insert_credentials(
    tx: &mut Transaction<'_, Sqlite>,
    username: &str,
    creds: &[ScramCredentials],
) -> StorageResult<()> {
    for c in creds {
        sqlx::query(
            "INSERT INTO scram_credentials \
             (username, hash, salt, iterations, stored_key, server_key) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(username)
        .bind(c.hash.as_str())
        .bind(&c.salt)
        .bind(i64::from(c.iterations))
        .bind(&c.stored_key)
        .bind(&c.server_key)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

#[async_trait]
impl AccountStore for SqliteStorage {
    async fn qualify_accounts(&self, domain: &str) -> StorageResult<u64> {
        let mut tx = self.begin_write().await?;
        let mut moved = 0;
        for (i, statement) in crate::storage::qualify::STATEMENTS.iter().enumerate() {
            let done = sqlx::query(statement)
                .bind(domain)
                .execute(&mut *tx)
                .await?;
            if i == 0 {
                moved = done.rows_affected();
            }
        }
        tx.commit().await?;
        Ok(moved)
    }

    async fn create_account(
        &self,
        username: &str,
        creds: &[ScramCredentials],
    ) -> StorageResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO accounts (username) VALUES (?)")
            .bind(username)
            .execute(&mut *tx)
            .await
            .map_err(conflict_on_unique)?;
        insert_credentials(&mut tx, username, creds).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_credentials(
        &self,
        username: &str,
        creds: &[ScramCredentials],
    ) -> StorageResult<()> {
        let mut tx = self.begin_write().await?;
        if !account_exists_in(&mut tx, username).await? {
            tx.rollback().await?;
            return Err(StorageError::NotFound);
        }
        sqlx::query("DELETE FROM scram_credentials WHERE username = ?")
            .bind(username)
            .execute(&mut *tx)
            .await?;
        // A new password revokes the FAST tokens (XEP-0484) that the old one obtained.
        sqlx::query("DELETE FROM fast_tokens WHERE username = ?")
            .bind(username)
            .execute(&mut *tx)
            .await?;
        insert_credentials(&mut tx, username, creds).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_account(&self, username: &str) -> StorageResult<()> {
        // Credentials and offline messages go with it through ON DELETE CASCADE.
        let done = sqlx::query("DELETE FROM accounts WHERE username = ?")
            .bind(username)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound);
        }
        Ok(())
    }

    async fn account_exists(&self, username: &str) -> StorageResult<bool> {
        let row = sqlx::query("SELECT 1 FROM accounts WHERE username = ?")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    async fn credentials(
        &self,
        username: &str,
        hash: ScramHash,
    ) -> StorageResult<Option<ScramCredentials>> {
        let row = sqlx::query(
            "SELECT salt, iterations, stored_key, server_key FROM scram_credentials \
             WHERE username = ? AND hash = ?",
        )
        .bind(username)
        .bind(hash.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(ScramCredentials {
            hash,
            salt: row.try_get("salt")?,
            iterations: iterations_from_db(row.try_get("iterations")?)?,
            stored_key: row.try_get("stored_key")?,
            server_key: row.try_get("server_key")?,
        }))
    }

    async fn list_accounts(&self) -> StorageResult<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT username FROM accounts ORDER BY username")
                .fetch_all(&self.pool)
                .await?,
        )
    }
}

#[async_trait]
impl OfflineStore for SqliteStorage {
    async fn push(
        &self,
        username: &str,
        msg: &OfflineMessage,
        cap: u32,
    ) -> StorageResult<OfflinePush> {
        // BEGIN IMMEDIATE makes this the only writer until commit, so nobody can insert
        // between the count and the insert.
        let mut tx = self.begin_write().await?;
        if !account_exists_in(&mut tx, username).await? {
            tx.rollback().await?;
            return Err(StorageError::NotFound);
        }
        let waiting: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM offline_messages WHERE username = ?")
                .bind(username)
                .fetch_one(&mut *tx)
                .await?;
        if count_from_db(waiting) >= u64::from(cap) {
            // Released now rather than whenever the dropped transaction gets rolled back, so
            // the next writer is not kept waiting.
            tx.rollback().await?;
            return Ok(OfflinePush::Full);
        }
        sqlx::query(
            "INSERT INTO offline_messages (id, username, received_at_ms, stanza) \
             VALUES (?, ?, ?, ?)",
        )
        .bind(msg.id)
        .bind(username)
        .bind(msg.received_at_ms)
        .bind(&msg.stanza)
        .execute(&mut *tx)
        .await
        .map_err(conflict_on_unique)?;
        tx.commit().await?;
        Ok(OfflinePush::Stored)
    }

    async fn peek(&self, username: &str) -> StorageResult<Vec<OfflineMessage>> {
        let rows = sqlx::query(
            "SELECT id, received_at_ms, stanza FROM offline_messages \
             WHERE username = ? ORDER BY id",
        )
        .bind(username)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(OfflineMessage {
                    id: row.try_get("id")?,
                    received_at_ms: row.try_get("received_at_ms")?,
                    stanza: row.try_get("stanza")?,
                })
            })
            .collect()
    }

    async fn remove_up_to(&self, username: &str, up_to_id: i64) -> StorageResult<u64> {
        let done = sqlx::query("DELETE FROM offline_messages WHERE username = ? AND id <= ?")
            .bind(username)
            .bind(up_to_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn count(&self, username: &str) -> StorageResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM offline_messages WHERE username = ?")
            .bind(username)
            .fetch_one(&self.pool)
            .await?;
        Ok(count_from_db(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_urls_are_recognised() {
        assert!(is_in_memory("sqlite::memory:"));
        assert!(is_in_memory("sqlite://file.db?mode=memory"));
        assert!(!is_in_memory("sqlite://./data/corvid.db"));
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
