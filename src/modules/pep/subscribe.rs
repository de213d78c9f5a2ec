//! Explicit subscriptions (XEP-0060 §6.1 subscribe, §6.2 unsubscribe, §5.6 retrieve
//! subscriptions), beside PEP's implicit presence-and-caps ones.
//!
//! Anyone the node's access model lets read may subscribe, with a JID whose bare part is their
//! own (bare: every available resource gets the events; full: that session only). Subscriptions
//! are stored, so they survive a restart, and go with their node. A subscriber gets events
//! whether or not its caps ask for `+notify`, but only while the access model still lets it
//! read (a contact that lost its presence subscription stops getting a presence node's events).
//! Subscription options (§6.3) and pending/authorized subscriptions are not offered.

use std::collections::HashMap;

use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use tracing::warn;

use super::{access, bad_request, node_attr, notify, pubsub_error, store, Ctx};
use crate::router::IqResult;
use crate::stanza::{self, Condition, ErrorType, StanzaError};
use crate::storage::{AccessModel, NodeConfig, PepSubscribe, SendLastItem, StorageError};
use crate::xml::ns;

/// Subscribers one node may have: explicit subscriptions are rare (PEP's are implicit), and
/// each costs an access check per event.
pub const MAX_SUBSCRIBERS_PER_NODE: u32 = 1000;

/// The `jid` of a subscribe or unsubscribe, which must be the requester's (§6.1.3.1).
fn own_jid(ctx: &Ctx<'_>, action: &Element) -> Result<Jid, StanzaError> {
    let Some(text) = action.attr("jid") else {
        return Err(bad_request("jid-required"));
    };
    let jid = Jid::new(text).map_err(|_| bad_request("invalid-jid"))?;
    if jid.to_bare() != ctx.requester {
        return Err(bad_request("invalid-jid"));
    }
    Ok(jid)
}

async fn existing_node(ctx: &Ctx<'_>, node: &str) -> Result<NodeConfig, StanzaError> {
    ctx.storage()
        .pep_node(&ctx.owner_name, node)
        .await
        .map_err(store::storage_error)?
        .ok_or_else(StanzaError::item_not_found)
}

fn subscription(node: Option<&str>, jid: &str) -> Element {
    let mut el = Element::bare("subscription", ns::PUBSUB);
    if let Some(node) = node {
        stanza::set_attr(&mut el, "node", node);
    }
    stanza::set_attr(&mut el, "jid", jid);
    stanza::set_attr(&mut el, "subscription", "subscribed");
    el
}

pub async fn subscribe(ctx: &Ctx<'_>, action: &Element) -> IqResult {
    let node = node_attr(action)?;
    let jid = own_jid(ctx, action)?;
    let config = existing_node(ctx, node).await?;
    let allowed = access::may_read(ctx.router, &ctx.owner, &ctx.requester, config.access_model)
        .await
        .map_err(store::storage_error)?;
    if !allowed {
        return Err(access::denial(config.access_model));
    }
    let outcome = ctx
        .router
        .storage()
        .pep_subscriptions
        .subscribe_pep(
            &ctx.owner_name,
            node,
            &jid.to_string(),
            MAX_SUBSCRIBERS_PER_NODE,
        )
        .await;
    match outcome {
        Ok(PepSubscribe::Subscribed) => {}
        Ok(PepSubscribe::Full) => {
            return Err(StanzaError::resource_constraint()
                .with_text("this node has as many subscribers as it may"))
        }
        Err(StorageError::NotFound) => return Err(StanzaError::item_not_found()),
        Err(e) => return Err(store::storage_error(e)),
    }
    // §6.1.7: the last item, unless the node says never; in a task of its own, so that it
    // normally follows the result rather than preceding it.
    if config.send_last_published_item != SendLastItem::Never {
        let sessions = sessions_of(ctx, &jid);
        let (router, state, owner) = (ctx.router.clone(), ctx.state.clone(), ctx.owner.clone());
        let nodes = [node.to_owned()];
        tokio::spawn(async move {
            for session in sessions {
                notify::send_last_items_from(&router, &state, owner.clone(), &session, &nodes)
                    .await;
            }
        });
    }
    let mut result = Element::bare("pubsub", ns::PUBSUB);
    result.append_child(subscription(Some(node), &jid.to_string()));
    Ok(Some(result))
}

/// The sessions a subscription names that are here and available: the full JID's own, or
/// every available resource of a bare JID of this server.
fn sessions_of(ctx: &Ctx<'_>, jid: &Jid) -> Vec<FullJid> {
    let bare = jid.to_bare();
    if !ctx.router.is_hosted(bare.domain().as_str()) {
        return jid.try_as_full().ok().cloned().into_iter().collect();
    }
    ctx.router
        .available_resources(&bare)
        .into_iter()
        .filter(|(_, priority)| *priority >= 0)
        .map(|(session, _)| session)
        .filter(|session| jid.try_as_full().map_or(true, |full| full == session))
        .collect()
}

pub async fn unsubscribe(ctx: &Ctx<'_>, action: &Element) -> IqResult {
    let node = node_attr(action)?;
    let jid = own_jid(ctx, action)?;
    existing_node(ctx, node).await?;
    let removed = ctx
        .router
        .storage()
        .pep_subscriptions
        .unsubscribe_pep(&ctx.owner_name, node, &jid.to_string())
        .await
        .map_err(store::storage_error)?;
    if !removed {
        // §6.2.3.2
        return Err(pubsub_error(
            StanzaError::new(ErrorType::Cancel, Condition::UnexpectedRequest),
            "not-subscribed",
        ));
    }
    Ok(None)
}

/// The requester's own subscriptions at this service (§5.6), on one node if it names one.
pub async fn subscriptions(ctx: &Ctx<'_>, action: &Element) -> IqResult {
    let only = action.attr("node");
    let all = ctx
        .router
        .storage()
        .pep_subscriptions
        .pep_subscriptions(&ctx.owner_name)
        .await
        .map_err(store::storage_error)?;
    let mut list = Element::bare("subscriptions", ns::PUBSUB);
    if let Some(node) = only {
        stanza::set_attr(&mut list, "node", node);
    }
    for (node, subscriber) in all {
        if only.is_some_and(|only| only != node) {
            continue;
        }
        let mine = Jid::new(&subscriber).is_ok_and(|jid| jid.to_bare() == ctx.requester);
        if mine {
            list.append_child(subscription(Some(&node), &subscriber));
        }
    }
    let mut result = Element::bare("pubsub", ns::PUBSUB);
    result.append_child(list);
    Ok(Some(result))
}

/// The explicit subscribers of `node` that get an event and are not in `already` (the
/// implicit recipients): each only while the access model lets its account read.
pub async fn event_targets(
    ctx: &Ctx<'_>,
    node: &str,
    model: AccessModel,
    already: &[FullJid],
) -> Vec<Jid> {
    let subscribers = match ctx
        .router
        .storage()
        .pep_subscriptions
        .pep_subscribers(&ctx.owner_name, node)
        .await
    {
        Ok(subscribers) => subscribers,
        Err(e) => {
            warn!(error = %e, "reading PEP subscribers failed");
            return Vec::new();
        }
    };
    let mut may_read: HashMap<BareJid, bool> = HashMap::new();
    let mut targets: Vec<Jid> = Vec::new();
    for subscriber in subscribers {
        let Ok(jid) = Jid::new(&subscriber) else {
            continue;
        };
        let bare = jid.to_bare();
        let allowed = match may_read.get(&bare) {
            Some(allowed) => *allowed,
            None => {
                let allowed = access::may_read(ctx.router, &ctx.owner, &bare, model)
                    .await
                    .unwrap_or(false);
                may_read.insert(bare.clone(), allowed);
                allowed
            }
        };
        if !allowed {
            continue;
        }
        if ctx.router.is_hosted(bare.domain().as_str()) {
            for session in sessions_of(ctx, &jid) {
                let target = Jid::from(session.clone());
                if !already.contains(&session) && !targets.contains(&target) {
                    targets.push(target);
                }
            }
        } else {
            let notified = jid.try_as_full().is_ok_and(|full| already.contains(full));
            if !notified && !targets.contains(&jid) {
                targets.push(jid);
            }
        }
    }
    targets
}
