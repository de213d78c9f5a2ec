//! Where a node's items live. With `pubsub#persist_items` (the default) they are in storage,
//! up to `max_items`. Without it XEP-0060 says items are not stored; like Prosody, corvid
//! still keeps the last one in memory (lost on restart) so last-item delivery and item
//! retrieval keep working while the server runs.

use dashmap::DashMap;
use minidom::Element;
use tracing::warn;

use crate::stanza::StanzaError;
use crate::storage::{NodeConfig, PepItem, PepNode, StorageError};
use crate::xml;

use super::Ctx;

/// Last item of each node without persistence, keyed by (owner username, node).
#[derive(Default)]
pub struct Transient {
    items: DashMap<(String, String), PepItem>,
}

impl Transient {
    fn key(owner: &str, node: &str) -> (String, String) {
        (owner.to_owned(), node.to_owned())
    }

    pub fn get(&self, owner: &str, node: &str) -> Option<PepItem> {
        self.items
            .get(&Self::key(owner, node))
            .map(|item| item.clone())
    }

    pub fn forget(&self, owner: &str, node: &str) -> Option<PepItem> {
        self.items
            .remove(&Self::key(owner, node))
            .map(|(_, item)| item)
    }

    fn put(&self, owner: &str, node: &str, item: PepItem) {
        self.items.insert(Self::key(owner, node), item);
    }
}

pub fn storage_error(e: StorageError) -> StanzaError {
    match e {
        StorageError::NotFound => StanzaError::item_not_found(),
        e => {
            warn!(error = %e, "PEP storage failed");
            StanzaError::storage_failure()
        }
    }
}

/// The payload element of a stored item; `None` (logged) if it no longer parses.
pub fn payload(item: &PepItem) -> Option<Element> {
    match xml::parse_standalone(item.payload.as_bytes(), xml::XmlLimits::STORED) {
        Ok(el) => Some(el),
        Err(e) => {
            warn!(id = %item.id, error = %e, "unreadable PEP item");
            None
        }
    }
}

pub async fn put(
    ctx: &Ctx<'_>,
    node: &str,
    config: &NodeConfig,
    item: PepItem,
) -> Result<(), StanzaError> {
    if config.persist_items {
        return ctx
            .storage()
            .publish_pep_item(&ctx.owner_name, node, &item)
            .await
            .map_err(storage_error);
    }
    ctx.state.transient.put(&ctx.owner_name, node, item);
    Ok(())
}

/// The newest `max` items (all when `None`), oldest first.
pub async fn items(
    ctx: &Ctx<'_>,
    node: &str,
    config: &NodeConfig,
    max: Option<u32>,
) -> Result<Vec<PepItem>, StanzaError> {
    if config.persist_items {
        return ctx
            .storage()
            .pep_items(&ctx.owner_name, node, max)
            .await
            .map_err(storage_error);
    }
    let last = ctx.state.transient.get(&ctx.owner_name, node);
    Ok(last.into_iter().filter(|_| max != Some(0)).collect())
}

pub async fn items_by_id(
    ctx: &Ctx<'_>,
    node: &str,
    config: &NodeConfig,
    ids: &[String],
) -> Result<Vec<PepItem>, StanzaError> {
    if config.persist_items {
        return ctx
            .storage()
            .pep_items_by_id(&ctx.owner_name, node, ids)
            .await
            .map_err(storage_error);
    }
    let last = ctx.state.transient.get(&ctx.owner_name, node);
    Ok(last.into_iter().filter(|i| ids.contains(&i.id)).collect())
}

/// True if the item existed.
pub async fn retract(
    ctx: &Ctx<'_>,
    node: &str,
    config: &NodeConfig,
    id: &str,
) -> Result<bool, StanzaError> {
    if config.persist_items {
        return ctx
            .storage()
            .retract_pep_item(&ctx.owner_name, node, id)
            .await
            .map_err(storage_error);
    }
    let transient = &ctx.state.transient;
    let matches = transient
        .get(&ctx.owner_name, node)
        .is_some_and(|i| i.id == id);
    if matches {
        transient.forget(&ctx.owner_name, node);
    }
    Ok(matches)
}

pub async fn purge(ctx: &Ctx<'_>, node: &str) -> Result<(), StanzaError> {
    ctx.state.transient.forget(&ctx.owner_name, node);
    ctx.storage()
        .purge_pep_node(&ctx.owner_name, node)
        .await
        .map_err(storage_error)?;
    Ok(())
}

pub async fn delete(ctx: &Ctx<'_>, node: &str) -> Result<bool, StanzaError> {
    ctx.state.transient.forget(&ctx.owner_name, node);
    ctx.storage()
        .delete_pep_node(&ctx.owner_name, node)
        .await
        .map_err(storage_error)
}

/// Stores a new configuration, moving the last item between storage and memory when
/// `persist_items` changes so that it survives the change. False if there is no such node.
pub async fn reconfigure(
    ctx: &Ctx<'_>,
    node: &str,
    old: &NodeConfig,
    new: &NodeConfig,
) -> Result<bool, StanzaError> {
    let storage = ctx.storage();
    let owner = ctx.owner_name.as_str();
    if old.persist_items && !new.persist_items {
        let last = storage
            .pep_items(owner, node, Some(1))
            .await
            .map_err(storage_error)?;
        if let Some(item) = last.into_iter().next() {
            ctx.state.transient.put(owner, node, item);
        }
    }
    if !storage
        .configure_pep_node(owner, node, new)
        .await
        .map_err(storage_error)?
    {
        return Ok(false);
    }
    if !old.persist_items && new.persist_items {
        if let Some(item) = ctx.state.transient.forget(owner, node) {
            storage
                .publish_pep_item(owner, node, &item)
                .await
                .map_err(storage_error)?;
        }
    }
    Ok(true)
}

/// The last item of each of these nodes that has one, as (node, item).
pub async fn last_items(
    ctx: &Ctx<'_>,
    nodes: &[PepNode],
) -> Result<Vec<(String, PepItem)>, StanzaError> {
    let (stored, in_memory): (Vec<&PepNode>, Vec<&PepNode>) =
        nodes.iter().partition(|n| n.config.persist_items);
    let names: Vec<String> = stored.iter().map(|n| n.name.clone()).collect();
    let mut last = ctx
        .storage()
        .pep_last_items(&ctx.owner_name, &names)
        .await
        .map_err(storage_error)?;
    for node in in_memory {
        if let Some(item) = ctx.state.transient.get(&ctx.owner_name, &node.name) {
            last.push((node.name.clone(), item));
        }
    }
    Ok(last)
}
