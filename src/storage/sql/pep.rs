//! PEP nodes and items. Creating a node locks the account (the node cap is a count, then an
//! insert); publishing locks the node, so concurrent publishers to one node queue and the item
//! cap holds.

/// Implements the store for `$storage`, whose pool runs `$db`.
macro_rules! pep_store {
    ($storage:ty, $db:ty) => {
        const _: () = {
            use async_trait::async_trait;
            use sqlx::{Row, Transaction};

            use $crate::storage::pep::placeholders;
            use $crate::storage::sql::Dialect;
            use $crate::storage::{
                conflict_on_unique, count_from_db, AccessModel, NodeConfig, PepCreate, PepItem,
                PepNode, PepStore, SendLastItem, StorageError, StorageResult,
            };

            const CONFIG_COLUMNS: &str = "access_model, max_items, persist_items, send_last_item";
            const ITEM_COLUMNS: &str = "item_id, seq, payload";

            fn config_from_row(row: &<$db as sqlx::Database>::Row) -> StorageResult<NodeConfig> {
                let access: String = row.try_get("access_model")?;
                let send_last: String = row.try_get("send_last_item")?;
                let max_items: i64 = row.try_get("max_items")?;
                Ok(NodeConfig {
                    // The CHECK constraints keep these in range; a row written by something else
                    // falls back to the most private reading rather than failing every read of the
                    // node.
                    access_model: AccessModel::parse(&access).unwrap_or(AccessModel::Whitelist),
                    max_items: u32::try_from(max_items).unwrap_or(1).max(1),
                    persist_items: row.try_get::<bool, _>("persist_items")?,
                    send_last_published_item: SendLastItem::parse(&send_last)
                        .unwrap_or(SendLastItem::Never),
                })
            }

            fn item_from_row(row: &<$db as sqlx::Database>::Row) -> StorageResult<PepItem> {
                Ok(PepItem {
                    id: row.try_get("item_id")?,
                    seq: row.try_get("seq")?,
                    payload: row.try_get("payload")?,
                })
            }

            /// Keeps the newest `max_items` items of the node.
            async fn trim(
                tx: &mut Transaction<'_, $db>,
                owner: &str,
                node: &str,
                max_items: u32,
            ) -> StorageResult<()> {
                sqlx::query(
                    "DELETE FROM pep_items WHERE owner = $1 AND node = $2 AND item_id NOT IN \
                     (SELECT item_id FROM pep_items WHERE owner = $3 AND node = $4 ORDER BY seq \
                     DESC LIMIT $5)",
                )
                .bind(owner)
                .bind(node)
                .bind(owner)
                .bind(node)
                .bind(i64::from(max_items))
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            #[async_trait]
            impl PepStore for $storage {
                async fn pep_nodes(&self, owner: &str) -> StorageResult<Vec<PepNode>> {
                    let rows = sqlx::query(&format!(
                        "SELECT node, {CONFIG_COLUMNS} FROM pep_nodes WHERE owner = $1 ORDER BY \
                         node"
                    ))
                    .bind(owner)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter()
                        .map(|row| {
                            Ok(PepNode {
                                name: row.try_get("node")?,
                                config: config_from_row(row)?,
                            })
                        })
                        .collect()
                }

                async fn pep_node(
                    &self,
                    owner: &str,
                    node: &str,
                ) -> StorageResult<Option<NodeConfig>> {
                    let row = sqlx::query(&format!(
                        "SELECT {CONFIG_COLUMNS} FROM pep_nodes WHERE owner = $1 AND node = $2"
                    ))
                    .bind(owner)
                    .bind(node)
                    .fetch_optional(&self.pool)
                    .await?;
                    row.as_ref().map(config_from_row).transpose()
                }

                async fn create_pep_node(
                    &self,
                    owner: &str,
                    node: &str,
                    config: &NodeConfig,
                    max_nodes: u32,
                ) -> StorageResult<PepCreate> {
                    let mut tx = self.begin_write().await?;
                    if !<$storage>::lock_account(&mut tx, owner).await? {
                        tx.rollback().await?;
                        return Err(StorageError::NotFound);
                    }
                    let count: i64 = sqlx::query("SELECT COUNT(*) FROM pep_nodes WHERE owner = $1")
                        .bind(owner)
                        .fetch_one(&mut *tx)
                        .await?
                        .try_get(0)?;
                    if count_from_db(count) >= u64::from(max_nodes) {
                        tx.rollback().await?;
                        return Ok(PepCreate::Full);
                    }
                    sqlx::query(&format!(
                        "INSERT INTO pep_nodes (owner, node, {CONFIG_COLUMNS}) VALUES ($1, $2, $3, \
                         $4, $5, $6)"
                    ))
                    .bind(owner)
                    .bind(node)
                    .bind(config.access_model.as_str())
                    .bind(i64::from(config.max_items))
                    .bind(config.persist_items)
                    .bind(config.send_last_published_item.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(conflict_on_unique)?;
                    tx.commit().await?;
                    Ok(PepCreate::Created)
                }

                async fn configure_pep_node(
                    &self,
                    owner: &str,
                    node: &str,
                    config: &NodeConfig,
                ) -> StorageResult<bool> {
                    let mut tx = self.begin_write().await?;
                    let done = sqlx::query(
                        "UPDATE pep_nodes SET access_model = $1, max_items = $2, \
                         persist_items = $3, send_last_item = $4 WHERE owner = $5 AND node = $6",
                    )
                    .bind(config.access_model.as_str())
                    .bind(i64::from(config.max_items))
                    .bind(config.persist_items)
                    .bind(config.send_last_published_item.as_str())
                    .bind(owner)
                    .bind(node)
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() == 0 {
                        tx.rollback().await?;
                        return Ok(false);
                    }
                    if config.persist_items {
                        trim(&mut tx, owner, node, config.max_items).await?;
                    } else {
                        sqlx::query("DELETE FROM pep_items WHERE owner = $1 AND node = $2")
                            .bind(owner)
                            .bind(node)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    Ok(true)
                }

                async fn delete_pep_node(&self, owner: &str, node: &str) -> StorageResult<bool> {
                    // The items go with the node through ON DELETE CASCADE.
                    let done = sqlx::query("DELETE FROM pep_nodes WHERE owner = $1 AND node = $2")
                        .bind(owner)
                        .bind(node)
                        .execute(&self.pool)
                        .await?;
                    Ok(done.rows_affected() > 0)
                }

                async fn publish_pep_item(
                    &self,
                    owner: &str,
                    node: &str,
                    item: &PepItem,
                ) -> StorageResult<()> {
                    let mut tx = self.begin_write().await?;
                    // Locked (where the backend locks rows), so concurrent publishers to one node
                    // queue and the item cap holds.
                    let max_items: Option<i64> = sqlx::query_scalar(&format!(
                        "SELECT max_items FROM pep_nodes WHERE owner = $1 AND node = $2{}",
                        <$storage as Dialect>::LOCK_ROWS
                    ))
                    .bind(owner)
                    .bind(node)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(max_items) = max_items else {
                        tx.rollback().await?;
                        return Err(StorageError::NotFound);
                    };
                    sqlx::query(
                        "INSERT INTO pep_items (owner, node, item_id, seq, payload) VALUES ($1, \
                         $2, $3, $4, $5) \
                         ON CONFLICT (owner, node, item_id) DO UPDATE SET seq = excluded.seq, \
                         payload = excluded.payload",
                    )
                    .bind(owner)
                    .bind(node)
                    .bind(&item.id)
                    .bind(item.seq)
                    .bind(&item.payload)
                    .execute(&mut *tx)
                    .await?;
                    trim(&mut tx, owner, node, u32::try_from(max_items).unwrap_or(1)).await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn pep_items(
                    &self,
                    owner: &str,
                    node: &str,
                    max: Option<u32>,
                ) -> StorageResult<Vec<PepItem>> {
                    // Newest first to apply the limit, then reversed into publish order.
                    let limit = <$storage as Dialect>::row_limit(max);
                    let rows = sqlx::query(&format!(
                        "SELECT {ITEM_COLUMNS} FROM pep_items WHERE owner = $1 AND node = $2 \
                         ORDER BY seq DESC LIMIT $3"
                    ))
                    .bind(owner)
                    .bind(node)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                    let mut items = rows
                        .iter()
                        .map(item_from_row)
                        .collect::<StorageResult<Vec<_>>>()?;
                    items.reverse();
                    Ok(items)
                }

                async fn pep_items_by_id(
                    &self,
                    owner: &str,
                    node: &str,
                    ids: &[String],
                ) -> StorageResult<Vec<PepItem>> {
                    if ids.is_empty() {
                        return Ok(Vec::new());
                    }
                    let sql = format!(
                        "SELECT {ITEM_COLUMNS} FROM pep_items WHERE owner = $1 AND node = $2 \
                         AND item_id IN ({}) ORDER BY seq",
                        placeholders(ids.len(), 3)
                    );
                    let mut query = sqlx::query(&sql).bind(owner).bind(node);
                    for id in ids {
                        query = query.bind(id);
                    }
                    let rows = query.fetch_all(&self.pool).await?;
                    rows.iter().map(item_from_row).collect()
                }

                async fn pep_last_items(
                    &self,
                    owner: &str,
                    nodes: &[String],
                ) -> StorageResult<Vec<(String, PepItem)>> {
                    if nodes.is_empty() {
                        return Ok(Vec::new());
                    }
                    let sql = format!(
                        "SELECT node, {ITEM_COLUMNS} FROM pep_items AS i \
                         WHERE owner = $1 AND node IN ({}) AND seq = \
                         (SELECT MAX(seq) FROM pep_items WHERE owner = i.owner AND node = i.node) \
                         ORDER BY node",
                        placeholders(nodes.len(), 2)
                    );
                    let mut query = sqlx::query(&sql).bind(owner);
                    for node in nodes {
                        query = query.bind(node);
                    }
                    let rows = query.fetch_all(&self.pool).await?;
                    rows.iter()
                        .map(|row| Ok((row.try_get("node")?, item_from_row(row)?)))
                        .collect()
                }

                async fn retract_pep_item(
                    &self,
                    owner: &str,
                    node: &str,
                    id: &str,
                ) -> StorageResult<bool> {
                    let done = sqlx::query(
                        "DELETE FROM pep_items WHERE owner = $1 AND node = $2 AND item_id = $3",
                    )
                    .bind(owner)
                    .bind(node)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected() > 0)
                }

                async fn purge_pep_node(&self, owner: &str, node: &str) -> StorageResult<u64> {
                    let done = sqlx::query("DELETE FROM pep_items WHERE owner = $1 AND node = $2")
                        .bind(owner)
                        .bind(node)
                        .execute(&self.pool)
                        .await?;
                    Ok(done.rows_affected())
                }
            }
        };
    };
}

pub(crate) use pep_store;
