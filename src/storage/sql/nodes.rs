//! Cluster node numbers.

/// Implements the store for `$storage`, whose pool runs `$db`.
macro_rules! node_store {
    ($storage:ty, $db:ty) => {
        const _: () = {
            use async_trait::async_trait;

            use $crate::storage::nodes::{CLAIM_ATTEMPTS, LOWEST_FREE_NUMBER};
            use $crate::storage::{NodeStore, StorageResult};

            #[async_trait]
            impl NodeStore for $storage {
                async fn node_number(&self, name: &str, limit: u16) -> StorageResult<Option<u16>> {
                    let lowest_free = LOWEST_FREE_NUMBER.replace("{limit}", &limit.to_string());
                    for _ in 0..CLAIM_ATTEMPTS {
                        let known: Option<i32> =
                            sqlx::query_scalar("SELECT number FROM cluster_nodes WHERE name = $1")
                                .bind(name)
                                .fetch_optional(&self.pool)
                                .await?;
                        if let Some(number) = known {
                            return Ok(u16::try_from(number).ok());
                        }
                        let free: Option<i32> = sqlx::query_scalar(&lowest_free)
                            .fetch_one(&self.pool)
                            .await?;
                        let Some(free) = free else {
                            return Ok(None);
                        };
                        // Another node may claim the same number meanwhile: the unique index
                        // refuses one of the two, and the loser looks again.
                        sqlx::query(
                            "INSERT INTO cluster_nodes (name, number) VALUES ($1, $2) ON CONFLICT \
                             DO NOTHING",
                        )
                        .bind(name)
                        .bind(free)
                        .execute(&self.pool)
                        .await?;
                    }
                    Ok(None)
                }
            }
        };
    };
}

pub(crate) use node_store;
