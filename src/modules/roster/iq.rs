//! `jabber:iq:roster` get and set (RFC 6121 §2.2–2.5).

use std::sync::Arc;

use async_trait::async_trait;
use jid::{BareJid, Jid};
use minidom::Element;
use tracing::warn;

use super::items::{self, RosterSet};
use super::{locks, push, subscription};
use crate::router::{IqHandler, IqRequest, IqResult, Router};
use crate::stanza::{self, StanzaError};
use crate::storage::{RosterItem, RosterWrite, StorageError};
use crate::xml::ns;

pub struct GetRoster;
pub struct SetRoster;

fn storage_failed(e: StorageError) -> StanzaError {
    warn!(error = %e, "roster storage failed");
    StanzaError::storage_failure()
}

/// Only the user reads or changes their roster (§2.1.5, §2.3.3).
fn own_roster(request: &IqRequest) -> Result<BareJid, StanzaError> {
    let Some(user) = request.account.clone() else {
        return Err(StanzaError::service_unavailable());
    };
    if request.from.to_bare() != user {
        return Err(StanzaError::forbidden());
    }
    Ok(user)
}

#[async_trait]
impl IqHandler for GetRoster {
    async fn handle_iq(&self, router: &Arc<Router>, request: IqRequest) -> IqResult {
        let user = own_roster(&request)?;
        // A session that fetched its roster is one that wants pushes (§2.1.6).
        let interested = router.session_flag(super::INTERESTED);
        if let (Ok(full), Some(interested)) = (request.from.clone().try_into_full(), interested) {
            router.set_session_flag(&full, interested, true);
        }
        get(router, user.as_str(), request.payload()).await
    }
}

#[async_trait]
impl IqHandler for SetRoster {
    async fn handle_iq(&self, router: &Arc<Router>, request: IqRequest) -> IqResult {
        let user = own_roster(&request)?;
        set(router, &user, user.as_str(), request.payload()).await
    }
}

/// §2.2 and, with a `ver` attribute, §2.6: a client whose cached version is current gets an
/// empty result and then only pushes.
async fn get(router: &Router, username: &str, query: &Element) -> IqResult {
    let (version, roster) = router
        .storage()
        .roster
        .roster(username)
        .await
        .map_err(storage_failed)?;
    let version = version.to_string();
    let client_version = query.attr("ver");
    if client_version == Some(version.as_str()) {
        return Ok(None);
    }
    let mut result = Element::bare("query", ns::ROSTER);
    if client_version.is_some() {
        stanza::set_attr(&mut result, "ver", version);
    }
    for item in &roster {
        result.append_child(items::item_element(item));
    }
    Ok(Some(result))
}

async fn set(router: &Arc<Router>, user: &BareJid, username: &str, query: &Element) -> IqResult {
    let store = &router.storage().roster;
    match items::parse_set(query)? {
        RosterSet::Update {
            contact,
            name,
            groups,
        } => {
            if contact == *user {
                return Err(StanzaError::not_allowed().with_text("you cannot add yourself"));
            }
            let contact_str = contact.to_string();
            // Held until the write: a subscription change racing this would be lost.
            let _guard = locks::lock(username, &contact_str).await;
            let mut item = store
                .roster_item(username, &contact_str)
                .await
                .map_err(storage_failed)?
                .unwrap_or_else(|| RosterItem::new(contact_str));
            item.name = name;
            item.groups = groups;
            let cap = router
                .config()
                .account_limits(user.domain().as_str())
                .roster_items;
            match store.put_roster_item(username, &item, cap).await {
                Ok(RosterWrite::Stored(version)) => {
                    push::push(router, user, version, items::item_element(&item));
                    Ok(None)
                }
                Ok(RosterWrite::Full) => Err(StanzaError::not_allowed()
                    .with_text(format!("the roster is limited to {cap} items"))),
                Err(e) => Err(storage_failed(e)),
            }
        }
        RosterSet::Remove { contact } => remove(router, user, username, &contact).await,
    }
}

/// §2.5: removing an item also ends the subscriptions both ways, telling the contact.
async fn remove(
    router: &Arc<Router>,
    user: &BareJid,
    username: &str,
    contact: &BareJid,
) -> IqResult {
    let store = &router.storage().roster;
    let contact_str = contact.to_string();
    let guard = locks::lock(username, &contact_str).await;
    let Some(item) = store
        .roster_item(username, &contact_str)
        .await
        .map_err(storage_failed)?
    else {
        return Err(StanzaError::item_not_found());
    };
    let pending_in = store
        .delete_pending_in(username, &contact_str)
        .await
        .map_err(storage_failed)?;
    let Some(version) = store
        .delete_roster_item(username, &contact_str)
        .await
        .map_err(storage_failed)?
    else {
        return Err(StanzaError::item_not_found());
    };
    // Routing can come back to this relationship (the contact's server answering), so the
    // lock goes before any stanza leaves.
    drop(guard);
    let from = Jid::from(user.clone());
    if item.subscription.user_sees_contact() || item.ask {
        let stanza = subscription::subscription_stanza(user, contact, "unsubscribe");
        router
            .route_from_user(&from, Jid::from(contact.clone()), stanza)
            .await;
    }
    if item.subscription.contact_sees_user() || pending_in {
        let stanza = subscription::subscription_stanza(user, contact, "unsubscribed");
        router
            .route_from_user(&from, Jid::from(contact.clone()), stanza)
            .await;
    }
    if item.subscription.contact_sees_user() {
        subscription::send_unavailable(router, user, contact).await;
    }
    push::push(
        router,
        user,
        version,
        items::removed_item_element(&contact_str),
    );
    Ok(None)
}
