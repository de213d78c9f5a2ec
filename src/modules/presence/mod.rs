//! Presence (RFC 6121 §4) and the presence side of subscriptions (§3): broadcast to the
//! user's own resources and to subscribed contacts, probes and their answers, directed
//! presence and its cleanup, unavailable presence for every session that ends, and last
//! activity (XEP-0012) when the last one does.

mod broadcast;
mod cluster;
mod inbound;
mod remote;
mod request_rate;
mod state;

use std::sync::Arc;

use async_trait::async_trait;
use jid::{BareJid, FullJid, Jid};
use minidom::Element;

use crate::config::Config;
use crate::modules::roster::subscription;
use crate::modules::roster::table::SubscriptionType;
use crate::router::{
    Module, PresenceHandler, Priority, Registry, RemoteDomainHook, Router, SessionEnd, SessionHook,
};
use crate::stanza::{self, Condition, ErrorType, StanzaError};
use crate::xml::ns;
use remote::RemoteAvailable;
use request_rate::RequestRate;
use state::PresenceState;

pub struct Presence {
    state: PresenceState,
    requests: RequestRate,
    /// Remote sessions local users were told are available (see `remote`).
    remote: RemoteAvailable,
}

impl Presence {
    pub fn new(config: &Config) -> Presence {
        Presence {
            state: PresenceState::default(),
            requests: RequestRate::new(&config.limits),
            remote: RemoteAvailable::default(),
        }
    }
}

impl Module for Presence {
    fn name(&self) -> &'static str {
        "presence"
    }

    fn register(self: Arc<Self>, registry: &mut Registry) {
        registry.presence_handler(self.clone());
        registry.session_hook(Priority::Presence, self.clone());
        registry.remote_domain_hook(Priority::Presence, self.clone());
        registry.cluster_topic(cluster::TOPIC, Arc::new(cluster::LastPresence(self)));
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

fn unavailable_from(session: &FullJid) -> Element {
    let mut presence = Element::bare("presence", ns::CLIENT);
    stanza::set_attr(&mut presence, "from", session.to_string());
    stanza::set_attr(&mut presence, "type", "unavailable");
    presence
}

#[async_trait]
impl PresenceHandler for Presence {
    async fn broadcast(&self, router: &Arc<Router>, from: &FullJid, presence: Element) {
        match stanza::stanza_type(&presence) {
            "available" => self.available(router, from, presence).await,
            "unavailable" => self.unavailable(router, from, presence).await,
            // Subscription requests and probes need an address; without one they mean nothing.
            _ => {}
        }
    }

    async fn outbound(&self, router: &Arc<Router>, from: &FullJid, to: Jid, presence: Element) {
        let presence_type = stanza::stanza_type(&presence);
        if let Some(kind) = SubscriptionType::parse(presence_type) {
            let user = from.to_bare();
            let contact = to.to_bare();
            // A user is always "subscribed" to their own presence; there is nothing to manage.
            if contact == user {
                return;
            }
            // Refused before anything is stored or routed: the contact never hears of it.
            if kind == SubscriptionType::Subscribe {
                if let Err(exhausted) = self.requests.request(&user) {
                    let error = StanzaError::new(ErrorType::Wait, Condition::PolicyViolation)
                        .with_text(format!("Too many subscription requests: {exhausted}"));
                    router.bounce(&presence, error);
                    return;
                }
            }
            let outcome = subscription::outbound(router, &user, &contact, kind, &presence).await;
            if outcome.presence_granted {
                self.presence_granted(router, &user, &contact).await;
            }
            return;
        }
        match presence_type {
            "available" if !self.contact_sees_user(router, from, &to).await => {
                self.state.add_directed(from, to.clone());
            }
            "unavailable" => self.state.remove_directed(from, &to),
            _ => {}
        }
        router
            .route_from_user(&Jid::from(from.clone()), to, presence)
            .await;
    }

    async fn inbound(
        &self,
        router: &Arc<Router>,
        to: &BareJid,
        resource: Option<&str>,
        presence: Element,
    ) {
        inbound::handle(self, router, to, resource, presence).await;
    }
}

#[async_trait]
impl SessionHook for Presence {
    async fn ended(
        &self,
        router: &Arc<Router>,
        session: &FullJid,
        was_available: bool,
        _why: SessionEnd,
    ) {
        let unavailable = unavailable_from(session);
        if was_available {
            self.went_unavailable(router, session, unavailable).await;
        } else {
            // Directed presence can precede initial presence (a MUC join, say).
            self.send_to_directed(router, session, &unavailable).await;
        }
    }
}

/// The connection to another server was lost: each of its sessions local users were told is
/// available goes unavailable to them, as if that server had said so (what it would have done
/// had the session ended while the connection was up). Routed like presence from that server,
/// so the recipients' filters and the presence observers (PEP) see it as they would have.
#[async_trait]
impl RemoteDomainHook for Presence {
    async fn lost(&self, router: &Arc<Router>, domain: &str) {
        for (session, users) in self.remote.take_domain(domain) {
            for user in users {
                let mut presence = unavailable_from(&session);
                stanza::set_attr(&mut presence, "to", user.to_string());
                router
                    .route(crate::stanza::Kind::Presence, Jid::from(user), presence)
                    .await;
            }
        }
    }
}

impl Presence {
    async fn contact_sees_user(&self, router: &Router, from: &FullJid, to: &Jid) -> bool {
        if from.node().is_none() {
            return false;
        }
        router
            .storage()
            .roster
            .roster_item(from.to_bare().as_str(), &to.to_bare().to_string())
            .await
            .ok()
            .flatten()
            .is_some_and(|item| item.subscription.contact_sees_user())
    }

    /// §3.1.5: a contact that was just allowed to see the user gets the user's current
    /// presence from each available resource; observers hear of the grant after that (PEP
    /// sends the last items).
    pub(super) async fn presence_granted(
        &self,
        router: &Arc<Router>,
        user: &BareJid,
        contact: &BareJid,
    ) {
        for (resource, _) in router.available_resources(user) {
            self.send_last(router, &resource, Jid::from(contact.clone()))
                .await;
        }
        for observer in router.presence_observers() {
            observer.subscription_granted(router, user, contact).await;
        }
    }

    async fn send_to_directed(&self, router: &Arc<Router>, session: &FullJid, presence: &Element) {
        for target in self.state.take_directed(session) {
            let mut copy = presence.clone();
            stanza::set_attr(&mut copy, "to", target.to_string());
            router
                .route_from_user(&Jid::from(session.clone()), target, copy)
                .await;
        }
    }
}
