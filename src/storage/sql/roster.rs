//! Rosters and last activity. Every roster write locks the account and bumps the roster
//! version in the same transaction, so concurrent writers queue and the version always matches
//! the items.

/// Implements the store for `$storage`, whose pool runs `$db`.
macro_rules! roster_stores {
    ($storage:ty, $db:ty) => {
        const _: () = {
            use async_trait::async_trait;
            use sqlx::{Row, Transaction};

            use $crate::storage::roster::{groups_from_json, groups_to_json};
            use $crate::storage::{
                count_from_db, not_found_on_foreign_key, LastActivity, LastActivityStore,
                RosterItem, RosterStore, RosterWrite, StorageError, StorageResult, Subscription,
            };

            const ITEM_COLUMNS: &str = "contact, name, subscription, ask, approved, groups";

            fn item_from_row(row: &<$db as sqlx::Database>::Row) -> StorageResult<RosterItem> {
                let subscription: String = row.try_get("subscription")?;
                let groups: String = row.try_get("groups")?;
                Ok(RosterItem {
                    contact: row.try_get("contact")?,
                    name: row.try_get("name")?,
                    subscription: Subscription::parse(&subscription).unwrap_or(Subscription::None),
                    ask: row.try_get::<bool, _>("ask")?,
                    approved: row.try_get::<bool, _>("approved")?,
                    groups: groups_from_json(&groups),
                })
            }

            async fn bump_version(
                tx: &mut Transaction<'_, $db>,
                username: &str,
            ) -> StorageResult<i64> {
                let row = sqlx::query(
                    "INSERT INTO roster_versions (username, version) VALUES ($1, 1) \
                     ON CONFLICT (username) DO UPDATE SET version = roster_versions.version + 1 \
                     RETURNING version",
                )
                .bind(username)
                .fetch_one(&mut **tx)
                .await?;
                Ok(row.try_get(0)?)
            }

            #[async_trait]
            impl RosterStore for $storage {
                async fn roster(&self, username: &str) -> StorageResult<(i64, Vec<RosterItem>)> {
                    // One read transaction, so the version matches the items.
                    let mut tx = self.pool.begin().await?;
                    let version =
                        sqlx::query("SELECT version FROM roster_versions WHERE username = $1")
                            .bind(username)
                            .fetch_optional(&mut *tx)
                            .await?
                            .map(|row| row.try_get::<i64, _>(0))
                            .transpose()?
                            .unwrap_or(0);
                    let rows = sqlx::query(&format!(
                        "SELECT {ITEM_COLUMNS} FROM roster_items WHERE username = $1 ORDER BY \
                         contact"
                    ))
                    .bind(username)
                    .fetch_all(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    let items = rows
                        .iter()
                        .map(item_from_row)
                        .collect::<StorageResult<_>>()?;
                    Ok((version, items))
                }

                async fn roster_version(&self, username: &str) -> StorageResult<i64> {
                    let row =
                        sqlx::query("SELECT version FROM roster_versions WHERE username = $1")
                            .bind(username)
                            .fetch_optional(&self.pool)
                            .await?;
                    Ok(row.map(|r| r.try_get(0)).transpose()?.unwrap_or(0))
                }

                async fn roster_item(
                    &self,
                    username: &str,
                    contact: &str,
                ) -> StorageResult<Option<RosterItem>> {
                    let row = sqlx::query(&format!(
                        "SELECT {ITEM_COLUMNS} FROM roster_items WHERE username = $1 AND contact = \
                         $2"
                    ))
                    .bind(username)
                    .bind(contact)
                    .fetch_optional(&self.pool)
                    .await?;
                    row.as_ref().map(item_from_row).transpose()
                }

                async fn put_roster_item(
                    &self,
                    username: &str,
                    item: &RosterItem,
                    max_items: u32,
                ) -> StorageResult<RosterWrite> {
                    let mut tx = self.begin_write().await?;
                    if !<$storage>::lock_account(&mut tx, username).await? {
                        tx.rollback().await?;
                        return Err(StorageError::NotFound);
                    }
                    let exists = sqlx::query(
                        "SELECT 1 FROM roster_items WHERE username = $1 AND contact = $2",
                    )
                    .bind(username)
                    .bind(&item.contact)
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_some();
                    if !exists {
                        let count: i64 =
                            sqlx::query("SELECT COUNT(*) FROM roster_items WHERE username = $1")
                                .bind(username)
                                .fetch_one(&mut *tx)
                                .await?
                                .try_get(0)?;
                        if count_from_db(count) >= u64::from(max_items) {
                            tx.rollback().await?;
                            return Ok(RosterWrite::Full);
                        }
                    }
                    sqlx::query(
                        "INSERT INTO roster_items (username, contact, name, subscription, ask, \
                         approved, groups) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7) \
                         ON CONFLICT (username, contact) DO UPDATE SET name = excluded.name, \
                         subscription = excluded.subscription, ask = excluded.ask, \
                         approved = excluded.approved, groups = excluded.groups",
                    )
                    .bind(username)
                    .bind(&item.contact)
                    .bind(&item.name)
                    .bind(item.subscription.as_str())
                    .bind(item.ask)
                    .bind(item.approved)
                    .bind(groups_to_json(&item.groups))
                    .execute(&mut *tx)
                    .await?;
                    let version = bump_version(&mut tx, username).await?;
                    tx.commit().await?;
                    Ok(RosterWrite::Stored(version))
                }

                async fn delete_roster_item(
                    &self,
                    username: &str,
                    contact: &str,
                ) -> StorageResult<Option<i64>> {
                    let mut tx = self.begin_write().await?;
                    let done = sqlx::query(
                        "DELETE FROM roster_items WHERE username = $1 AND contact = $2",
                    )
                    .bind(username)
                    .bind(contact)
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() == 0 {
                        tx.rollback().await?;
                        return Ok(None);
                    }
                    let version = bump_version(&mut tx, username).await?;
                    tx.commit().await?;
                    Ok(Some(version))
                }

                async fn put_pending_in(
                    &self,
                    username: &str,
                    contact: &str,
                    stanza: &str,
                ) -> StorageResult<()> {
                    sqlx::query(
                        "INSERT INTO roster_pending_in (username, contact, stanza) VALUES ($1, $2, \
                         $3) \
                         ON CONFLICT (username, contact) DO UPDATE SET stanza = excluded.stanza",
                    )
                    .bind(username)
                    .bind(contact)
                    .bind(stanza)
                    .execute(&self.pool)
                    .await
                    .map_err(not_found_on_foreign_key)?;
                    Ok(())
                }

                async fn delete_pending_in(
                    &self,
                    username: &str,
                    contact: &str,
                ) -> StorageResult<bool> {
                    let done = sqlx::query(
                        "DELETE FROM roster_pending_in WHERE username = $1 AND contact = $2",
                    )
                    .bind(username)
                    .bind(contact)
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected() > 0)
                }

                async fn has_pending_in(
                    &self,
                    username: &str,
                    contact: &str,
                ) -> StorageResult<bool> {
                    let row = sqlx::query(
                        "SELECT 1 FROM roster_pending_in WHERE username = $1 AND contact = $2",
                    )
                    .bind(username)
                    .bind(contact)
                    .fetch_optional(&self.pool)
                    .await?;
                    Ok(row.is_some())
                }

                async fn pending_in(&self, username: &str) -> StorageResult<Vec<(String, String)>> {
                    let rows = sqlx::query(
                        "SELECT contact, stanza FROM roster_pending_in WHERE username = $1 ORDER \
                         BY contact",
                    )
                    .bind(username)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter()
                        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                        .collect()
                }
            }

            #[async_trait]
            impl LastActivityStore for $storage {
                async fn set_last_activity(
                    &self,
                    username: &str,
                    last: &LastActivity,
                ) -> StorageResult<()> {
                    sqlx::query(
                        "INSERT INTO last_activity (username, at_secs, status) VALUES ($1, $2, $3) \
                         ON CONFLICT (username) DO UPDATE SET at_secs = excluded.at_secs, \
                         status = excluded.status",
                    )
                    .bind(username)
                    .bind(last.at_secs)
                    .bind(&last.status)
                    .execute(&self.pool)
                    .await
                    .map_err(not_found_on_foreign_key)?;
                    Ok(())
                }

                async fn last_activity(
                    &self,
                    username: &str,
                ) -> StorageResult<Option<LastActivity>> {
                    let row = sqlx::query(
                        "SELECT at_secs, status FROM last_activity WHERE username = $1",
                    )
                    .bind(username)
                    .fetch_optional(&self.pool)
                    .await?;
                    row.map(|row| {
                        Ok(LastActivity {
                            at_secs: row.try_get(0)?,
                            status: row.try_get(1)?,
                        })
                    })
                    .transpose()
                }
            }
        };
    };
}

pub(crate) use roster_stores;
