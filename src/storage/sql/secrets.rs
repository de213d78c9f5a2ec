//! Server secrets.

/// Implements the store for `$storage`, whose pool runs `$db`.
macro_rules! server_secret_store {
    ($storage:ty, $db:ty) => {
        const _: () = {
            use async_trait::async_trait;

            use $crate::storage::{ServerSecretStore, StorageResult};

            #[async_trait]
            impl ServerSecretStore for $storage {
                async fn server_secret(&self, name: &str, fresh: &[u8]) -> StorageResult<Vec<u8>> {
                    // Insert-if-absent then read: whoever inserted first wins, and everyone reads
                    // that.
                    sqlx::query(
                        "INSERT INTO server_secrets (name, value) VALUES ($1, $2) \
                         ON CONFLICT (name) DO NOTHING",
                    )
                    .bind(name)
                    .bind(fresh)
                    .execute(&self.pool)
                    .await?;
                    Ok(
                        sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = $1")
                            .bind(name)
                            .fetch_one(&self.pool)
                            .await?,
                    )
                }
            }
        };
    };
}

pub(crate) use server_secret_store;
