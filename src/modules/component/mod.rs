//! External components (XEP-0114): programs that connect over TCP in the
//! `jabber:component:accept` namespace, authenticate with a shared secret and then serve a
//! domain of their own (a gateway, a bot, a bridge) as if it were hosted here.
//!
//! - this file: the hub: which configured domain has a live connection, and the router's
//!   door to it (`Component`), which bounces what cannot reach a component that is away;
//! - `connection`: one component's stream: header, handshake, then stanzas both ways;
//! - `handshake`: the secret's proof.
//!
//! Every configured domain is registered with the router at start-up, connected or not, so
//! a stanza for a component that is down is answered with `service-unavailable` instead of
//! leaving through federation or being lost.

mod connection;
pub mod handshake;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use jid::Jid;
use minidom::Element;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::{debug, info_span, warn, Instrument};

use crate::config::{ComponentsConfig, Config};
use crate::router::{
    Component, DiscoQuery, DiscoTarget, Item, ItemSource, Module, Registry, Router,
};
use crate::stanza::{self, Kind, StanzaError};

/// The namespace of a component's stream (XEP-0114 §3).
pub const NS_ACCEPT: &str = "jabber:component:accept";

/// Connections still in their handshake, at most: the listener is for a few known programs,
/// so more than this at once is a flood, and the excess is closed at once.
const MAX_HANDSHAKING: usize = 32;

/// The configured components and which of them are connected.
pub struct ExternalComponents {
    config: ComponentsConfig,
    /// Hosted domains, the main one first: where each component is listed in disco#items.
    hosted: Vec<String>,
    links: Mutex<HashMap<String, Link>>,
    next_link: AtomicU64,
    handshaking: AtomicUsize,
}

/// A connected component: the queue its connection writes from.
struct Link {
    id: u64,
    queue: mpsc::Sender<Element>,
}

/// Why a second connection for a domain is refused.
#[derive(Debug)]
pub(crate) struct AlreadyConnected;

impl ExternalComponents {
    /// `None` when no component is configured: no listener, nothing registered.
    pub fn new(config: &Config) -> Option<Arc<ExternalComponents>> {
        if !config.components.enabled() {
            return None;
        }
        Some(Arc::new(ExternalComponents {
            config: config.components.clone(),
            hosted: config
                .hosted_domains()
                .into_iter()
                .map(|host| host.domain)
                .collect(),
            links: Mutex::new(HashMap::new()),
            next_link: AtomicU64::new(1),
            handshaking: AtomicUsize::new(0),
        }))
    }

    /// The configured secret of `domain`, if it is a component's.
    fn secret(&self, domain: &str) -> Option<&str> {
        self.config.services.get(domain).map(|s| s.secret.as_str())
    }

    /// Domains with a live connection, sorted: for administrators and tests.
    pub fn connected(&self) -> Vec<String> {
        let mut domains: Vec<String> = self.lock().keys().cloned().collect();
        domains.sort();
        domains
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Link>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Routes `domain` to a connection that just authenticated. The connection already there
    /// keeps the domain and the new one is refused, as Prosody does: a component that is
    /// working is not cut off by a second instance started by mistake, and two instances
    /// never take the domain from each other in a reconnection loop. A connection that died
    /// without closing is noticed by the keepalives (`keepalive_secs`) and frees the domain.
    fn attach(&self, domain: &str) -> Result<(u64, mpsc::Receiver<Element>), AlreadyConnected> {
        let mut links = self.lock();
        if links.contains_key(domain) {
            return Err(AlreadyConnected);
        }
        let id = self.next_link.fetch_add(1, Ordering::Relaxed);
        let (queue, receiver) = mpsc::channel(self.config.queue_limit.max(1));
        links.insert(domain.to_owned(), Link { id, queue });
        Ok((id, receiver))
    }

    /// The connection `id` ended: stanzas for `domain` are bounced from now on.
    fn detach(&self, domain: &str, id: u64) {
        let mut links = self.lock();
        if links.get(domain).is_some_and(|link| link.id == id) {
            links.remove(domain);
        }
    }

    /// The hosted domain whose disco#items list `component`: the one it is a subdomain of
    /// (`gateway.example.org` under `example.org`, the longest match), else the main domain.
    /// Clients look for gateways among their own server's items (XEP-0100 §4.1), and a
    /// component named under a domain belongs to it, as Prosody lists them.
    fn listed_under(&self, component: &str) -> &str {
        self.hosted
            .iter()
            .filter(|host| {
                component
                    .strip_suffix(host.as_str())
                    .is_some_and(|head| head.ends_with('.'))
            })
            .max_by_key(|host| host.len())
            .or(self.hosted.first())
            .map(String::as_str)
            .unwrap_or_default()
    }

    /// Accepts components' connections until the listener fails.
    pub async fn serve(self: Arc<Self>, router: Arc<Router>, listener: TcpListener) {
        loop {
            let (socket, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "component accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(slot) = HandshakeSlot::take(&self) else {
                debug!(%peer, "component connection refused: too many handshakes at once");
                continue;
            };
            let _ = socket.set_nodelay(true);
            let span = info_span!("component", %peer, domain = tracing::field::Empty);
            let (hub, router) = (self.clone(), router.clone());
            tokio::spawn(connection::run(hub, router, socket, slot).instrument(span));
        }
    }
}

/// A place among the `MAX_HANDSHAKING` connections, given back once the handshake is over.
pub(crate) struct HandshakeSlot(Arc<ExternalComponents>);

impl HandshakeSlot {
    fn take(hub: &Arc<ExternalComponents>) -> Option<HandshakeSlot> {
        let previous = hub.handshaking.fetch_add(1, Ordering::AcqRel);
        let slot = HandshakeSlot(hub.clone());
        (previous < MAX_HANDSHAKING).then_some(slot)
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.0.handshaking.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A stanza that cannot reach its component: answered, never dropped in silence, except
/// presence (RFC 6121 has no error answer for it) and answers themselves.
fn bounce(router: &Router, kind: Kind, stanza: &Element, error: StanzaError) {
    let answer = kind == Kind::Iq && stanza::stanza_type(stanza) == "result";
    if kind != Kind::Presence && !answer {
        router.bounce(stanza, error);
    }
}

impl Module for ExternalComponents {
    fn name(&self) -> &'static str {
        "component"
    }

    fn register(self: Arc<Self>, registry: &mut Registry) {
        for domain in self.config.services.keys() {
            registry.component(domain.clone(), self.clone());
        }
        registry.disco_items(DiscoTarget::Server, self);
    }
}

#[async_trait]
impl Component for ExternalComponents {
    async fn handle(&self, router: &Arc<Router>, kind: Kind, to: Jid, stanza: Element) {
        let queue = self
            .lock()
            .get(to.domain().as_str())
            .map(|link| link.queue.clone());
        let Some(queue) = queue else {
            debug!(to = %to, "component not connected: bounced");
            bounce(router, kind, &stanza, StanzaError::service_unavailable());
            return;
        };
        match queue.try_send(stanza) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(stanza)) => {
                debug!(to = %to, "component queue full: bounced");
                bounce(router, kind, &stanza, StanzaError::resource_constraint());
            }
            Err(mpsc::error::TrySendError::Closed(stanza)) => {
                bounce(router, kind, &stanza, StanzaError::service_unavailable());
            }
        }
    }

    fn takes_replies(&self) -> bool {
        true
    }
}

#[async_trait]
impl ItemSource for ExternalComponents {
    async fn items(&self, _router: &Arc<Router>, query: &DiscoQuery<'_>) -> Vec<Item> {
        self.config
            .services
            .keys()
            .filter(|domain| self.listed_under(domain) == query.domain)
            .map(|domain| Item::new(domain.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ComponentService;

    fn hub(hosts: &[&str], components: &[&str]) -> Arc<ExternalComponents> {
        let mut config = Config {
            domain: hosts[0].to_owned(),
            ..Config::default()
        };
        for host in &hosts[1..] {
            config.hosts.insert((*host).to_owned(), Default::default());
        }
        for domain in components {
            config.components.services.insert(
                (*domain).to_owned(),
                ComponentService { secret: "s".into() },
            );
        }
        ExternalComponents::new(&config).expect("components configured")
    }

    #[test]
    fn a_component_is_listed_under_the_domain_it_is_named_under() {
        let hub = hub(
            &["example.org", "chat.example.org", "other.net"],
            &["irc.chat.example.org", "gw.other.net", "bot.elsewhere.com"],
        );
        assert_eq!(hub.listed_under("irc.chat.example.org"), "chat.example.org");
        assert_eq!(hub.listed_under("gw.other.net"), "other.net");
        assert_eq!(hub.listed_under("bot.elsewhere.com"), "example.org");
        // A suffix that is not a label boundary does not count.
        assert_eq!(hub.listed_under("xother.net"), "example.org");
    }

    #[test]
    fn the_first_connection_keeps_the_domain_until_it_ends() {
        let hub = hub(&["example.org"], &["gw.example.org"]);
        let (first, _queue) = hub.attach("gw.example.org").expect("first");
        assert!(hub.attach("gw.example.org").is_err());
        // A stale id (an older connection) frees nothing.
        hub.detach("gw.example.org", first + 100);
        assert!(hub.attach("gw.example.org").is_err());
        hub.detach("gw.example.org", first);
        assert!(hub.attach("gw.example.org").is_ok());
    }
}
