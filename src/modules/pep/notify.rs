//! Event notifications (XEP-0060 §7.1.2.1, XEP-0163 §4.3): headline messages from the owner's
//! bare JID to each interested full JID, for publications, retractions, purges and deletions,
//! and the last items a newly interested session is owed.
//!
//! Notifications leave through `route_from_user` as the owner's stanzas, so the owner's and the
//! recipient's stanza filters (XEP-0191 blocking) apply to them (XEP-0163 §4.3.3 rule 3).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{SecondsFormat, TimeZone, Utc};
use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use tracing::warn;

use super::{access, store, subscribe, Ctx, PepState};
use crate::ids::IdGenerator;
use crate::router::{Location, NodeId, Router};
use crate::stanza;
use crate::storage::{AccessModel, PepItem, PepNode, SendLastItem};
use crate::xml::ns;

/// `<item id>payload</item>` in `item_ns` (pubsub for results, pubsub#event for events).
pub fn item_element(item_ns: &str, id: &str, payload: Option<Element>) -> Element {
    let mut el = Element::bare("item", item_ns);
    stanza::set_attr(&mut el, "id", id);
    if let Some(payload) = payload {
        el.append_child(payload);
    }
    el
}

/// `<items node>` holding `children` (items or retracts), in the event namespace.
pub fn items_event(node: &str, children: impl IntoIterator<Item = Element>) -> Element {
    let mut items = Element::bare("items", ns::PUBSUB_EVENT);
    stanza::set_attr(&mut items, "node", node);
    for child in children {
        items.append_child(child);
    }
    items
}

pub fn retract_event(node: &str, ids: &[String]) -> Element {
    items_event(
        node,
        ids.iter().map(|id| {
            let mut retract = Element::bare("retract", ns::PUBSUB_EVENT);
            stanza::set_attr(&mut retract, "id", id.as_str());
            retract
        }),
    )
}

/// `<delete node/>` or `<purge node/>` in the event namespace.
pub fn node_event(kind: &str, node: &str) -> Element {
    let mut el = Element::bare(kind, ns::PUBSUB_EVENT);
    stanza::set_attr(&mut el, "node", node);
    el
}

pub(super) fn message(router: &Router, owner: &BareJid, to: &Jid, event_child: Element) -> Element {
    let mut event = Element::bare("event", ns::PUBSUB_EVENT);
    event.append_child(event_child);
    let mut message = Element::bare("message", ns::CLIENT);
    stanza::set_attr(&mut message, "from", owner.to_string());
    stanza::set_attr(&mut message, "to", to.to_string());
    stanza::set_attr(&mut message, "type", "headline");
    stanza::set_attr(
        &mut message,
        "id",
        format!("pep-{}", router.ids().next_id()),
    );
    message.append_child(event);
    message
}

/// XEP-0203 stamp for a last item sent later than it was published.
/// `server`: the owner's domain, whose service kept the item (XEP-0203 §3).
fn delay(server: &str, item: &PepItem) -> Element {
    let stamp = Utc
        .timestamp_millis_opt(IdGenerator::timestamp_ms(item.seq))
        .single()
        .unwrap_or_else(Utc::now)
        .to_rfc3339_opts(SecondsFormat::Millis, true);
    let mut delay = Element::bare("delay", ns::DELAY);
    stanza::set_attr(&mut delay, "from", server);
    stanza::set_attr(&mut delay, "stamp", stamp);
    delay
}

/// The accounts on `username`'s roster with the given subscription test, as bare JIDs (this
/// server's and other servers').
async fn contacts(
    router: &Router,
    username: &str,
    keep: impl Fn(crate::storage::Subscription) -> bool,
) -> Vec<BareJid> {
    let items = match router.storage().roster.roster(username).await {
        Ok((_, items)) => items,
        Err(e) => {
            warn!(error = %e, "reading a roster for PEP failed");
            return Vec::new();
        }
    };
    items
        .into_iter()
        .filter(|item| keep(item.subscription))
        .filter_map(|item| BareJid::new(&item.contact).ok())
        .filter(|jid| jid.node().is_some())
        .collect()
}

/// The sessions that get `owner`'s notifications for `node`: the owner's own, and (unless the
/// node is owner-only) those of contacts subscribed to the owner's presence; each only if it
/// has non-negative priority and asked for `node+notify` (XEP-0163 §4.3.2). Sessions on other
/// nodes of a cluster come back apart, by node: their node knows what they asked for.
async fn recipients(
    router: &Router,
    state: &PepState,
    owner: &BareJid,
    node: &str,
    model: AccessModel,
) -> (Vec<FullJid>, HashMap<NodeId, Vec<FullJid>>) {
    let mut accounts = vec![owner.clone()];
    if model != AccessModel::Whitelist && owner.node().is_some() {
        accounts.extend(contacts(router, owner.as_str(), |s| s.contact_sees_user()).await);
    }
    let mut sessions = Vec::new();
    let mut elsewhere: HashMap<NodeId, Vec<FullJid>> = HashMap::new();
    for account in &accounts {
        if router.is_hosted(account.domain().as_str()) {
            router.directory().resources(account, &mut |resource| {
                if !resource.takes_bare_messages() {
                    return;
                }
                match resource.location {
                    Location::OtherNode(peer) => elsewhere
                        .entry(peer)
                        .or_default()
                        .push(resource.jid.clone()),
                    _ => sessions.push(resource.jid.clone()),
                }
            });
        } else {
            // A contact of another server: the sessions that sent the owner presence (their
            // priority is in `wants`, which remembers it).
            sessions.extend(state.interests.remote_sessions(account, owner));
        }
    }
    sessions.retain(|jid| state.interests.wants(jid, node));
    (sessions, elsewhere)
}

/// Sends `event_child` (inside `<event/>`) to every session that wants `node`.
pub async fn broadcast(ctx: &Ctx<'_>, node: &str, model: AccessModel, event_child: Element) {
    let (implicit, elsewhere) = recipients(ctx.router, ctx.state, &ctx.owner, node, model).await;
    // A session elsewhere that also subscribed explicitly may get the event twice: its node
    // alone knows whether it asked for it implicitly, and once too often beats never.
    let explicit = subscribe::event_targets(ctx, node, model, &implicit).await;
    super::cluster::forward(ctx.router, &ctx.owner, node, &event_child, elsewhere);
    let from = Jid::from(ctx.owner.clone());
    for target in implicit.into_iter().map(Jid::from).chain(explicit) {
        let message = message(ctx.router, &ctx.owner, &target, event_child.clone());
        ctx.router.route_from_user(&from, target, message).await;
    }
}

/// Sends `session` the last item of each of `nodes` that it may read, from its own account and
/// from every account whose presence it is subscribed to.
pub async fn send_last_items(
    router: Arc<Router>,
    state: Arc<PepState>,
    session: FullJid,
    nodes: Vec<String>,
) {
    if nodes.is_empty() {
        return;
    }
    let user = session.to_bare();
    if user.node().is_none() {
        return;
    }
    let owners = if router.is_hosted(user.domain().as_str()) {
        let mut owners = vec![user.clone()];
        owners.extend(
            contacts(&router, user.as_str(), |s| s.user_sees_contact())
                .await
                .into_iter()
                // Other servers keep their users' PEP nodes.
                .filter(|owner| router.is_hosted(owner.domain().as_str())),
        );
        owners
    } else {
        // A session of another server: the local accounts it sent presence to.
        state.interests.remote_owners(&session)
    };
    for owner in owners {
        let Some(ctx) = Ctx::new(&router, &state, owner, user.clone()) else {
            continue;
        };
        if let Err(e) = send_last_items_of(&ctx, &session, &nodes).await {
            warn!(owner = %ctx.owner, error = ?e, "sending last PEP items failed");
        }
    }
}

/// Sends `session` the last item of each of `nodes` of one `owner` (a contact that was just
/// allowed to see the owner's presence: XEP-0163 §6.1 delivers on subscription too).
pub async fn send_last_items_from(
    router: &Arc<Router>,
    state: &Arc<PepState>,
    owner: BareJid,
    session: &FullJid,
    nodes: &[String],
) {
    if nodes.is_empty() {
        return;
    }
    let Some(ctx) = Ctx::new(router, state, owner, session.to_bare()) else {
        return;
    };
    if let Err(e) = send_last_items_of(&ctx, session, nodes).await {
        warn!(owner = %ctx.owner, error = ?e, "sending last PEP items failed");
    }
}

async fn send_last_items_of(
    ctx: &Ctx<'_>,
    session: &FullJid,
    wanted: &[String],
) -> Result<(), crate::storage::StorageError> {
    let mut readable: Vec<PepNode> = Vec::new();
    for node in ctx.storage().pep_nodes(&ctx.owner_name).await? {
        let send = node.config.send_last_published_item != SendLastItem::Never;
        if send
            && wanted.contains(&node.name)
            && access::may_read(
                ctx.router,
                &ctx.owner,
                &ctx.requester,
                node.config.access_model,
            )
            .await?
        {
            readable.push(node);
        }
    }
    if readable.is_empty() {
        return Ok(());
    }
    let last = store::last_items(ctx, &readable).await.unwrap_or_default();
    let from = Jid::from(ctx.owner.clone());
    for (node, item) in last {
        let Some(payload) = store::payload(&item) else {
            continue;
        };
        let event = items_event(
            &node,
            [item_element(ns::PUBSUB_EVENT, &item.id, Some(payload))],
        );
        let to = Jid::from(session.clone());
        let mut message = message(ctx.router, &ctx.owner, &to, event);
        message.append_child(delay(ctx.owner.domain().as_str(), &item));
        ctx.router.route_from_user(&from, to, message).await;
    }
    Ok(())
}
