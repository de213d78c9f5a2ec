//! XEP-0363 upload records.

/// Implements the store for `$storage`, whose pool runs `$db`.
macro_rules! upload_store {
    ($storage:ty, $db:ty) => {
        const _: () = {
            use async_trait::async_trait;
            use sqlx::Row;

            use $crate::storage::{
                conflict_on_unique, count_from_db, StorageResult, StoredUpload, UploadStore,
                UploadUsage,
            };

            fn usage(row: <$db as sqlx::Database>::Row) -> StorageResult<UploadUsage> {
                let bytes: Option<i64> = row.try_get(0)?;
                let oldest_ms: Option<i64> = row.try_get(1)?;
                Ok(UploadUsage {
                    bytes: count_from_db(bytes.unwrap_or(0)),
                    oldest_ms,
                })
            }

            #[async_trait]
            impl UploadStore for $storage {
                async fn record_upload(&self, upload: &StoredUpload) -> StorageResult<()> {
                    sqlx::query(
                        "INSERT INTO uploads (path, owner, size, content_type, created_at_ms) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(&upload.path)
                    .bind(&upload.owner)
                    .bind(i64::try_from(upload.size).unwrap_or(i64::MAX))
                    .bind(&upload.content_type)
                    .bind(upload.created_at_ms)
                    .execute(&self.pool)
                    .await
                    .map_err(conflict_on_unique)?;
                    Ok(())
                }

                async fn upload(&self, path: &str) -> StorageResult<Option<StoredUpload>> {
                    let row = sqlx::query(
                        "SELECT path, owner, size, content_type, created_at_ms FROM uploads \
                         WHERE path = $1",
                    )
                    .bind(path)
                    .fetch_optional(&self.pool)
                    .await?;
                    let Some(row) = row else {
                        return Ok(None);
                    };
                    Ok(Some(StoredUpload {
                        path: row.try_get(0)?,
                        owner: row.try_get(1)?,
                        size: count_from_db(row.try_get(2)?),
                        content_type: row.try_get(3)?,
                        created_at_ms: row.try_get(4)?,
                    }))
                }

                async fn upload_usage(
                    &self,
                    owner: &str,
                    since_ms: i64,
                ) -> StorageResult<UploadUsage> {
                    let row = sqlx::query(
                        "SELECT CAST(SUM(size) AS BIGINT), MIN(created_at_ms) FROM uploads \
                         WHERE owner = $1 AND created_at_ms >= $2",
                    )
                    .bind(owner)
                    .bind(since_ms)
                    .fetch_one(&self.pool)
                    .await?;
                    usage(row)
                }

                async fn upload_total(&self) -> StorageResult<UploadUsage> {
                    let row = sqlx::query(
                        "SELECT CAST(SUM(size) AS BIGINT), MIN(created_at_ms) FROM uploads",
                    )
                    .fetch_one(&self.pool)
                    .await?;
                    usage(row)
                }

                async fn delete_upload(&self, path: &str) -> StorageResult<()> {
                    sqlx::query("DELETE FROM uploads WHERE path = $1")
                        .bind(path)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }

                async fn delete_uploads_before(
                    &self,
                    before_ms: i64,
                ) -> StorageResult<Vec<String>> {
                    Ok(sqlx::query_scalar(
                        "DELETE FROM uploads WHERE created_at_ms < $1 RETURNING path",
                    )
                    .bind(before_ms)
                    .fetch_all(&self.pool)
                    .await?)
                }

                async fn delete_uploads_of(&self, owner: &str) -> StorageResult<Vec<String>> {
                    Ok(
                        sqlx::query_scalar("DELETE FROM uploads WHERE owner = $1 RETURNING path")
                            .bind(owner)
                            .fetch_all(&self.pool)
                            .await?,
                    )
                }
            }
        };
    };
}

pub(crate) use upload_store;
