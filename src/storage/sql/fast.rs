//! FAST tokens (XEP-0484).

/// Implements the store for `$storage`, whose pool runs `$db`.
macro_rules! fast_token_store {
    ($storage:ty, $db:ty) => {
        const _: () = {
            use async_trait::async_trait;
            use sqlx::Row;

            use $crate::storage::{
                not_found_on_foreign_key, FastSlot, FastToken, FastTokenStore, StorageError,
                StorageResult,
            };

            #[async_trait]
            impl FastTokenStore for $storage {
                async fn fast_tokens(
                    &self,
                    username: &str,
                    client_id: &str,
                ) -> StorageResult<Vec<FastToken>> {
                    let rows = sqlx::query(
                        "SELECT slot, token, mechanism, expires_at_ms, last_count FROM fast_tokens \
                         WHERE username = $1 AND client_id = $2 ORDER BY slot DESC",
                    )
                    .bind(username)
                    .bind(client_id)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter()
                        .map(|row| {
                            let slot: String = row.try_get(0)?;
                            Ok(FastToken {
                                slot: FastSlot::from_db(&slot).ok_or_else(|| bad_slot(&slot))?,
                                token: row.try_get(1)?,
                                mechanism: row.try_get(2)?,
                                expires_at_ms: row.try_get(3)?,
                                last_count: row.try_get(4)?,
                            })
                        })
                        .collect()
                }

                async fn issue_fast_token(
                    &self,
                    username: &str,
                    client_id: &str,
                    token: &str,
                    mechanism: &str,
                    expires_at_ms: i64,
                    now_ms: i64,
                ) -> StorageResult<()> {
                    let mut tx = self.begin_write().await?;
                    sqlx::query(
                        "DELETE FROM fast_tokens WHERE username = $1 AND expires_at_ms <= $2",
                    )
                    .bind(username)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query(
                        "INSERT INTO fast_tokens \
                         (username, client_id, slot, token, mechanism, expires_at_ms, last_count) \
                         VALUES ($1, $2, 'new', $3, $4, $5, NULL) \
                         ON CONFLICT (username, client_id, slot) DO UPDATE SET token = \
                         excluded.token, \
                         mechanism = excluded.mechanism, expires_at_ms = excluded.expires_at_ms, \
                         last_count = NULL",
                    )
                    .bind(username)
                    .bind(client_id)
                    .bind(token)
                    .bind(mechanism)
                    .bind(expires_at_ms)
                    .execute(&mut *tx)
                    .await
                    .map_err(not_found_on_foreign_key)?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn use_fast_token(
                    &self,
                    username: &str,
                    client_id: &str,
                    token: &str,
                    count: Option<i64>,
                ) -> StorageResult<bool> {
                    let mut tx = self.begin_write().await?;
                    let slot: Option<String> = sqlx::query_scalar(
                        "UPDATE fast_tokens SET last_count = COALESCE($4, last_count) \
                         WHERE username = $1 AND client_id = $2 AND token = $3 \
                         AND (CAST($4 AS BIGINT) IS NULL OR last_count IS NULL OR last_count < $4) \
                         RETURNING slot",
                    )
                    .bind(username)
                    .bind(client_id)
                    .bind(token)
                    .bind(count)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(slot) = slot else {
                        tx.rollback().await?;
                        return Ok(false);
                    };
                    if FastSlot::from_db(&slot) == Some(FastSlot::New) {
                        sqlx::query(
                            "DELETE FROM fast_tokens \
                             WHERE username = $1 AND client_id = $2 AND slot = 'current'",
                        )
                        .bind(username)
                        .bind(client_id)
                        .execute(&mut *tx)
                        .await?;
                        sqlx::query(
                            "UPDATE fast_tokens SET slot = 'current' \
                             WHERE username = $1 AND client_id = $2 AND slot = 'new'",
                        )
                        .bind(username)
                        .bind(client_id)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Ok(true)
                }

                async fn delete_fast_token(
                    &self,
                    username: &str,
                    client_id: &str,
                    token: &str,
                ) -> StorageResult<()> {
                    sqlx::query(
                        "DELETE FROM fast_tokens WHERE username = $1 AND client_id = $2 AND token \
                         = $3",
                    )
                    .bind(username)
                    .bind(client_id)
                    .bind(token)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }
            }

            /// The schema's CHECK allows only the two slot names; anything else was written by
            /// something else.
            fn bad_slot(slot: &str) -> StorageError {
                StorageError::Database(sqlx::Error::Decode(
                    format!("unknown FAST token slot '{slot}'").into(),
                ))
            }
        };
    };
}

pub(crate) use fast_token_store;
