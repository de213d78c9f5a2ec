//! Push registrations (XEP-0357).

/// Implements the store for `$storage`, whose pool runs `$db`.
macro_rules! push_store {
    ($storage:ty, $db:ty) => {
        const _: () = {
            use async_trait::async_trait;
            use sqlx::Row;

            use $crate::storage::{
                not_found_on_foreign_key, PushRegistration, PushStore, StorageResult,
            };

            #[async_trait]
            impl PushStore for $storage {
                async fn enable_push(
                    &self,
                    username: &str,
                    registration: &PushRegistration,
                    enabled_id: i64,
                    cap: u32,
                ) -> StorageResult<()> {
                    let mut tx = self.pool.begin().await?;
                    sqlx::query(
                        "INSERT INTO push_registrations \
                         (username, service, node, publish_options, enabled_id) VALUES ($1, $2, \
                         $3, $4, $5) \
                         ON CONFLICT (username, service, node) DO UPDATE SET \
                         publish_options = excluded.publish_options, enabled_id = \
                         excluded.enabled_id",
                    )
                    .bind(username)
                    .bind(&registration.service)
                    .bind(&registration.node)
                    .bind(&registration.publish_options)
                    .bind(enabled_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(not_found_on_foreign_key)?;
                    // Keep the newest `cap`.
                    sqlx::query(
                        "DELETE FROM push_registrations WHERE username = $1 AND (service, node) \
                         NOT IN \
                         (SELECT service, node FROM push_registrations WHERE username = $1 \
                          ORDER BY enabled_id DESC LIMIT $2)",
                    )
                    .bind(username)
                    .bind(i64::from(cap))
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn disable_push(
                    &self,
                    username: &str,
                    service: &str,
                    node: Option<&str>,
                ) -> StorageResult<u64> {
                    let result = match node {
                        Some(node) => {
                            sqlx::query(
                                "DELETE FROM push_registrations \
                                 WHERE username = $1 AND service = $2 AND node = $3",
                            )
                            .bind(username)
                            .bind(service)
                            .bind(node)
                            .execute(&self.pool)
                            .await?
                        }
                        None => sqlx::query(
                            "DELETE FROM push_registrations WHERE username = $1 AND service = $2",
                        )
                        .bind(username)
                        .bind(service)
                        .execute(&self.pool)
                        .await?,
                    };
                    Ok(result.rows_affected())
                }

                async fn push_registrations(
                    &self,
                    username: &str,
                ) -> StorageResult<Vec<PushRegistration>> {
                    let rows = sqlx::query(
                        "SELECT service, node, publish_options FROM push_registrations \
                         WHERE username = $1 ORDER BY enabled_id",
                    )
                    .bind(username)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.into_iter()
                        .map(|row| {
                            Ok(PushRegistration {
                                service: row.try_get(0)?,
                                node: row.try_get(1)?,
                                publish_options: row.try_get(2)?,
                            })
                        })
                        .collect()
                }
            }
        };
    };
}

pub(crate) use push_store;
