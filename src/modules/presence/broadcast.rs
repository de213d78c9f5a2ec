//! Presence a session broadcasts (RFC 6121 §4.2, §4.4, §4.5): to the user's own resources,
//! to contacts subscribed to the user, and on initial presence the probes and the catch-up
//! a new session needs.

use std::sync::Arc;

use chrono::Utc;
use jid::{FullJid, Jid};
use minidom::Element;
use tracing::warn;

use super::{priority_of, Presence};
use crate::router::{Availability, Router};
use crate::stanza;
use crate::storage::{LastActivity, RosterItem};
use crate::xml::{self, ns};

/// Sends `presence` to every available resource of the sender's account, `to` set to each
/// (§4.2.2: the sender's own resource included).
fn to_own_resources(router: &Router, from: &FullJid, presence: &Element) {
    for (resource, _) in router.available_resources(&from.to_bare()) {
        let mut copy = presence.clone();
        stanza::set_attr(&mut copy, "to", resource.to_string());
        let _ = router.deliver_to_session(&resource, copy);
    }
}

async fn roster_of(router: &Router, session: &FullJid) -> Vec<RosterItem> {
    if session.node().is_none() {
        return Vec::new();
    }
    match router
        .storage()
        .roster
        .roster(session.to_bare().as_str())
        .await
    {
        Ok((_, items)) => items,
        Err(e) => {
            warn!(error = %e, "loading the roster for presence broadcast failed");
            Vec::new()
        }
    }
}

/// Sends a copy of `presence` to each contact whose item passes `selected`.
async fn to_contacts(
    router: &Arc<Router>,
    from: &FullJid,
    roster: &[RosterItem],
    presence: &Element,
    selected: impl Fn(&RosterItem) -> bool,
) {
    let sender = Jid::from(from.clone());
    for item in roster.iter().filter(|i| selected(i)) {
        let Ok(contact) = Jid::new(&item.contact) else {
            continue;
        };
        let mut copy = presence.clone();
        stanza::set_attr(&mut copy, "to", item.contact.clone());
        router.route_from_user(&sender, contact, copy).await;
    }
}

impl Presence {
    pub(super) async fn available(&self, router: &Arc<Router>, from: &FullJid, presence: Element) {
        let mut presence = presence;
        for observer in router.presence_observers() {
            observer.decorate(router, from, &mut presence).await;
        }
        let priority = priority_of(&presence);
        let previous = router
            .set_availability(from, Availability::Available(priority))
            .await;
        let initial = !matches!(previous, Some(Availability::Available(_)));
        self.state.set_last(from, &presence);
        to_own_resources(router, from, &presence);
        let roster = roster_of(router, from).await;
        to_contacts(router, from, &roster, &presence, |i| {
            i.subscription.contact_sees_user()
        })
        .await;
        if initial {
            self.initial_catch_up(router, from, &roster).await;
        }
        for observer in router.presence_observers() {
            observer.broadcasted(router, from, &presence).await;
        }
    }

    /// §4.2.2–4.2.3: probe the contacts the user is subscribed to, show the new session its
    /// sibling resources, and hand it the subscription requests still waiting (§3.1.3).
    async fn initial_catch_up(&self, router: &Arc<Router>, from: &FullJid, roster: &[RosterItem]) {
        // From the full JID, so the answers reach only the session that needs them.
        let mut probe = Element::bare("presence", ns::CLIENT);
        stanza::set_attr(&mut probe, "from", from.to_string());
        stanza::set_attr(&mut probe, "type", "probe");
        to_contacts(router, from, roster, &probe, |i| {
            i.subscription.user_sees_contact()
        })
        .await;

        for (sibling, _) in router.available_resources(&from.to_bare()) {
            if &sibling == from {
                continue;
            }
            self.send_last(router, &sibling, Jid::from(from.clone()))
                .await;
        }

        if from.node().is_none() {
            return;
        }
        let user = from.to_bare();
        let pending = match router.storage().roster.pending_in(user.as_str()).await {
            Ok(pending) => pending,
            Err(e) => {
                warn!(error = %e, "loading pending subscription requests failed");
                return;
            }
        };
        for (_, request) in pending {
            if let Ok(request) = xml::parse_standalone(request.as_bytes(), xml::XmlLimits::STORED) {
                let _ = router.deliver_to_session(from, request);
            }
        }
    }

    pub(super) async fn unavailable(
        &self,
        router: &Arc<Router>,
        from: &FullJid,
        presence: Element,
    ) {
        let was_available = router
            .available_resources(&from.to_bare())
            .iter()
            .any(|(r, _)| r == from);
        if was_available {
            self.went_unavailable(router, from, presence).await;
        } else {
            self.send_to_directed(router, from, &presence).await;
        }
    }

    /// §4.5: everyone who could see the session hears it is gone: the user's resources,
    /// subscribed contacts and directed-presence recipients. Also runs for a session that
    /// ended without saying so.
    pub(super) async fn went_unavailable(
        &self,
        router: &Arc<Router>,
        session: &FullJid,
        presence: Element,
    ) {
        to_own_resources(router, session, &presence);
        router
            .set_availability(session, Availability::Unavailable)
            .await;
        self.state.forget_last(session);
        let roster = roster_of(router, session).await;
        to_contacts(router, session, &roster, &presence, |i| {
            i.subscription.contact_sees_user()
        })
        .await;
        self.send_to_directed(router, session, &presence).await;
        let user = session.to_bare();
        if router.available_resources(&user).is_empty() && user.node().is_some() {
            let last = LastActivity {
                at_secs: Utc::now().timestamp(),
                status: presence
                    .get_child("status", ns::CLIENT)
                    .map(|s| s.text())
                    .unwrap_or_default(),
            };
            if let Err(e) = router
                .storage()
                .last_activity
                .set_last_activity(user.as_str(), &last)
                .await
            {
                warn!(error = %e, "recording last activity failed");
            }
        }
        for observer in router.presence_observers() {
            observer.broadcasted(router, session, &presence).await;
        }
    }
}
