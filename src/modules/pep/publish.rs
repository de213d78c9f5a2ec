//! The `http://jabber.org/protocol/pubsub` requests: publish (with auto-create and
//! publish-options, XEP-0060 §7.1), retract (§7.2), create (§8.1) and item retrieval (§6.5).

use minidom::Element;

use super::config::{self, ConfigChange, FormError};
use super::{
    access, bad_request, node_attr, not_acceptable, notify, pubsub_error, store, unsupported, Ctx,
    MAX_ITEM_ID_LEN,
};
use super::{avatar, bookmarks, subscribe};
use crate::router::IqResult;
use crate::stanza::{self, Condition, ErrorType, StanzaError};
use crate::storage::{NodeConfig, PepCreate, PepItem, StorageError};
use crate::xml::{self, ns};

/// The action of a `<pubsub/>` request, with the `<publish-options/>` and `<configure/>`
/// that may come along.
struct Request<'e> {
    action: &'e Element,
    options: Option<&'e Element>,
    configure: Option<&'e Element>,
}

fn parse(pubsub: &Element) -> Result<Request<'_>, StanzaError> {
    let mut action = None;
    let mut options = None;
    let mut configure = None;
    for child in pubsub.children() {
        match child.name() {
            "publish-options" if child.has_ns(ns::PUBSUB) => options = Some(child),
            "configure" if child.has_ns(ns::PUBSUB) => configure = Some(child),
            _ if action.is_none() && child.has_ns(ns::PUBSUB) => action = Some(child),
            _ => return Err(StanzaError::bad_request()),
        }
    }
    let Some(action) = action else {
        return Err(StanzaError::bad_request());
    };
    Ok(Request {
        action,
        options,
        configure,
    })
}

/// A `<pubsub/>` get: item retrieval.
pub async fn get(ctx: &Ctx<'_>, pubsub: &Element) -> IqResult {
    let request = parse(pubsub)?;
    match request.action.name() {
        "items" => items(ctx, request.action).await,
        "subscriptions" => subscribe::subscriptions(ctx, request.action).await,
        other => unsupported_action(other),
    }
}

/// A `<pubsub/>` set: publish, retract, create.
pub async fn set(ctx: &Ctx<'_>, pubsub: &Element) -> IqResult {
    let Request {
        action,
        options,
        configure,
    } = parse(pubsub)?;
    match action.name() {
        "publish" => publish(ctx, action, options).await,
        "retract" => retract(ctx, action).await,
        "create" => create(ctx, action, configure).await,
        "subscribe" => subscribe::subscribe(ctx, action).await,
        "unsubscribe" => subscribe::unsubscribe(ctx, action).await,
        other => unsupported_action(other),
    }
}

/// What either type answers for an action it does not take.
fn unsupported_action(action: &str) -> IqResult {
    match action {
        "options" => Err(unsupported("subscription-options")),
        "affiliations" => Err(unsupported("retrieve-affiliations")),
        _ => Err(StanzaError::bad_request()),
    }
}

fn precondition_not_met(text: impl Into<String>) -> StanzaError {
    pubsub_error(StanzaError::conflict(), "precondition-not-met").with_text(text)
}

/// The one element child of `parent`, or the XEP-0060 error for none (`missing`) or several
/// (`invalid-payload`).
fn single_child<'e>(parent: &'e Element, missing: &str) -> Result<&'e Element, StanzaError> {
    let mut children = parent.children();
    match (children.next(), children.next()) {
        (Some(child), None) => Ok(child),
        (None, _) => Err(bad_request(missing)),
        (Some(_), Some(_)) => Err(bad_request("invalid-payload")),
    }
}

/// Reads `<publish-options/>` (XEP-0060 §7.1.5): a form that cannot be honoured is a failed
/// precondition, never an ignored one.
fn publish_options(ctx: &Ctx<'_>, options: &Element) -> Result<ConfigChange, StanzaError> {
    let Some(form) = options.get_child("x", ns::DATA_FORMS) else {
        return Ok(ConfigChange::default());
    };
    config::parse(form, ns::PUBSUB_PUBLISH_OPTIONS, true, ctx.limits()).map_err(|e| match e {
        FormError::FormType(_) | FormError::Malformed(_) => {
            StanzaError::bad_request().with_text(e.to_string())
        }
        FormError::UnknownField(_) | FormError::BadValue(_) => precondition_not_met(e.to_string()),
    })
}

/// A submitted node configuration form (create-and-configure, configure).
pub fn node_config_form(ctx: &Ctx<'_>, form: &Element) -> Result<ConfigChange, StanzaError> {
    config::parse(form, ns::PUBSUB_NODE_CONFIG, false, ctx.limits()).map_err(|e| match e {
        FormError::FormType(_) | FormError::Malformed(_) => {
            StanzaError::bad_request().with_text(e.to_string())
        }
        FormError::UnknownField(_) | FormError::BadValue(_) => {
            not_acceptable().with_text(e.to_string())
        }
    })
}

/// Creates `node` with `config`; `Ok(false)` if it already existed.
pub(super) async fn create_node(
    ctx: &Ctx<'_>,
    node: &str,
    config: &NodeConfig,
) -> Result<bool, StanzaError> {
    let max_nodes = ctx.limits().max_nodes_per_user;
    match ctx
        .storage()
        .create_pep_node(&ctx.owner_name, node, config, max_nodes)
        .await
    {
        Ok(PepCreate::Created) => Ok(true),
        Ok(PepCreate::Full) => Err(
            StanzaError::new(ErrorType::Modify, Condition::PolicyViolation)
                .with_text("this account has as many PEP nodes as it may"),
        ),
        Err(StorageError::Conflict) => Ok(false),
        Err(e) => Err(store::storage_error(e)),
    }
}

/// The configuration of `node` for a publish: the existing one if it meets the options,
/// otherwise a new node made from them (auto-create, XEP-0060 §7.1.4).
async fn node_for_publish(
    ctx: &Ctx<'_>,
    node: &str,
    wanted: &ConfigChange,
) -> Result<NodeConfig, StanzaError> {
    // Twice at most: a node created between our read and our insert is read again.
    for _ in 0..2 {
        let existing = ctx
            .storage()
            .pep_node(&ctx.owner_name, node)
            .await
            .map_err(store::storage_error)?;
        if let Some(config) = existing {
            if !wanted.met_by(&config) {
                return Err(precondition_not_met(
                    "the node's configuration differs from the publish-options",
                ));
            }
            return Ok(config);
        }
        let config = wanted.apply(config::default_config(ctx.limits()));
        if create_node(ctx, node, &config).await? {
            return Ok(config);
        }
    }
    Err(StanzaError::internal_server_error())
}

async fn publish(ctx: &Ctx<'_>, action: &Element, options: Option<&Element>) -> IqResult {
    ctx.require_owner()?;
    let node = node_attr(action)?;
    let item = single_child(action, "item-required")?;
    if !item.is("item", ns::PUBSUB) {
        return Err(StanzaError::bad_request());
    }
    let payload = single_child(item, "payload-required")?;
    let id = match item.attr("id") {
        Some(id) if !id.is_empty() => id.to_owned(),
        // The publisher left it to us (XEP-0060 §7.1.1): time-sortable, so unique.
        _ => ctx.router.ids().next_id().to_string(),
    };
    if id.len() > MAX_ITEM_ID_LEN {
        return Err(not_acceptable().with_text("item id too long"));
    }
    let serialized = xml::to_string(payload);
    if serialized.len() > ctx.limits().max_payload_size {
        return Err(pubsub_error(not_acceptable(), "payload-too-big"));
    }
    let wanted = match options {
        Some(options) => publish_options(ctx, options)?,
        None => ConfigChange::default(),
    };
    bookmarks::check_publish(node, payload)?;
    let config = node_for_publish(ctx, node, &wanted).await?;
    let stored = PepItem {
        id: id.clone(),
        seq: ctx.router.ids().next_id(),
        payload: serialized,
    };
    store::put(ctx, node, &config, stored).await?;
    let event = notify::items_event(
        node,
        [notify::item_element(
            ns::PUBSUB_EVENT,
            &id,
            Some(payload.clone()),
        )],
    );
    notify::broadcast(ctx, node, config.access_model, event).await;
    bookmarks::after_change(ctx, node, Some(payload)).await;
    avatar::after_publish(ctx, node, payload).await;

    let mut publish = Element::bare("publish", ns::PUBSUB);
    stanza::set_attr(&mut publish, "node", node);
    publish.append_child(notify::item_element(ns::PUBSUB, &id, None));
    let mut result = Element::bare("pubsub", ns::PUBSUB);
    result.append_child(publish);
    Ok(Some(result))
}

async fn existing_node(ctx: &Ctx<'_>, node: &str) -> Result<NodeConfig, StanzaError> {
    ctx.storage()
        .pep_node(&ctx.owner_name, node)
        .await
        .map_err(store::storage_error)?
        .ok_or_else(StanzaError::item_not_found)
}

fn item_ids(action: &Element) -> Vec<String> {
    action
        .children()
        .filter(|c| c.is("item", ns::PUBSUB))
        .filter_map(|c| c.attr("id"))
        .map(str::to_owned)
        .collect()
}

async fn retract(ctx: &Ctx<'_>, action: &Element) -> IqResult {
    ctx.require_owner()?;
    let node = node_attr(action)?;
    let ids = item_ids(action);
    if ids.is_empty() {
        return Err(bad_request("item-required"));
    }
    let config = existing_node(ctx, node).await?;
    let mut retracted = Vec::new();
    for id in ids {
        if store::retract(ctx, node, &config, &id).await? {
            retracted.push(id);
        }
    }
    if retracted.is_empty() {
        return Err(StanzaError::item_not_found());
    }
    // XEP-0060 §7.2.2.1: retractions are announced when the publisher asks.
    if matches!(action.attr("notify"), Some("true" | "1")) {
        let event = notify::retract_event(node, &retracted);
        notify::broadcast(ctx, node, config.access_model, event).await;
    }
    bookmarks::after_change(ctx, node, None).await;
    Ok(None)
}

async fn create(ctx: &Ctx<'_>, action: &Element, configure: Option<&Element>) -> IqResult {
    ctx.require_owner()?;
    // Instant nodes (no name) make no sense on a PEP service.
    if action.attr("node").is_none() {
        return Err(pubsub_error(not_acceptable(), "nodeid-required"));
    }
    let node = node_attr(action)?;
    let change = match configure.and_then(|c| c.get_child("x", ns::DATA_FORMS)) {
        Some(form) => node_config_form(ctx, form)?,
        None => ConfigChange::default(),
    };
    let config = change.apply(config::default_config(ctx.limits()));
    if !create_node(ctx, node, &config).await? {
        return Err(StanzaError::conflict().with_text("the node exists"));
    }
    Ok(None)
}

async fn items(ctx: &Ctx<'_>, action: &Element) -> IqResult {
    let node = node_attr(action)?;
    let config = existing_node(ctx, node).await?;
    let allowed = access::may_read(ctx.router, &ctx.owner, &ctx.requester, config.access_model)
        .await
        .map_err(store::storage_error)?;
    if !allowed {
        return Err(access::denial(config.access_model));
    }
    let ids = item_ids(action);
    let found = if ids.is_empty() {
        let max = match action.attr("max_items") {
            Some(max) => Some(max.parse::<u32>().map_err(|_| StanzaError::bad_request())?),
            None => None,
        };
        store::items(ctx, node, &config, max).await?
    } else {
        store::items_by_id(ctx, node, &config, &ids).await?
    };
    let mut items = Element::bare("items", ns::PUBSUB);
    stanza::set_attr(&mut items, "node", node);
    for item in found {
        if let Some(payload) = store::payload(&item) {
            items.append_child(notify::item_element(ns::PUBSUB, &item.id, Some(payload)));
        }
    }
    let mut result = Element::bare("pubsub", ns::PUBSUB);
    result.append_child(items);
    Ok(Some(result))
}
