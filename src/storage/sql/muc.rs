//! Persistent MUC rooms and their affiliations.

/// Implements the store for `$storage`, whose pool runs `$db`.
macro_rules! muc_store {
    ($storage:ty, $db:ty) => {
        const _: () = {
            use async_trait::async_trait;
            use sqlx::Row;

            use $crate::storage::{
                not_found_on_foreign_key, MucStore, StorageError, StorageResult, StoredAffiliation,
                StoredRoom,
            };

            #[async_trait]
            impl MucStore for $storage {
                async fn muc_rooms(&self) -> StorageResult<Vec<StoredRoom>> {
                    let rows = sqlx::query(
                        "SELECT jid, config, subject, subject_nick FROM muc_rooms ORDER BY jid",
                    )
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter()
                        .map(|row| {
                            Ok(StoredRoom {
                                jid: row.try_get(0)?,
                                config: row.try_get(1)?,
                                subject: row.try_get(2)?,
                                subject_nick: row.try_get(3)?,
                            })
                        })
                        .collect()
                }

                async fn save_muc_room(&self, room: &StoredRoom) -> StorageResult<()> {
                    sqlx::query(
                        "INSERT INTO muc_rooms (jid, config, subject, subject_nick) VALUES ($1, \
                         $2, $3, $4) \
                         ON CONFLICT (jid) DO UPDATE SET config = excluded.config, \
                         subject = excluded.subject, subject_nick = excluded.subject_nick",
                    )
                    .bind(&room.jid)
                    .bind(&room.config)
                    .bind(&room.subject)
                    .bind(&room.subject_nick)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                async fn delete_muc_room(&self, jid: &str) -> StorageResult<bool> {
                    let done = sqlx::query("DELETE FROM muc_rooms WHERE jid = $1")
                        .bind(jid)
                        .execute(&self.pool)
                        .await?;
                    Ok(done.rows_affected() > 0)
                }

                async fn muc_affiliations(
                    &self,
                    room: &str,
                ) -> StorageResult<Vec<StoredAffiliation>> {
                    let rows = sqlx::query(
                        "SELECT jid, affiliation FROM muc_affiliations WHERE room = $1 ORDER BY \
                         jid",
                    )
                    .bind(room)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter()
                        .map(|row| {
                            Ok(StoredAffiliation {
                                jid: row.try_get(0)?,
                                affiliation: row.try_get(1)?,
                            })
                        })
                        .collect()
                }

                async fn set_muc_affiliation(
                    &self,
                    room: &str,
                    jid: &str,
                    affiliation: Option<&str>,
                ) -> StorageResult<()> {
                    let result = match affiliation {
                        Some(affiliation) => sqlx::query(
                            "INSERT INTO muc_affiliations (room, jid, affiliation) VALUES ($1, $2, \
                             $3) \
                             ON CONFLICT (room, jid) DO UPDATE SET affiliation = \
                             excluded.affiliation",
                        )
                        .bind(room)
                        .bind(jid)
                        .bind(affiliation)
                        .execute(&self.pool)
                        .await
                        .map(|_| ()),
                        None => {
                            let exists: Option<i64> = sqlx::query_scalar(
                                "SELECT CAST(1 AS BIGINT) FROM muc_rooms WHERE jid = $1",
                            )
                            .bind(room)
                            .fetch_optional(&self.pool)
                            .await?;
                            if exists.is_none() {
                                return Err(StorageError::NotFound);
                            }
                            sqlx::query("DELETE FROM muc_affiliations WHERE room = $1 AND jid = $2")
                                .bind(room)
                                .bind(jid)
                                .execute(&self.pool)
                                .await
                                .map(|_| ())
                        }
                    };
                    result.map_err(not_found_on_foreign_key)
                }
            }
        };
    };
}

pub(crate) use muc_store;
