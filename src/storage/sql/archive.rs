//! The message archive (XEP-0313) and archiving preferences.

/// Implements the store for `$storage`, whose pool runs `$db`. Appending a batch is the
/// backend's own `archive_insert` (one transaction, ids already stored skipped): the fastest
/// way to send thousands of rows differs between the two (see `sqlite.rs`, `postgres.rs`).
macro_rules! archive_store {
    ($storage:ty, $db:ty) => {
        const _: () = {
            use async_trait::async_trait;
            use sqlx::{QueryBuilder, Row};

            use $crate::storage::archive::{jids_from_json, jids_to_json};
            use $crate::storage::{
                count_from_db, ArchiveBound, ArchiveDefault, ArchiveFilter, ArchivePage,
                ArchivePrefs, ArchiveQuery, ArchiveStore, ArchivedMessage, StorageError,
                StorageResult,
            };

            /// Appends `WHERE owner = ? AND …` for `filter`.
            fn push_filter<'a>(
                qb: &mut QueryBuilder<'a, $db>,
                owner: &'a str,
                filter: &'a ArchiveFilter,
            ) {
                qb.push(" WHERE owner = ").push_bind(owner);
                if let Some(with) = &filter.with {
                    qb.push(" AND with_jid = ").push_bind(with.as_str());
                }
                if let Some(start) = filter.start_ms {
                    qb.push(" AND ts_ms >= ").push_bind(start);
                }
                if let Some(end) = filter.end_ms {
                    qb.push(" AND ts_ms <= ").push_bind(end);
                }
                if let Some(after) = filter.after_id {
                    qb.push(" AND id > ").push_bind(after);
                }
                if let Some(before) = filter.before_id {
                    qb.push(" AND id < ").push_bind(before);
                }
                if let Some(ids) = &filter.ids {
                    if ids.is_empty() {
                        qb.push(" AND FALSE");
                    } else {
                        qb.push(" AND id IN (");
                        let mut list = qb.separated(", ");
                        for id in ids {
                            list.push_bind(*id);
                        }
                        qb.push(")");
                    }
                }
            }

            fn row_to_message(
                owner: &str,
                row: &<$db as sqlx::Database>::Row,
            ) -> StorageResult<ArchivedMessage> {
                Ok(ArchivedMessage {
                    owner: owner.to_string(),
                    id: row.try_get("id")?,
                    timestamp_ms: row.try_get("ts_ms")?,
                    with: row.try_get("with_jid")?,
                    outgoing: row.try_get("outgoing")?,
                    stanza: row.try_get("stanza")?,
                })
            }

            #[async_trait]
            impl ArchiveStore for $storage {
                async fn archive_append(&self, batch: &[ArchivedMessage]) -> StorageResult<()> {
                    if batch.is_empty() {
                        return Ok(());
                    }
                    // Each backend has its own way of sending many rows at once.
                    self.archive_insert(batch).await
                }

                async fn archive_query(
                    &self,
                    owner: &str,
                    query: &ArchiveQuery,
                ) -> StorageResult<ArchivePage> {
                    let mut qb = QueryBuilder::new(
                        "SELECT id, ts_ms, with_jid, outgoing, stanza FROM archive",
                    );
                    push_filter(&mut qb, owner, &query.filter);
                    qb.push(if query.backward {
                        " ORDER BY id DESC LIMIT "
                    } else {
                        " ORDER BY id ASC LIMIT "
                    });
                    qb.push_bind(i64::from(query.limit) + 1);
                    let rows = qb.build().fetch_all(&self.pool).await?;
                    let complete = rows.len() <= query.limit as usize;
                    let mut out = rows
                        .iter()
                        .take(query.limit as usize)
                        .map(|row| row_to_message(owner, row))
                        .collect::<StorageResult<Vec<_>>>()?;
                    if query.backward {
                        out.reverse();
                    }
                    Ok(ArchivePage {
                        rows: out,
                        complete,
                    })
                }

                async fn archive_count(
                    &self,
                    owner: &str,
                    filter: &ArchiveFilter,
                ) -> StorageResult<u64> {
                    let mut qb = QueryBuilder::new("SELECT COUNT(*) FROM archive");
                    push_filter(&mut qb, owner, filter);
                    let n: i64 = qb.build_query_scalar().fetch_one(&self.pool).await?;
                    Ok(count_from_db(n))
                }

                async fn archive_contains(&self, owner: &str, id: i64) -> StorageResult<bool> {
                    let row = sqlx::query("SELECT 1 FROM archive WHERE owner = $1 AND id = $2")
                        .bind(owner)
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                    Ok(row.is_some())
                }

                async fn archive_bounds(
                    &self,
                    owner: &str,
                ) -> StorageResult<Option<(ArchiveBound, ArchiveBound)>> {
                    let bound = |order: &'static str| {
                        let sql = format!(
                            "SELECT id, ts_ms FROM archive WHERE owner = $1 ORDER BY id {order} \
                             LIMIT 1"
                        );
                        async move {
                            let row = sqlx::query(&sql)
                                .bind(owner)
                                .fetch_optional(&self.pool)
                                .await?;
                            row.map(|row| {
                                Ok::<_, StorageError>(ArchiveBound {
                                    id: row.try_get("id")?,
                                    timestamp_ms: row.try_get("ts_ms")?,
                                })
                            })
                            .transpose()
                        }
                    };
                    let Some(first) = bound("ASC").await? else {
                        return Ok(None);
                    };
                    let last = bound("DESC").await?.unwrap_or(first);
                    Ok(Some((first, last)))
                }

                async fn archive_trim(&self, owner: &str, keep: u64) -> StorageResult<u64> {
                    let keep = i64::try_from(keep).unwrap_or(i64::MAX);
                    let done = sqlx::query(
                        "DELETE FROM archive WHERE owner = $1 AND id <= \
                         (SELECT id FROM archive WHERE owner = $1 ORDER BY id DESC LIMIT 1 OFFSET \
                         $2)",
                    )
                    .bind(owner)
                    .bind(keep)
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected())
                }

                async fn archive_expire(&self, before_ms: i64) -> StorageResult<u64> {
                    let done = sqlx::query("DELETE FROM archive WHERE ts_ms < $1")
                        .bind(before_ms)
                        .execute(&self.pool)
                        .await?;
                    Ok(done.rows_affected())
                }

                async fn archive_delete_owner(&self, owner: &str) -> StorageResult<u64> {
                    let mut tx = self.begin_write().await?;
                    let done = sqlx::query("DELETE FROM archive WHERE owner = $1")
                        .bind(owner)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("DELETE FROM archive_prefs WHERE owner = $1")
                        .bind(owner)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(done.rows_affected())
                }

                async fn archive_prefs(&self, owner: &str) -> StorageResult<Option<ArchivePrefs>> {
                    let row = sqlx::query(
                        "SELECT default_mode, always_jids, never_jids FROM archive_prefs WHERE \
                         owner = $1",
                    )
                    .bind(owner)
                    .fetch_optional(&self.pool)
                    .await?;
                    let Some(row) = row else {
                        return Ok(None);
                    };
                    let mode: String = row.try_get("default_mode")?;
                    Ok(Some(ArchivePrefs {
                        default: ArchiveDefault::parse(&mode).unwrap_or(ArchiveDefault::Always),
                        always: jids_from_json(&row.try_get::<String, _>("always_jids")?),
                        never: jids_from_json(&row.try_get::<String, _>("never_jids")?),
                    }))
                }

                async fn set_archive_prefs(
                    &self,
                    owner: &str,
                    prefs: &ArchivePrefs,
                ) -> StorageResult<()> {
                    sqlx::query(
                        "INSERT INTO archive_prefs (owner, default_mode, always_jids, never_jids) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (owner) DO UPDATE SET \
                         default_mode = excluded.default_mode, always_jids = excluded.always_jids, \
                         never_jids = excluded.never_jids",
                    )
                    .bind(owner)
                    .bind(prefs.default.as_str())
                    .bind(jids_to_json(&prefs.always))
                    .bind(jids_to_json(&prefs.never))
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }
            }
        };
    };
}

pub(crate) use archive_store;
