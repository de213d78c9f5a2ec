//! The presence side of a session's lifecycle (RFC 6121 §4): available and unavailable
//! presence set the session's availability (which RFC 6121 §8 routing depends on) and are
//! broadcast to the user's own available resources; a session that ends while available is
//! announced as unavailable. Roster-based broadcast to contacts builds on this.

use std::sync::Arc;

use async_trait::async_trait;
use jid::{BareJid, FullJid};
use minidom::Element;

use crate::router::{Availability, Module, PresenceHandler, Registry, Router, SessionHook};
use crate::stanza;
use crate::xml::ns;

pub struct Presence;

impl Module for Presence {
    fn name(&self) -> &'static str {
        "presence"
    }

    fn register(self: Arc<Self>, registry: &mut Registry) {
        registry.presence_handler(self.clone());
        registry.session_hook(self);
    }
}

/// RFC 6121 §4.7.2.3: priority is -128..=127; a missing or unreadable value means 0.
fn priority_of(presence: &Element) -> i8 {
    presence
        .get_child("priority", ns::CLIENT)
        .and_then(|p| p.text().trim().parse::<i64>().ok())
        .map(|p| p.clamp(i64::from(i8::MIN), i64::from(i8::MAX)) as i8)
        .unwrap_or(0)
}

/// Sends `presence` to every available resource of the sender's account, `to` set to each.
fn broadcast_to_own_resources(router: &Router, from: &FullJid, presence: &Element) {
    for (resource, _) in router.available_resources(&from.to_bare()) {
        let mut copy = presence.clone();
        stanza::set_attr(&mut copy, "to", resource.to_string());
        let _ = router.deliver_to_session(&resource, copy);
    }
}

#[async_trait]
impl PresenceHandler for Presence {
    async fn broadcast(&self, router: &Arc<Router>, from: &FullJid, presence: Element) {
        match stanza::stanza_type(&presence) {
            "available" => {
                let priority = priority_of(&presence);
                router
                    .set_availability(from, Availability::Available(priority))
                    .await;
                broadcast_to_own_resources(router, from, &presence);
            }
            "unavailable" => {
                // Tell the other resources (and the sender) before it stops counting as available.
                broadcast_to_own_resources(router, from, &presence);
                router
                    .set_availability(from, Availability::Unavailable)
                    .await;
            }
            // Subscription requests and probes need an address; without one they mean nothing.
            _ => {}
        }
    }

    async fn inbound(
        &self,
        router: &Arc<Router>,
        to: &BareJid,
        resource: Option<&str>,
        presence: Element,
    ) {
        if !matches!(stanza::stanza_type(&presence), "available" | "unavailable") {
            return;
        }
        match resource.and_then(|r| to.with_resource_str(r).ok()) {
            Some(full) => {
                let _ = router.deliver_to_session(&full, presence);
            }
            None => {
                for (target, _) in router.available_resources(to) {
                    let _ = router.deliver_to_session(&target, presence.clone());
                }
            }
        }
    }
}

#[async_trait]
impl SessionHook for Presence {
    async fn ended(&self, router: &Arc<Router>, session: &FullJid, was_available: bool) {
        if !was_available {
            return;
        }
        let mut unavailable = Element::bare("presence", ns::CLIENT);
        stanza::set_attr(&mut unavailable, "from", session.to_string());
        stanza::set_attr(&mut unavailable, "type", "unavailable");
        broadcast_to_own_resources(router, session, &unavailable);
    }
}
