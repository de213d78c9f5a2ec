//! XEP-0402 §5 compatibility: one list of bookmarks, three ways to reach it.
//!
//! The PEP-native node `urn:xmpp:bookmarks:1` (one item per room, item id = room JID) is the
//! list itself. The two XEP-0048 views are derived from it and written back into it:
//! - `#compat-pep`: the PEP node `storage:bookmarks` (XEP-0048 over XEP-0223), whose one item
//!   `current` holds the whole `<storage xmlns='storage:bookmarks'/>`. A publish there replaces
//!   the native items (new and changed rooms published, missing ones retracted); a change to
//!   the native node publishes a new `current`.
//! - `#compat`: the same `<storage/>` through Private XML (XEP-0049); the private storage module
//!   calls [`PepHandle`] to read and write it.
//!
//! Each write notifies the owner's sessions that asked for the node (`+notify`), so a client on
//! either protocol sees what the other did. A legacy `<conference/>`'s unknown children travel
//! as the native `<extensions/>` and back; `<url/>` bookmarks have no native form and stay in
//! the legacy item (or the private element) they came in.

use std::collections::HashMap;
use std::sync::Arc;

use jid::BareJid;
use minidom::Element;
use tracing::{debug, warn};
use xmpp_parsers::{bookmarks, bookmarks2};

use super::publish::create_node;
use super::{notify, store, Ctx, PepState};
use crate::config::PepConfig;
use crate::router::Router;
use crate::stanza::{self, StanzaError};
use crate::storage::{AccessModel, NodeConfig, PepItem, SendLastItem};
use crate::xml;

/// The XEP-0402 node.
pub const NATIVE: &str = "urn:xmpp:bookmarks:1";
/// The XEP-0048 namespace, also the name of its PEP node.
pub const LEGACY: &str = "storage:bookmarks";
/// The one item of the legacy PEP node (XEP-0048 §3.3).
const LEGACY_ITEM: &str = "current";

pub const FEATURE_COMPAT: &str = "urn:xmpp:bookmarks:1#compat";
pub const FEATURE_COMPAT_PEP: &str = "urn:xmpp:bookmarks:1#compat-pep";

#[derive(Debug, thiserror::Error)]
pub enum BookmarkError {
    #[error("not a valid bookmark: {0}")]
    Conference(String),
    #[error("not a room JID: {0}")]
    RoomJid(#[from] jid::Error),
}

/// What XEP-0402 §3 asks of the native node (and clients ask in their publish-options):
/// owner-only, every item kept, nothing sent on presence.
fn native_config(limits: &PepConfig) -> NodeConfig {
    NodeConfig {
        access_model: AccessModel::Whitelist,
        max_items: limits.max_items_per_node,
        persist_items: true,
        send_last_published_item: SendLastItem::Never,
    }
}

/// XEP-0223 private PEP storage: owner-only and persistent, as XEP-0048 §3.3 asks.
fn legacy_config(limits: &PepConfig) -> NodeConfig {
    NodeConfig {
        access_model: AccessModel::Whitelist,
        ..super::config::default_config(limits)
    }
}

/// A legacy `<conference jid=…/>` as (room JID, native `<conference/>`); its children other
/// than `<nick/>` and `<password/>` become the native `<extensions/>`.
pub fn native_from_legacy(conference: &Element) -> Result<(BareJid, Element), BookmarkError> {
    let mut known = Element::bare("conference", LEGACY);
    for attr in ["jid", "name", "autojoin"] {
        if let Some(value) = conference.attr(attr) {
            stanza::set_attr(&mut known, attr, value);
        }
    }
    let mut extensions = Vec::new();
    for child in conference.children() {
        if child.is("nick", LEGACY) || child.is("password", LEGACY) {
            known.append_child(child.clone());
        } else {
            extensions.push(child.clone());
        }
    }
    let legacy = bookmarks::Conference::try_from(known)
        .map_err(|e| BookmarkError::Conference(e.to_string()))?;
    let (jid, mut native) = legacy.into_bookmarks2();
    if !extensions.is_empty() {
        native.extensions = Some(bookmarks2::Extensions {
            payloads: extensions,
        });
    }
    Ok((jid, Element::from(native)))
}

/// A native item (id = room JID) as a legacy `<conference/>`, its extensions as children.
pub fn legacy_from_native(id: &str, payload: &Element) -> Result<Element, BookmarkError> {
    let jid = BareJid::new(id)?;
    let native = bookmarks2::Conference::try_from(payload.clone())
        .map_err(|e| BookmarkError::Conference(e.to_string()))?;
    let legacy = bookmarks::Conference {
        autojoin: native.autojoin,
        jid,
        name: native.name,
        nick: native.nick,
        password: native.password,
    };
    let mut el = Element::from(legacy);
    for extension in native.extensions.map(|e| e.payloads).unwrap_or_default() {
        el.append_child(extension);
    }
    Ok(el)
}

/// The rooms of a legacy `<storage/>`, in native form, keyed by room JID (the last one wins
/// when a room is listed twice).
pub fn conferences(storage: &Element) -> Result<Vec<(String, Element)>, BookmarkError> {
    let mut rooms: Vec<(String, Element)> = Vec::new();
    for child in storage.children().filter(|c| c.is("conference", LEGACY)) {
        let (jid, native) = native_from_legacy(child)?;
        let id = jid.to_string();
        rooms.retain(|(existing, _)| *existing != id);
        rooms.push((id, native));
    }
    Ok(rooms)
}

/// A legacy `<storage/>` of the native items, with the non-conference children (`<url/>`s) of
/// `keep`, the legacy element it replaces.
pub fn legacy_storage(native: &[(String, Element)], keep: Option<&Element>) -> Element {
    let mut storage = Element::bare("storage", LEGACY);
    for (id, payload) in native {
        match legacy_from_native(id, payload) {
            Ok(conference) => {
                storage.append_child(conference);
            }
            Err(e) => debug!(%id, error = %e, "native bookmark without a legacy form skipped"),
        }
    }
    if let Some(keep) = keep {
        for child in keep.children().filter(|c| !c.is("conference", LEGACY)) {
            storage.append_child(child.clone());
        }
    }
    storage
}

/// A legacy `<storage/>` a client sends (PEP or Private XML), refused before anything is stored
/// if one of its rooms cannot become a native item.
pub fn check_legacy(storage: &Element) -> Result<(), StanzaError> {
    conferences(storage)
        .map(|_| ())
        .map_err(|e| StanzaError::bad_request().with_text(e.to_string()))
}

/// The node's configuration, creating it with `config` if it does not exist.
pub(super) async fn ensure_node(
    ctx: &Ctx<'_>,
    node: &str,
    config: NodeConfig,
) -> Result<NodeConfig, StanzaError> {
    for _ in 0..2 {
        let existing = ctx
            .storage()
            .pep_node(&ctx.owner_name, node)
            .await
            .map_err(store::storage_error)?;
        if let Some(existing) = existing {
            return Ok(existing);
        }
        if create_node(ctx, node, &config).await? {
            return Ok(config);
        }
    }
    Err(StanzaError::internal_server_error())
}

/// The items of `node` as (id, payload), oldest first; none if the node does not exist.
async fn node_items(ctx: &Ctx<'_>, node: &str) -> Result<Vec<(String, Element)>, StanzaError> {
    let config = ctx
        .storage()
        .pep_node(&ctx.owner_name, node)
        .await
        .map_err(store::storage_error)?;
    let Some(config) = config else {
        return Ok(Vec::new());
    };
    let items = store::items(ctx, node, &config, None).await?;
    Ok(items
        .iter()
        .filter_map(|item| store::payload(item).map(|payload| (item.id.clone(), payload)))
        .collect())
}

/// Stores one item and announces it, as a publish by the owner would.
pub(super) async fn put_item(
    ctx: &Ctx<'_>,
    node: &str,
    config: &NodeConfig,
    id: &str,
    payload: Element,
) -> Result<(), StanzaError> {
    let item = PepItem {
        id: id.to_owned(),
        seq: ctx.router.ids().next_id(),
        payload: xml::to_string(&payload),
    };
    store::put(ctx, node, config, item).await?;
    let event = notify::items_event(
        node,
        [notify::item_element(
            crate::xml::ns::PUBSUB_EVENT,
            id,
            Some(payload),
        )],
    );
    notify::broadcast(ctx, node, config.access_model, event).await;
    Ok(())
}

/// Makes the native node hold exactly the rooms of a legacy `<storage/>`: new and changed
/// rooms are published, the others retracted, each announced.
async fn apply_legacy(ctx: &Ctx<'_>, storage: &Element) -> Result<(), StanzaError> {
    let wanted =
        conferences(storage).map_err(|e| StanzaError::bad_request().with_text(e.to_string()))?;
    let config = ensure_node(ctx, NATIVE, native_config(ctx.limits())).await?;
    let existing: HashMap<String, String> = store::items(ctx, NATIVE, &config, None)
        .await?
        .into_iter()
        .map(|item| (item.id, item.payload))
        .collect();
    for (id, payload) in &wanted {
        if existing.get(id) != Some(&xml::to_string(payload)) {
            put_item(ctx, NATIVE, &config, id, payload.clone()).await?;
        }
    }
    let mut removed: Vec<String> = existing
        .into_keys()
        .filter(|id| !wanted.iter().any(|(w, _)| w == id))
        .collect();
    removed.sort();
    let mut retracted = Vec::new();
    for id in removed {
        if store::retract(ctx, NATIVE, &config, &id).await? {
            retracted.push(id);
        }
    }
    if !retracted.is_empty() {
        let event = notify::retract_event(NATIVE, &retracted);
        notify::broadcast(ctx, NATIVE, config.access_model, event).await;
    }
    Ok(())
}

/// Publishes the native list as the legacy PEP node's `current` item.
async fn refresh_legacy_pep(ctx: &Ctx<'_>) -> Result<(), StanzaError> {
    let native = node_items(ctx, NATIVE).await?;
    let config = ensure_node(ctx, LEGACY, legacy_config(ctx.limits())).await?;
    let current = node_items(ctx, LEGACY).await?;
    let keep = current
        .iter()
        .rev()
        .map(|(_, payload)| payload)
        .find(|p| p.is("storage", LEGACY));
    let storage = legacy_storage(&native, keep);
    put_item(ctx, LEGACY, &config, LEGACY_ITEM, storage).await
}

/// Checks a publish to one of the bookmark nodes before it is stored.
pub(super) fn check_publish(node: &str, payload: &Element) -> Result<(), StanzaError> {
    if node == LEGACY && payload.is("storage", LEGACY) {
        check_legacy(payload)?;
    }
    Ok(())
}

/// After the owner changed `node` (publish, retract, purge, delete): carries the change over to
/// the other view. A failure here is logged; the owner's own request already succeeded.
pub(super) async fn after_change(ctx: &Ctx<'_>, node: &str, published: Option<&Element>) {
    let outcome = match (node, published) {
        (NATIVE, _) => refresh_legacy_pep(ctx).await,
        (LEGACY, Some(storage)) if storage.is("storage", LEGACY) => {
            apply_legacy(ctx, storage).await
        }
        _ => return,
    };
    if let Err(e) = outcome {
        warn!(owner = %ctx.owner, %node, error = ?e, "bookmark conversion failed");
    }
}

/// What other modules use of the PEP service: the XEP-0048 view of the bookmarks, for Private
/// XML Storage (`#compat`).
#[derive(Clone)]
pub struct PepHandle {
    pub(super) state: Arc<PepState>,
}

impl PepHandle {
    /// The owner's bookmarks as a legacy `<storage/>`, with the `<url/>`s of `keep` (what
    /// Private XML last stored).
    pub async fn legacy_bookmarks(
        &self,
        router: &Arc<Router>,
        owner: &BareJid,
        keep: Option<&Element>,
    ) -> Result<Element, StanzaError> {
        let ctx = Ctx::new(router, &self.state, owner.clone(), owner.clone())
            .ok_or_else(StanzaError::service_unavailable)?;
        let native = node_items(&ctx, NATIVE).await?;
        Ok(legacy_storage(&native, keep))
    }

    /// Replaces the owner's bookmarks with those of a legacy `<storage/>`, in the native node
    /// and the legacy PEP node.
    pub async fn set_legacy_bookmarks(
        &self,
        router: &Arc<Router>,
        owner: &BareJid,
        storage: &Element,
    ) -> Result<(), StanzaError> {
        let ctx = Ctx::new(router, &self.state, owner.clone(), owner.clone())
            .ok_or_else(StanzaError::service_unavailable)?;
        apply_legacy(&ctx, storage).await?;
        refresh_legacy_pep(&ctx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    #[test]
    fn legacy_and_native_convert_both_ways_with_extensions() {
        let legacy = el(
            "<conference xmlns='storage:bookmarks' jid='room@muc.example' \
             name='Room' autojoin='true'><nick>al</nick><password>pw</password>\
             <x xmlns='urn:example'/></conference>",
        );
        let (jid, native) = native_from_legacy(&legacy).unwrap();
        assert_eq!(jid.as_str(), "room@muc.example");
        assert!(native.is("conference", NATIVE));
        assert_eq!(native.attr("name"), Some("Room"));
        assert_eq!(native.attr("autojoin"), Some("true"));
        assert_eq!(native.get_child("nick", NATIVE).unwrap().text(), "al");
        let ext = native.get_child("extensions", NATIVE).unwrap();
        assert!(ext.has_child("x", "urn:example"));

        let back = legacy_from_native(jid.as_str(), &native).unwrap();
        assert_eq!(back.attr("jid"), Some("room@muc.example"));
        assert_eq!(back.attr("name"), Some("Room"));
        assert_eq!(back.get_child("password", LEGACY).unwrap().text(), "pw");
        assert!(back.has_child("x", "urn:example"));
    }

    #[test]
    fn storage_keeps_urls_and_refuses_bad_rooms() {
        let keep = el(
            "<storage xmlns='storage:bookmarks'><url name='w' url='https://e'/>\
             <conference jid='old@muc.example'/></storage>",
        );
        let native = vec![(
            "a@muc.example".to_owned(),
            el("<conference xmlns='urn:xmpp:bookmarks:1' autojoin='false'/>"),
        )];
        let storage = legacy_storage(&native, Some(&keep));
        let jids: Vec<_> = storage
            .children()
            .filter_map(|c| c.attr("jid").or(c.attr("url")))
            .collect();
        assert_eq!(jids, ["a@muc.example", "https://e"]);

        let bad = el("<storage xmlns='storage:bookmarks'><conference jid='@@'/></storage>");
        assert!(check_legacy(&bad).is_err());
        let no_jid = el("<storage xmlns='storage:bookmarks'><conference name='x'/></storage>");
        assert!(check_legacy(&no_jid).is_err());
    }
}
