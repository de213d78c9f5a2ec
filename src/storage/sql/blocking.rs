//! Blocklists (XEP-0191): adding checks the cap and inserts after locking the account, so the
//! check and the insert see the same list.

/// Implements the store for `$storage`, whose pool runs `$db`.
macro_rules! blocklist_store {
    ($storage:ty, $db:ty) => {
        const _: () = {
            use std::collections::HashSet;

            use async_trait::async_trait;
            use sqlx::Row;

            use $crate::storage::blocking::new_jids;
            use $crate::storage::{BlockWrite, BlocklistStore, StorageError, StorageResult};

            #[async_trait]
            impl BlocklistStore for $storage {
                async fn blocklist(&self, username: &str) -> StorageResult<Vec<String>> {
                    let rows = sqlx::query(
                        "SELECT jid FROM blocklist_items WHERE username = $1 ORDER BY jid",
                    )
                    .bind(username)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(|row| Ok(row.try_get(0)?)).collect()
                }

                async fn block(
                    &self,
                    username: &str,
                    jids: &[String],
                    max_items: u32,
                ) -> StorageResult<BlockWrite> {
                    let mut tx = self.begin_write().await?;
                    if !<$storage>::lock_account(&mut tx, username).await? {
                        tx.rollback().await?;
                        return Err(StorageError::NotFound);
                    }
                    let existing: HashSet<String> =
                        sqlx::query_scalar("SELECT jid FROM blocklist_items WHERE username = $1")
                            .bind(username)
                            .fetch_all(&mut *tx)
                            .await?
                            .into_iter()
                            .collect();
                    let fresh = new_jids(jids, &existing);
                    if existing.len() + fresh.len() > max_items as usize {
                        tx.rollback().await?;
                        return Ok(BlockWrite::Full);
                    }
                    for jid in &fresh {
                        sqlx::query("INSERT INTO blocklist_items (username, jid) VALUES ($1, $2)")
                            .bind(username)
                            .bind(jid)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    Ok(BlockWrite::Stored(fresh.len() as u64))
                }

                async fn unblock(&self, username: &str, jids: &[String]) -> StorageResult<u64> {
                    let mut tx = self.begin_write().await?;
                    let mut removed = 0;
                    for jid in jids {
                        let done = sqlx::query(
                            "DELETE FROM blocklist_items WHERE username = $1 AND jid = $2",
                        )
                        .bind(username)
                        .bind(jid)
                        .execute(&mut *tx)
                        .await?;
                        removed += done.rows_affected();
                    }
                    tx.commit().await?;
                    Ok(removed)
                }

                async fn unblock_all(&self, username: &str) -> StorageResult<u64> {
                    let done = sqlx::query("DELETE FROM blocklist_items WHERE username = $1")
                        .bind(username)
                        .execute(&self.pool)
                        .await?;
                    Ok(done.rows_affected())
                }
            }
        };
    };
}

pub(crate) use blocklist_store;
