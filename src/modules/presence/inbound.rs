//! Presence arriving for a local user (RFC 6121 §4.3, §4.4.3, §8.5): subscription stanzas go
//! to the state machine, probes are answered from what the user's sessions last broadcast,
//! and availability reaches the addressed resource or every available one.

use std::sync::Arc;

use chrono::Utc;
use jid::{BareJid, Jid};
use minidom::Element;

use super::Presence;
use crate::modules::roster::subscription;
use crate::modules::roster::table::SubscriptionType;
use crate::router::Router;
use crate::stanza;
use crate::xml::ns;

pub(super) async fn handle(
    module: &Presence,
    router: &Arc<Router>,
    to: &BareJid,
    resource: Option<&str>,
    presence: Element,
) {
    let from = presence.attr("from").and_then(|f| Jid::new(f).ok());
    let presence_type = stanza::stanza_type(&presence);
    if let Some(kind) = SubscriptionType::parse(presence_type) {
        // Subscriptions are between bare JIDs, wherever the stanza was addressed (§3.1.3).
        if let Some(from) = from {
            let contact = from.to_bare();
            let outcome = subscription::inbound(router, to, &contact, kind, presence).await;
            if outcome.presence_granted {
                module.presence_granted(router, to, &contact).await;
            }
        }
        return;
    }
    match presence_type {
        "probe" => {
            if let Some(prober) = from {
                answer_probe(module, router, to, prober).await;
            }
        }
        "available" | "unavailable" => {
            // Local sessions' presence reaches the observers as it is broadcast; a remote
            // session's only as it arrives here, once per local user it is sent to.
            let remote = from
                .and_then(|f| f.try_into_full().ok())
                .filter(|f| !router.is_hosted(f.domain().as_str()));
            if let Some(remote) = remote {
                if presence_type == "unavailable" {
                    module.remote.unavailable(&remote, to);
                } else if reaches_anyone(router, to, resource) {
                    // Remembered only while someone here sees it: that is who a lost
                    // connection must tell (`remote`).
                    module.remote.available(&remote, to);
                }
                for observer in router.presence_observers() {
                    observer.received(router, to, &remote, &presence).await;
                }
            }
            router.deliver_presence(to, resource, presence)
        }
        "error" => router.deliver_presence(to, resource, presence),
        // An unknown type is not presence we can act on.
        _ => {}
    }
}

/// Whether presence to `to` (at `resource`, if given) reaches a session now.
fn reaches_anyone(router: &Router, to: &BareJid, resource: Option<&str>) -> bool {
    match resource {
        Some(resource) => to
            .with_resource_str(resource)
            .is_ok_and(|full| router.is_bound(&full)),
        None => !router.available_resources(to).is_empty(),
    }
}

/// §4.3.2: only a contact subscribed to the user learns anything; it gets the last presence
/// of each available resource or, with none, unavailable with the time since the user was
/// last seen (XEP-0256).
async fn answer_probe(module: &Presence, router: &Arc<Router>, user: &BareJid, prober: Jid) {
    if prober.to_bare() == *user {
        return;
    }
    if user.node().is_none() {
        return;
    }
    let store = &router.storage().roster;
    let subscribed = store
        .roster_item(user.as_str(), &prober.to_bare().to_string())
        .await
        .ok()
        .flatten()
        .is_some_and(|item| item.subscription.contact_sees_user());
    if !subscribed {
        return;
    }
    let available = router.available_resources(user);
    if !available.is_empty() {
        for (resource, _) in available {
            module.send_last(router, &resource, prober.clone()).await;
        }
        return;
    }
    let mut presence = Element::bare("presence", ns::CLIENT);
    stanza::set_attr(&mut presence, "from", user.to_string());
    stanza::set_attr(&mut presence, "to", prober.to_string());
    stanza::set_attr(&mut presence, "type", "unavailable");
    if let Ok(Some(last)) = router
        .storage()
        .last_activity
        .last_activity(user.as_str())
        .await
    {
        if !last.status.is_empty() {
            presence.append_child(
                Element::builder("status", ns::CLIENT)
                    .append(last.status.as_str())
                    .build(),
            );
        }
        let seconds = (Utc::now().timestamp() - last.at_secs).max(0);
        let mut query = Element::bare("query", ns::LAST_ACTIVITY);
        stanza::set_attr(&mut query, "seconds", seconds.to_string());
        presence.append_child(query);
    }
    router
        .route_from_user(&Jid::from(user.clone()), prober, presence)
        .await;
}
