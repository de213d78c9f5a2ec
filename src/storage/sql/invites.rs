//! Invites (XEP-0401, XEP-0379).

/// Implements the store for `$storage`, whose pool runs `$db`.
macro_rules! invite_store {
    ($storage:ty, $db:ty) => {
        const _: () = {
            use async_trait::async_trait;
            use sqlx::Row;

            use $crate::storage::{
                conflict_on_unique, count_from_db, not_found_on_foreign_key, InviteState,
                InviteStore, StorageResult, StoredInvite,
            };

            const COLUMNS: &str =
                "token, domain, inviter, username, roster, created_at_ms, expires_at_ms";

            fn from_row(row: &<$db as sqlx::Database>::Row) -> Result<StoredInvite, sqlx::Error> {
                Ok(StoredInvite {
                    token: row.try_get(0)?,
                    domain: row.try_get(1)?,
                    inviter: row.try_get(2)?,
                    username: row.try_get(3)?,
                    roster: row.try_get(4)?,
                    created_at_ms: row.try_get(5)?,
                    expires_at_ms: row.try_get(6)?,
                })
            }

            #[async_trait]
            impl InviteStore for $storage {
                async fn create_invite(&self, invite: &StoredInvite) -> StorageResult<()> {
                    sqlx::query(&format!(
                        "INSERT INTO invites ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                    ))
                    .bind(&invite.token)
                    .bind(&invite.domain)
                    .bind(&invite.inviter)
                    .bind(&invite.username)
                    .bind(invite.roster)
                    .bind(invite.created_at_ms)
                    .bind(invite.expires_at_ms)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| match conflict_on_unique(e) {
                        $crate::storage::StorageError::Database(e) => not_found_on_foreign_key(e),
                        other => other,
                    })?;
                    Ok(())
                }

                async fn invite(&self, token: &str) -> StorageResult<Option<InviteState>> {
                    let row = sqlx::query(&format!(
                        "SELECT {COLUMNS}, used_by FROM invites WHERE token = $1"
                    ))
                    .bind(token)
                    .fetch_optional(&self.pool)
                    .await?;
                    let Some(row) = row else {
                        return Ok(None);
                    };
                    Ok(Some(InviteState {
                        invite: from_row(&row)?,
                        used_by: row.try_get(7)?,
                    }))
                }

                async fn consume_invite(
                    &self,
                    token: &str,
                    used_by: &str,
                    now_ms: i64,
                ) -> StorageResult<Option<StoredInvite>> {
                    // One statement: the condition and the write cannot be split by another use.
                    let row = sqlx::query(&format!(
                        "UPDATE invites SET used_by = $2, used_at_ms = $3 \
                         WHERE token = $1 AND used_by IS NULL AND expires_at_ms > $3 \
                         RETURNING {COLUMNS}"
                    ))
                    .bind(token)
                    .bind(used_by)
                    .bind(now_ms)
                    .fetch_optional(&self.pool)
                    .await?;
                    Ok(row.as_ref().map(from_row).transpose()?)
                }

                async fn release_invite(&self, token: &str, used_by: &str) -> StorageResult<bool> {
                    let done = sqlx::query(
                        "UPDATE invites SET used_by = NULL, used_at_ms = NULL \
                         WHERE token = $1 AND used_by = $2",
                    )
                    .bind(token)
                    .bind(used_by)
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected() > 0)
                }

                async fn pending_invites(
                    &self,
                    inviter: Option<&str>,
                    now_ms: i64,
                ) -> StorageResult<Vec<StoredInvite>> {
                    let rows = sqlx::query(&format!(
                        "SELECT {COLUMNS} FROM invites \
                         WHERE used_by IS NULL AND expires_at_ms > $2 \
                         AND (inviter = $1 OR (CAST($1 AS TEXT) IS NULL AND inviter IS NULL)) \
                         ORDER BY created_at_ms, token"
                    ))
                    .bind(inviter)
                    .bind(now_ms)
                    .fetch_all(&self.pool)
                    .await?;
                    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
                }

                async fn delete_stale_invites(&self, now_ms: i64) -> StorageResult<u64> {
                    let done = sqlx::query(
                        "DELETE FROM invites WHERE expires_at_ms <= $1 \
                         OR (used_at_ms IS NOT NULL AND used_at_ms <= $1)",
                    )
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await?;
                    Ok(count_from_db(i64::try_from(done.rows_affected()).unwrap_or(i64::MAX)))
                }
            }
        };
    };
}

pub(crate) use invite_store;
