//! Accounts, their credentials and their offline messages, plus the two steps every write
//! transaction is built from: starting it and locking the account it writes for.

/// Implements `AccountStore` and `OfflineStore` for `$storage`, whose pool runs `$db`, and
/// gives it `begin_write` and `lock_account` for the other stores.
macro_rules! account_stores {
    ($storage:ty, $db:ty) => {
        const _: () = {
            use async_trait::async_trait;
            use sqlx::{Row, Transaction};

            use $crate::storage::sql::Dialect;
            use $crate::storage::{
                conflict_on_unique, count_from_db, iterations_from_db, AccountStore,
                LoginCredentials, OfflineMessage, OfflinePush, OfflineStore, ScramCredentials,
                ScramHash, StorageError, StorageResult,
            };

            impl $storage {
                /// Starts a transaction that writes, as the dialect requires (see its
                /// `BEGIN_WRITE`).
                async fn begin_write(&self) -> StorageResult<Transaction<'static, $db>> {
                    Ok(self
                        .pool
                        .begin_with(<$storage as Dialect>::BEGIN_WRITE)
                        .await?)
                }

                /// Whether the account exists; if so, other writers of it wait until `tx` ends
                /// (see the dialect's `LOCK_ROWS`).
                async fn lock_account(
                    tx: &mut Transaction<'_, $db>,
                    username: &str,
                ) -> StorageResult<bool> {
                    let row = sqlx::query(&format!(
                        "SELECT 1 FROM accounts WHERE username = $1{}",
                        <$storage as Dialect>::LOCK_ROWS
                    ))
                    .bind(username)
                    .fetch_optional(&mut **tx)
                    .await?;
                    Ok(row.is_some())
                }
            }

            async fn insert_credentials(
                tx: &mut Transaction<'_, $db>,
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
            impl AccountStore for $storage {
                async fn qualify_accounts(&self, domain: &str) -> StorageResult<u64> {
                    let mut tx = self.begin_write().await?;
                    let mut moved = 0;
                    for (i, statement) in $crate::storage::qualify::STATEMENTS.iter().enumerate() {
                        let done = sqlx::query(statement)
                            .bind(domain)
                            .execute(&mut *tx)
                            .await?;
                        // The first statement copies the accounts; the rest follow them.
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
                    let mut tx = self.begin_write().await?;
                    // Without the lock, two concurrent replacements could both delete, then
                    // both insert and fail on the (username, hash) key.
                    if !<$storage>::lock_account(&mut tx, username).await? {
                        tx.rollback().await?;
                        return Err(StorageError::NotFound);
                    }
                    sqlx::query("DELETE FROM scram_credentials WHERE username = $1")
                        .bind(username)
                        .execute(&mut *tx)
                        .await?;
                    // A new password revokes the FAST tokens (XEP-0484) that the old one
                    // obtained.
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

                async fn login_credentials(
                    &self,
                    username: &str,
                    hash: ScramHash,
                ) -> StorageResult<Option<LoginCredentials>> {
                    let row = sqlx::query(
                        "SELECT c.salt, c.iterations, c.stored_key, c.server_key, a.disabled \
                         FROM scram_credentials c \
                         LEFT JOIN account_admin a ON a.username = c.username \
                         WHERE c.username = $1 AND c.hash = $2",
                    )
                    .bind(username)
                    .bind(hash.as_str())
                    .fetch_optional(&self.pool)
                    .await?;
                    let Some(row) = row else {
                        return Ok(None);
                    };
                    let disabled: Option<bool> = row.try_get("disabled")?;
                    Ok(Some(LoginCredentials {
                        credentials: ScramCredentials {
                            hash,
                            salt: row.try_get("salt")?,
                            iterations: iterations_from_db(row.try_get("iterations")?)?,
                            stored_key: row.try_get("stored_key")?,
                            server_key: row.try_get("server_key")?,
                        },
                        disabled: disabled.unwrap_or(false),
                    }))
                }

                async fn list_accounts(&self) -> StorageResult<Vec<String>> {
                    // PostgreSQL's column has the "C" collation, so both sort by bytes.
                    Ok(
                        sqlx::query_scalar("SELECT username FROM accounts ORDER BY username")
                            .fetch_all(&self.pool)
                            .await?,
                    )
                }
            }

            #[async_trait]
            impl OfflineStore for $storage {
                async fn push(
                    &self,
                    username: &str,
                    msg: &OfflineMessage,
                    cap: u32,
                ) -> StorageResult<OfflinePush> {
                    let mut tx = self.begin_write().await?;
                    // Holding the account makes the count and the insert one step: otherwise
                    // two senders could both count cap-1 and both insert.
                    if !<$storage>::lock_account(&mut tx, username).await? {
                        tx.rollback().await?;
                        return Err(StorageError::NotFound);
                    }
                    let waiting: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM offline_messages WHERE username = $1",
                    )
                    .bind(username)
                    .fetch_one(&mut *tx)
                    .await?;
                    if count_from_db(waiting) >= u64::from(cap) {
                        // Released now rather than whenever the dropped transaction gets rolled
                        // back, so the next writer is not kept waiting.
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
                    let done = sqlx::query(
                        "DELETE FROM offline_messages WHERE username = $1 AND id <= $2",
                    )
                    .bind(username)
                    .bind(up_to_id)
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected())
                }

                async fn count(&self, username: &str) -> StorageResult<u64> {
                    let n: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM offline_messages WHERE username = $1",
                    )
                    .bind(username)
                    .fetch_one(&self.pool)
                    .await?;
                    Ok(count_from_db(n))
                }
            }
        };
    };
}

pub(crate) use account_stores;
