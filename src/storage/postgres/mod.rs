//! PostgreSQL backend, for deployments that already run a database server or want several
//! server nodes to share one store.
//!
//! Transactions run at READ COMMITTED. Where a read decides a write (the offline cap, replacing
//! credentials), the account row is locked first with `FOR NO KEY UPDATE`: that serialises
//! writers of the same account without blocking other accounts, and without conflicting with
//! the key-share locks that foreign-key checks take on the same row.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};

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

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// How long an operation waits for a connection, unless `storage.timeout_ms` says otherwise.
/// While the database is down or restarting, sqlx keeps reconnecting within this time, so a
/// restart shorter than it is not even noticed; past it the operation fails (rather than
/// hold up a login or a stanza for sqlx's default 30 s).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct PostgresStorage {
    pool: PgPool,
}

impl PostgresStorage {
    /// Connects to `postgres://…` and brings the schema up to date, in whatever schema the
    /// URL's `search_path` selects (normally `public`).
    pub async fn open(url: &str) -> StorageResult<Self> {
        PostgresStorage::open_with(url, ACQUIRE_TIMEOUT).await
    }

    /// `open`, with operations waiting up to `timeout` for a connection.
    pub async fn open_with(url: &str, timeout: Duration) -> StorageResult<Self> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .acquire_timeout(timeout)
            .before_acquire(|conn, _| Box::pin(async move { Ok(reusable(conn)) }))
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(PostgresStorage { pool })
    }

    /// Like `open`, but keeps every table (and the migration history) in `schema`, creating
    /// it if missing. This lets several corvid instances, or concurrent test runs, share one
    /// database without seeing each other's data.
    ///
    /// `schema` must be a plain lower-case identifier (`[a-z_][a-z0-9_]*`, at most 63 bytes)
    /// because it is spliced into SQL and into the connection's startup options.
    pub async fn open_with_schema(url: &str, schema: &str) -> StorageResult<Self> {
        if !is_plain_identifier(schema) {
            return Err(StorageError::Database(sqlx::Error::Configuration(
                format!("invalid PostgreSQL schema name '{schema}': expected [a-z_][a-z0-9_]*")
                    .into(),
            )));
        }
        let options = PgConnectOptions::from_str(url)?.options([("search_path", schema)]);
        let pool = PgPoolOptions::new()
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .before_acquire(|conn, _| Box::pin(async move { Ok(reusable(conn)) }))
            .connect_with(options)
            .await?;
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
            .execute(&pool)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(PostgresStorage { pool })
    }

    /// Waits for in-flight queries and closes every connection, e.g. before dropping the
    /// schema they use.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A connection left inside a transaction (its rollback failed, e.g. as the server went away
/// mid-commit) is closed rather than handed out again: every later `BEGIN` on it would fail.
fn reusable(conn: &mut sqlx::PgConnection) -> bool {
    use sqlx::Connection;
    !conn.is_in_transaction()
}

fn is_plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    name.len() <= 63
        && (first.is_ascii_lowercase() || first == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Locks the account row until the end of `tx`; false if there is no such account.
async fn lock_account(tx: &mut Transaction<'_, Postgres>, username: &str) -> StorageResult<bool> {
    let row = sqlx::query("SELECT 1 FROM accounts WHERE username = $1 FOR NO KEY UPDATE")
        .bind(username)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.is_some())
}

async fn insert_credentials(
    tx: &mut Transaction<'_, Postgres>,
    username: &str,
    creds: &[ScramCredentials],
) -> StorageResult<()> {
    for c in creds {
        sqlx::query(
            "INSERT INTO scram_credentials \
             (username, hash, salt, iterations, stored_key, server_key) \
             VALUES ($1, $2, $3, $4, $5, $6)",
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
impl AccountStore for PostgresStorage {
    async fn qualify_accounts(&self, domain: &str) -> StorageResult<u64> {
        let mut tx = self.pool.begin().await?;
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
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO accounts (username) VALUES ($1)")
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
        let mut tx = self.pool.begin().await?;
        // Without the lock, two concurrent replacements could both delete, then both insert
        // and fail on the (username, hash) key.
        if !lock_account(&mut tx, username).await? {
            tx.rollback().await?;
            return Err(StorageError::NotFound);
        }
        sqlx::query("DELETE FROM scram_credentials WHERE username = $1")
            .bind(username)
            .execute(&mut *tx)
            .await?;
        // A new password revokes the FAST tokens (XEP-0484) that the old one obtained.
        sqlx::query("DELETE FROM fast_tokens WHERE username = $1")
            .bind(username)
            .execute(&mut *tx)
            .await?;
        insert_credentials(&mut tx, username, creds).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_account(&self, username: &str) -> StorageResult<()> {
        // Credentials and offline messages go with it through ON DELETE CASCADE.
        let done = sqlx::query("DELETE FROM accounts WHERE username = $1")
            .bind(username)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound);
        }
        Ok(())
    }

    async fn account_exists(&self, username: &str) -> StorageResult<bool> {
        let row = sqlx::query("SELECT 1 FROM accounts WHERE username = $1")
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
             WHERE username = $1 AND hash = $2",
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
        // The column's "C" collation makes this byte order, the same as SQLite.
        Ok(
            sqlx::query_scalar("SELECT username FROM accounts ORDER BY username")
                .fetch_all(&self.pool)
                .await?,
        )
    }
}

#[async_trait]
impl OfflineStore for PostgresStorage {
    async fn push(
        &self,
        username: &str,
        msg: &OfflineMessage,
        cap: u32,
    ) -> StorageResult<OfflinePush> {
        let mut tx = self.pool.begin().await?;
        // READ COMMITTED alone would let two senders both count cap-1 and both insert; holding
        // the account row lock makes the count and the insert one step per account.
        if !lock_account(&mut tx, username).await? {
            tx.rollback().await?;
            return Err(StorageError::NotFound);
        }
        let waiting: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM offline_messages WHERE username = $1")
                .bind(username)
                .fetch_one(&mut *tx)
                .await?;
        if count_from_db(waiting) >= u64::from(cap) {
            tx.rollback().await?;
            return Ok(OfflinePush::Full);
        }
        sqlx::query(
            "INSERT INTO offline_messages (id, username, received_at_ms, stanza) \
             VALUES ($1, $2, $3, $4)",
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
             WHERE username = $1 ORDER BY id",
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
        let done = sqlx::query("DELETE FROM offline_messages WHERE username = $1 AND id <= $2")
            .bind(username)
            .bind(up_to_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn count(&self, username: &str) -> StorageResult<u64> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM offline_messages WHERE username = $1")
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
    fn schema_names_are_checked_before_use() {
        assert!(is_plain_identifier("corvid"));
        assert!(is_plain_identifier("_corvid_test_0af3"));
        assert!(!is_plain_identifier(""));
        assert!(!is_plain_identifier("Corvid"));
        assert!(!is_plain_identifier("1abc"));
        assert!(!is_plain_identifier("a\"; DROP TABLE x; --"));
        assert!(!is_plain_identifier("a b"));
        assert!(!is_plain_identifier(&"a".repeat(64)));
    }

    #[tokio::test]
    async fn bad_schema_name_is_rejected_without_connecting() {
        let r = PostgresStorage::open_with_schema("postgres://nobody@127.0.0.1:1/x", "a;b").await;
        assert!(matches!(
            r,
            Err(StorageError::Database(sqlx::Error::Configuration(_)))
        ));
    }
}
