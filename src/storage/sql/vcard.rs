//! vCards (XEP-0054).

/// Implements the store for `$storage`, whose pool runs `$db`.
macro_rules! vcard_store {
    ($storage:ty, $db:ty) => {
        const _: () = {
            use async_trait::async_trait;
            use sqlx::Row;

            use $crate::storage::{
                not_found_on_foreign_key, StorageResult, StoredVcard, VcardStore,
            };

            #[async_trait]
            impl VcardStore for $storage {
                async fn vcard(&self, username: &str) -> StorageResult<Option<StoredVcard>> {
                    let row =
                        sqlx::query("SELECT vcard, photo_hash FROM vcards WHERE username = $1")
                            .bind(username)
                            .fetch_optional(&self.pool)
                            .await?;
                    row.map(|row| {
                        Ok(StoredVcard {
                            xml: row.try_get(0)?,
                            photo_hash: row.try_get(1)?,
                        })
                    })
                    .transpose()
                }

                async fn vcard_photo_hash(&self, username: &str) -> StorageResult<Option<String>> {
                    Ok(
                        sqlx::query_scalar("SELECT photo_hash FROM vcards WHERE username = $1")
                            .bind(username)
                            .fetch_optional(&self.pool)
                            .await?,
                    )
                }

                async fn set_vcard(
                    &self,
                    username: &str,
                    vcard: &StoredVcard,
                ) -> StorageResult<()> {
                    sqlx::query(
                        "INSERT INTO vcards (username, vcard, photo_hash) VALUES ($1, $2, $3) \
                         ON CONFLICT (username) DO UPDATE SET vcard = excluded.vcard, \
                         photo_hash = excluded.photo_hash",
                    )
                    .bind(username)
                    .bind(&vcard.xml)
                    .bind(&vcard.photo_hash)
                    .execute(&self.pool)
                    .await
                    .map_err(not_found_on_foreign_key)?;
                    Ok(())
                }
            }
        };
    };
}

pub(crate) use vcard_store;
