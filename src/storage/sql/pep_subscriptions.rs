//! Explicit subscriptions to PEP nodes (XEP-0060 §6.1).

/// Implements the store for `$storage`, whose pool runs `$db`.
macro_rules! pep_subscription_store {
    ($storage:ty, $db:ty) => {
        const _: () = {
            use async_trait::async_trait;
            use sqlx::Row;

            use $crate::storage::{
                not_found_on_foreign_key, PepSubscribe, PepSubscriptionStore, StorageResult,
            };

            #[async_trait]
            impl PepSubscriptionStore for $storage {
                async fn subscribe_pep(
                    &self,
                    owner: &str,
                    node: &str,
                    subscriber: &str,
                    max_per_node: u32,
                ) -> StorageResult<PepSubscribe> {
                    // One statement: an existing subscription passes, a new one only below the
                    // cap; a missing node fails the foreign key.
                    let written = sqlx::query(
                        "INSERT INTO pep_subscriptions (owner, node, subscriber) \
                         SELECT $1, $2, $3 \
                         WHERE (SELECT COUNT(*) FROM pep_subscriptions \
                                WHERE owner = $1 AND node = $2) < $4 \
                         ON CONFLICT (owner, node, subscriber) DO NOTHING",
                    )
                    .bind(owner)
                    .bind(node)
                    .bind(subscriber)
                    .bind(i64::from(max_per_node))
                    .execute(&self.pool)
                    .await
                    .map_err(not_found_on_foreign_key)?;
                    if written.rows_affected() > 0 {
                        return Ok(PepSubscribe::Subscribed);
                    }
                    let existing: Option<i64> = sqlx::query_scalar(
                        "SELECT CAST(1 AS BIGINT) FROM pep_subscriptions \
                         WHERE owner = $1 AND node = $2 AND subscriber = $3",
                    )
                    .bind(owner)
                    .bind(node)
                    .bind(subscriber)
                    .fetch_optional(&self.pool)
                    .await?;
                    Ok(if existing.is_some() {
                        PepSubscribe::Subscribed
                    } else {
                        PepSubscribe::Full
                    })
                }

                async fn unsubscribe_pep(
                    &self,
                    owner: &str,
                    node: &str,
                    subscriber: &str,
                ) -> StorageResult<bool> {
                    let removed = sqlx::query(
                        "DELETE FROM pep_subscriptions \
                         WHERE owner = $1 AND node = $2 AND subscriber = $3",
                    )
                    .bind(owner)
                    .bind(node)
                    .bind(subscriber)
                    .execute(&self.pool)
                    .await?;
                    Ok(removed.rows_affected() > 0)
                }

                async fn pep_subscribers(
                    &self,
                    owner: &str,
                    node: &str,
                ) -> StorageResult<Vec<String>> {
                    Ok(sqlx::query_scalar(
                        "SELECT subscriber FROM pep_subscriptions \
                         WHERE owner = $1 AND node = $2 ORDER BY subscriber",
                    )
                    .bind(owner)
                    .bind(node)
                    .fetch_all(&self.pool)
                    .await?)
                }

                async fn pep_subscriptions(
                    &self,
                    owner: &str,
                ) -> StorageResult<Vec<(String, String)>> {
                    let rows = sqlx::query(
                        "SELECT node, subscriber FROM pep_subscriptions \
                         WHERE owner = $1 ORDER BY node, subscriber",
                    )
                    .bind(owner)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter()
                        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                        .collect()
                }
            }
        };
    };
}

pub(crate) use pep_subscription_store;
