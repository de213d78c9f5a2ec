//! PostgreSQL backend, for deployments that already run a database server or want several
//! server nodes to share one store.
//!
//! Transactions run at READ COMMITTED. Where a read decides a write (the offline, roster,
//! blocklist and PEP node caps, replacing credentials), the account row is locked first with
//! `FOR NO KEY UPDATE`: that serialises writers of the same account without blocking other
//! accounts, and without conflicting with the key-share locks that foreign-key checks take on
//! the same row. Publishing a PEP item locks its node row the same way.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::sql::{sql_stores, Dialect};
use super::{ArchivedMessage, StorageError, StorageResult};

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

impl Dialect for PostgresStorage {
    /// READ COMMITTED; where a read decides a write, `LOCK_ROWS` serialises the writers.
    const BEGIN_WRITE: &'static str = "BEGIN";
    /// Row locks that do not conflict with the key-share locks foreign-key checks take (see the
    /// module comment).
    const LOCK_ROWS: &'static str = " FOR NO KEY UPDATE";
    type Limit = Option<i64>;

    /// `LIMIT NULL` is no limit (a negative `LIMIT` is an error here).
    fn row_limit(max: Option<u32>) -> Option<i64> {
        max.map(i64::from)
    }
}

sql_stores!(PostgresStorage, sqlx::Postgres);

/// Archive appends: the whole batch in one statement whose six parameters are column arrays,
/// so its text is the same whatever the batch size (parsed and planned once per connection,
/// not once per chunk size), one round trip, and atomic without BEGIN and COMMIT of its own.
impl PostgresStorage {
    pub(super) async fn archive_insert(&self, batch: &[ArchivedMessage]) -> StorageResult<()> {
        let mut ids = Vec::with_capacity(batch.len());
        let mut owners = Vec::with_capacity(batch.len());
        let mut times = Vec::with_capacity(batch.len());
        let mut withs = Vec::with_capacity(batch.len());
        let mut outgoing = Vec::with_capacity(batch.len());
        let mut stanzas = Vec::with_capacity(batch.len());
        for m in batch {
            ids.push(m.id);
            owners.push(m.owner.as_str());
            times.push(m.timestamp_ms);
            withs.push(m.with.as_str());
            outgoing.push(m.outgoing);
            stanzas.push(m.stanza.as_str());
        }
        sqlx::query(
            "INSERT INTO archive (id, owner, ts_ms, with_jid, outgoing, stanza) \
             SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::BIGINT[], $4::TEXT[], \
             $5::BOOLEAN[], $6::TEXT[]) ON CONFLICT DO NOTHING",
        )
        .bind(ids)
        .bind(owners)
        .bind(times)
        .bind(withs)
        .bind(outgoing)
        .bind(stanzas)
        .execute(&self.pool)
        .await?;
        Ok(())
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
