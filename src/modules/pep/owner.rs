//! The `http://jabber.org/protocol/pubsub#owner` requests, all for the account owner only:
//! configure (XEP-0060 §8.2), default configuration (§8.3), delete (§8.4) and purge (§8.5).

use minidom::Element;

use super::config::{self};
use super::publish::node_config_form;
use super::{bookmarks, node_attr, notify, store, unsupported, Ctx};
use crate::router::IqResult;
use crate::stanza::{self, StanzaError};
use crate::storage::NodeConfig;
use crate::xml::ns;

/// The owner's one action element.
fn action<'e>(ctx: &Ctx<'_>, pubsub: &'e Element) -> Result<&'e Element, StanzaError> {
    ctx.require_owner()?;
    let mut children = pubsub.children();
    let (Some(action), None) = (children.next(), children.next()) else {
        return Err(StanzaError::bad_request());
    };
    if !action.has_ns(ns::PUBSUB_OWNER) {
        return Err(StanzaError::bad_request());
    }
    Ok(action)
}

/// An owner get: a node's configuration, or the default one.
pub async fn get(ctx: &Ctx<'_>, pubsub: &Element) -> IqResult {
    let action = action(ctx, pubsub)?;
    match action.name() {
        "configure" => get_configuration(ctx, action).await,
        "default" => Ok(Some(owner_payload(
            "default",
            None,
            config::form(&config::default_config(ctx.limits())),
        ))),
        other => unsupported_action(other),
    }
}

/// An owner set: configure, delete, purge.
pub async fn set(ctx: &Ctx<'_>, pubsub: &Element) -> IqResult {
    let action = action(ctx, pubsub)?;
    match action.name() {
        "configure" => set_configuration(ctx, action).await,
        "delete" => delete(ctx, action).await,
        "purge" => purge(ctx, action).await,
        other => unsupported_action(other),
    }
}

/// What either type answers for an action it does not take.
fn unsupported_action(action: &str) -> IqResult {
    match action {
        "subscriptions" => Err(unsupported("manage-subscriptions")),
        "affiliations" => Err(unsupported("modify-affiliations")),
        _ => Err(StanzaError::bad_request()),
    }
}

/// `<pubsub xmlns='…#owner'><{name} node?>{form}</{name}></pubsub>`
fn owner_payload(name: &str, node: Option<&str>, form: Element) -> Element {
    let mut el = Element::bare(name, ns::PUBSUB_OWNER);
    if let Some(node) = node {
        stanza::set_attr(&mut el, "node", node);
    }
    el.append_child(form);
    let mut pubsub = Element::bare("pubsub", ns::PUBSUB_OWNER);
    pubsub.append_child(el);
    pubsub
}

async fn existing_node(ctx: &Ctx<'_>, node: &str) -> Result<NodeConfig, StanzaError> {
    ctx.storage()
        .pep_node(&ctx.owner_name, node)
        .await
        .map_err(store::storage_error)?
        .ok_or_else(StanzaError::item_not_found)
}

async fn get_configuration(ctx: &Ctx<'_>, action: &Element) -> IqResult {
    let node = node_attr(action)?;
    let config = existing_node(ctx, node).await?;
    Ok(Some(owner_payload(
        "configure",
        Some(node),
        config::form(&config),
    )))
}

async fn set_configuration(ctx: &Ctx<'_>, action: &Element) -> IqResult {
    let node = node_attr(action)?;
    let Some(form) = action.get_child("x", ns::DATA_FORMS) else {
        return Err(StanzaError::bad_request());
    };
    let old = existing_node(ctx, node).await?;
    // XEP-0060 §8.2.5: the owner may cancel instead of submitting.
    if form.attr("type") == Some("cancel") {
        return Ok(None);
    }
    let new = node_config_form(ctx, form)?.apply(old);
    if new != old && !store::reconfigure(ctx, node, &old, &new).await? {
        return Err(StanzaError::item_not_found());
    }
    Ok(None)
}

async fn delete(ctx: &Ctx<'_>, action: &Element) -> IqResult {
    let node = node_attr(action)?;
    let config = existing_node(ctx, node).await?;
    if !store::delete(ctx, node).await? {
        return Err(StanzaError::item_not_found());
    }
    let event = notify::node_event("delete", node);
    notify::broadcast(ctx, node, config.access_model, event).await;
    bookmarks::after_change(ctx, node, None).await;
    Ok(None)
}

async fn purge(ctx: &Ctx<'_>, action: &Element) -> IqResult {
    let node = node_attr(action)?;
    let config = existing_node(ctx, node).await?;
    store::purge(ctx, node).await?;
    let event = notify::node_event("purge", node);
    notify::broadcast(ctx, node, config.access_model, event).await;
    bookmarks::after_change(ctx, node, None).await;
    Ok(None)
}
