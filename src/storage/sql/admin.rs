//! Disabled accounts, last logins and server settings (see `storage::admin`).

/// Implements `AdminStore` for `$storage`, whose pool runs `$db`.
macro_rules! admin_store {
    ($storage:ty, $db:ty) => {
        const _: () = {
            use async_trait::async_trait;

            use $crate::storage::{not_found_on_foreign_key, AdminStore, StorageResult};

            #[async_trait]
            impl AdminStore for $storage {
                async fn set_disabled(&self, username: &str, disabled: bool) -> StorageResult<()> {
                    // The foreign key turns a missing account into `NotFound`.
                    sqlx::query(
                        "INSERT INTO account_admin (username, disabled) VALUES ($1, $2) \
                         ON CONFLICT (username) DO UPDATE SET disabled = excluded.disabled",
                    )
                    .bind(username)
                    .bind(disabled)
                    .execute(&self.pool)
                    .await
                    .map_err(not_found_on_foreign_key)?;
                    Ok(())
                }

                async fn is_disabled(&self, username: &str) -> StorageResult<bool> {
                    let disabled: Option<bool> = sqlx::query_scalar(
                        "SELECT disabled FROM account_admin WHERE username = $1",
                    )
                    .bind(username)
                    .fetch_optional(&self.pool)
                    .await?;
                    Ok(disabled.unwrap_or(false))
                }

                async fn disabled_accounts(&self) -> StorageResult<Vec<String>> {
                    Ok(sqlx::query_scalar(
                        "SELECT username FROM account_admin WHERE disabled = TRUE \
                         ORDER BY username",
                    )
                    .fetch_all(&self.pool)
                    .await?)
                }

                async fn record_logins(&self, logins: &[(String, i64)]) -> StorageResult<()> {
                    if logins.is_empty() {
                        return Ok(());
                    }
                    let mut tx = self.begin_write().await?;
                    for (username, at_ms) in logins {
                        // Skipping accounts that went away, instead of a foreign-key error,
                        // which on PostgreSQL would abort the others' writes too.
                        sqlx::query(
                            "INSERT INTO account_admin (username, last_login_ms) \
                             SELECT $1, $2 WHERE EXISTS \
                             (SELECT 1 FROM accounts WHERE username = $1) \
                             ON CONFLICT (username) \
                             DO UPDATE SET last_login_ms = excluded.last_login_ms",
                        )
                        .bind(username)
                        .bind(*at_ms)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }

                async fn last_login(&self, username: &str) -> StorageResult<Option<i64>> {
                    let at: Option<Option<i64>> = sqlx::query_scalar(
                        "SELECT last_login_ms FROM account_admin WHERE username = $1",
                    )
                    .bind(username)
                    .fetch_optional(&self.pool)
                    .await?;
                    Ok(at.flatten())
                }

                async fn setting(&self, name: &str) -> StorageResult<Option<String>> {
                    Ok(
                        sqlx::query_scalar("SELECT value FROM server_settings WHERE name = $1")
                            .bind(name)
                            .fetch_optional(&self.pool)
                            .await?,
                    )
                }

                async fn set_setting(&self, name: &str, value: Option<&str>) -> StorageResult<()> {
                    match value {
                        Some(value) => {
                            sqlx::query(
                                "INSERT INTO server_settings (name, value) VALUES ($1, $2) \
                                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                            )
                            .bind(name)
                            .bind(value)
                            .execute(&self.pool)
                            .await?;
                        }
                        None => {
                            sqlx::query("DELETE FROM server_settings WHERE name = $1")
                                .bind(name)
                                .execute(&self.pool)
                                .await?;
                        }
                    }
                    Ok(())
                }
            }
        };
    };
}

pub(crate) use admin_store;
