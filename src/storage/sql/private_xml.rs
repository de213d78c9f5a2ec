//! Private XML Storage (XEP-0049).

/// Implements the store for `$storage`, whose pool runs `$db`.
macro_rules! private_xml_store {
    ($storage:ty, $db:ty) => {
        const _: () = {
            use async_trait::async_trait;

            use $crate::storage::{
                not_found_on_foreign_key, PrivateXmlStore, PrivateXmlWrite, StorageResult,
            };

            #[async_trait]
            impl PrivateXmlStore for $storage {
                async fn private_xml(
                    &self,
                    username: &str,
                    namespace: &str,
                ) -> StorageResult<Option<String>> {
                    Ok(sqlx::query_scalar(
                        "SELECT xml FROM private_xml WHERE username = $1 AND namespace = $2",
                    )
                    .bind(username)
                    .bind(namespace)
                    .fetch_optional(&self.pool)
                    .await?)
                }

                async fn set_private_xml(
                    &self,
                    username: &str,
                    namespace: &str,
                    xml: &str,
                    max_namespaces: u32,
                ) -> StorageResult<PrivateXmlWrite> {
                    // One statement: a replacement always passes, a new namespace only below
                    // the cap.
                    let written = sqlx::query(
                        "INSERT INTO private_xml (username, namespace, xml) SELECT $1, $2, $3 \
                         WHERE EXISTS (SELECT 1 FROM private_xml \
                                       WHERE username = $1 AND namespace = $2) \
                            OR (SELECT COUNT(*) FROM private_xml WHERE username = $1) < $4 \
                         ON CONFLICT (username, namespace) DO UPDATE SET xml = excluded.xml",
                    )
                    .bind(username)
                    .bind(namespace)
                    .bind(xml)
                    .bind(i64::from(max_namespaces))
                    .execute(&self.pool)
                    .await
                    .map_err(not_found_on_foreign_key)?;
                    Ok(if written.rows_affected() == 0 {
                        PrivateXmlWrite::Full
                    } else {
                        PrivateXmlWrite::Stored
                    })
                }
            }
        };
    };
}

pub(crate) use private_xml_store;
