//! Server-to-server federation (RFC 6120 §13): streams in the `jabber:server` namespace with
//! other servers, in both directions, authenticated with certificates (SASL EXTERNAL,
//! XEP-0178) or Server Dialback (XEP-0220), and the router's egress to other domains.
//!
//! - `pool`: the router's door to other domains: one outbound link per (local domain,
//!   remote domain), opened on demand, with the stanzas waiting for it;
//! - `outbound`: a link's life: resolution, TLS, authentication, then stanzas out;
//! - `inbound`: a stream another server opened: its authentication (and the dialback
//!   verification it asks of the sender's authoritative server), then stanzas in;
//! - `wire`: frames in and bytes out on either kind of connection;
//! - `dialback`, `resolve`: keys, and where a domain's servers are.

pub mod dialback;
mod inbound;
mod outbound;
mod pool;
pub mod resolve;
mod wire;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use async_trait::async_trait;
use jid::Jid;
use minidom::Element;
use tokio::net::TcpListener;
use tracing::{debug, info_span, warn, Instrument};

use crate::config::Config;
use crate::router::{Component, Module, Registry, Router};
use crate::stanza::Kind;
use crate::tls::s2s::{PeerTrust, S2sConnector};
use crate::tls::{TlsContext, TlsError};
use dialback::DialbackKeys;
use resolve::{ResolveError, Resolver};

#[derive(Debug, thiserror::Error)]
pub enum S2sError {
    #[error("s2s TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("s2s resolver: {0}")]
    Resolve(#[from] ResolveError),
}

/// Federation: the egress the router hands stanzas for other domains, and what the s2s
/// listeners run streams with.
pub struct S2s {
    config: Arc<Config>,
    tls: Arc<TlsContext>,
    trust: PeerTrust,
    connector: S2sConnector,
    resolver: Resolver,
    keys: DialbackKeys,
    pool: pool::Pool,
    /// s2s connections open now, both directions (`s2s.max_connections`).
    connections: AtomicUsize,
    /// Authenticated inbound streams per remote domain (`s2s.max_connections_per_domain`).
    inbound: InboundCount,
    /// Set when the server stops, after its sessions ended: links send what they hold and
    /// close, inbound streams end with `<system-shutdown/>`.
    closing: tokio::sync::watch::Sender<bool>,
    /// For spawning link tasks from `&self`.
    this: Weak<S2s>,
    router: OnceLock<Weak<Router>>,
}

impl S2s {
    /// `secret`: the dialback secret from storage, the same on every node.
    pub fn new(
        config: Arc<Config>,
        tls: Arc<TlsContext>,
        secret: &[u8],
    ) -> Result<Arc<S2s>, S2sError> {
        let trust = PeerTrust::new(config.s2s.ca_file.as_deref())?;
        let connector = S2sConnector::new(&tls, trust.clone());
        let resolver = Resolver::new(&config.s2s)?;
        Ok(Arc::new_cyclic(|this| S2s {
            keys: DialbackKeys::new(secret),
            pool: pool::Pool::default(),
            connections: AtomicUsize::new(0),
            inbound: InboundCount::default(),
            closing: tokio::sync::watch::Sender::new(false),
            this: this.clone(),
            router: OnceLock::new(),
            config,
            tls,
            trust,
            connector,
            resolver,
        }))
    }

    /// Outbound links open now (a bidi stream carrying ours back counts as one).
    pub fn link_count(&self) -> usize {
        self.pool.len()
    }

    /// Closes every s2s connection once the sessions have ended (their last presences are
    /// queued on the links by then): links send what they hold first. Waits for them, a few
    /// seconds at most.
    pub async fn shutdown(&self) {
        self.closing.send_replace(true);
        let wait = async {
            while self.connection_count() > 0 || self.pool.len() > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, wait).await.is_err() {
            warn!("s2s connections still open after {SHUTDOWN_GRACE:?}; closing anyway");
        }
    }

    fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// Outbound links as (local domain, remote domain), sorted: for administrators.
    pub fn outbound_links(&self) -> Vec<(String, String)> {
        self.pool.pairs()
    }

    /// Remote domains with authenticated inbound streams, and how many each, sorted.
    pub fn inbound_streams(&self) -> Vec<(String, u32)> {
        let counts = self.inbound.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut streams: Vec<_> = counts.iter().map(|(d, n)| (d.clone(), *n)).collect();
        streams.sort();
        streams
    }

    /// s2s connections open now, both directions.
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    fn router(&self) -> Option<Arc<Router>> {
        self.router.get().and_then(Weak::upgrade)
    }

    /// Accepts other servers' connections until the listener fails: STARTTLS on 5269, or
    /// direct TLS (XEP-0368) on 5270.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, direct_tls: bool) {
        loop {
            let (socket, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "s2s accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(router) = self.router() else {
                return;
            };
            let Some(slot) = self.connection_slot() else {
                debug!(%peer, "s2s connection refused: s2s.max_connections reached");
                continue;
            };
            let _ = socket.set_nodelay(true);
            let span = info_span!(
                "s2s",
                direction = "in",
                %peer,
                transport = if direct_tls { "tls" } else { "tcp" },
                local = tracing::field::Empty,
                remote = tracing::field::Empty,
                auth = tracing::field::Empty,
            );
            let s2s = self.clone();
            tokio::spawn(
                async move {
                    inbound::run(s2s, router, socket, peer, direct_tls).await;
                    drop(slot);
                }
                .instrument(span),
            );
        }
    }

    /// A place among `s2s.max_connections`, given back when dropped.
    fn connection_slot(&self) -> Option<ConnectionSlot> {
        let max = self.config.s2s.max_connections as usize;
        let previous = self.connections.fetch_add(1, Ordering::AcqRel);
        let slot = ConnectionSlot(self.this.clone());
        if max > 0 && previous >= max {
            return None;
        }
        Some(slot)
    }

    /// The hosted domain a domain served here belongs to: itself, or the parent of a service
    /// (`conference.example.org` belongs to `example.org`).
    fn owner(&self, domain: &str) -> String {
        if self.config.is_hosted(domain) {
            return domain.to_owned();
        }
        domain
            .split_once('.')
            .map(|(_, parent)| parent)
            .filter(|parent| self.config.is_hosted(parent))
            .unwrap_or(domain)
            .to_owned()
    }

    /// A stream with `domain` ended abnormally: the modules hear of it
    /// (`Router::remote_domain_lost`) in a task of their own, so the stream's task finishes
    /// without waiting for every room and contact the domain's users touched. Nothing is said
    /// while this server shuts down: its own streams end then, not the other server.
    ///
    /// Said whether or not another stream with the domain is still up (a peer usually holds one
    /// in each direction). When a server crashes or the network fails, every stream with it
    /// breaks, and waiting for the last one would delay the news by however long an idle
    /// stream takes to notice (minutes, until a keepalive write fails). And the stream that
    /// broke may have swallowed stanzas in flight, an unavailable presence among them, that
    /// the peer will not send again on its other stream. The cost is on the rare loss of one
    /// stream of a healthy peer: its users look offline here until their next presence.
    /// Counting streams per domain across both directions would also need state shared by
    /// `inbound` and `outbound` that nothing else needs.
    fn lost(&self, router: &Arc<Router>, domain: &str) {
        if self.is_closing() || router.is_shutting_down() {
            return;
        }
        tracing::info!(remote = %domain, "connection to the domain lost");
        let (router, domain) = (router.clone(), domain.to_owned());
        tokio::spawn(async move { router.remote_domain_lost(&domain).await });
    }

    /// Whether `domain` is served here: a hosted domain or one of its services. Another
    /// server may never speak for these.
    fn serves(&self, router: &Router, domain: &str) -> bool {
        // Asked for every stanza in and out: a lookup, no parsing, for the usual (prepared,
        // ASCII) domain; anything else is prepared as a JID first.
        if domain.is_ascii() && !domain.bytes().any(|b| b.is_ascii_uppercase()) {
            return router.serves_domain(domain);
        }
        Jid::new(domain).is_ok_and(|jid| router.serves_domain(jid.domain().as_str()))
    }
}

#[derive(Default)]
struct InboundCount(std::sync::Mutex<std::collections::HashMap<String, u32>>);

impl InboundCount {
    /// Counts one more stream from `domain`; false (and not counted) past `max` (0: no cap).
    fn enter(&self, domain: &str, max: u32) -> bool {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(domain.to_owned()).or_default();
        if max > 0 && *count >= max {
            return false;
        }
        *count += 1;
        true
    }

    fn leave(&self, domain: &str) {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(domain) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(domain);
            }
        }
    }
}

/// Whether a `<stream:error/>` from the peer says it is shutting down: a server that stops
/// cleanly says goodbye for its users before it closes its streams (corvid does, so do Prosody
/// and ejabberd), so this is not a lost connection, and treating it as one would race with
/// those goodbyes still on their way on another stream.
fn peer_shuts_down(error: &Element) -> bool {
    error.is("error", crate::xml::ns::STREAM)
        && error.has_child("system-shutdown", crate::xml::ns::STREAMS_ERRORS)
}

/// Returns once the server closes its s2s connections.
async fn until_closing(closing: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: dropped here, before any other await.
    let _ = closing.wait_for(|closing| *closing).await.is_ok();
}

/// How long shutdown waits for links to send what they hold.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

struct ConnectionSlot(Weak<S2s>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let Some(s2s) = self.0.upgrade() {
            s2s.connections.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Module for S2s {
    fn name(&self) -> &'static str {
        "s2s"
    }

    fn register(self: Arc<Self>, registry: &mut Registry) {
        crate::modules::adhoc::register_s2s_commands(registry, Arc::downgrade(&self));
        registry.remote_domains(self);
    }
}

#[async_trait]
impl Component for S2s {
    async fn handle(&self, router: &Arc<Router>, kind: Kind, to: Jid, stanza: Element) {
        let Some(this) = self.this.upgrade() else {
            return;
        };
        pool::send(&this, router, kind, &to, stanza);
    }
}

/// Tells the federation which router it serves (the router is built after its modules).
pub fn attach(s2s: &S2s, router: &Arc<Router>) {
    let _ = s2s.router.set(Arc::downgrade(router));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_error(condition: &str) -> Element {
        Element::builder("error", crate::xml::ns::STREAM)
            .append(Element::bare(condition, crate::xml::ns::STREAMS_ERRORS))
            .build()
    }

    #[test]
    fn only_the_peer_s_system_shutdown_is_a_clean_stream_error() {
        assert!(peer_shuts_down(&stream_error("system-shutdown")));
        for condition in [
            "connection-timeout",
            "policy-violation",
            "internal-server-error",
        ] {
            assert!(!peer_shuts_down(&stream_error(condition)), "{condition}");
        }
        let stanza_error = Element::builder("error", crate::xml::ns::CLIENT)
            .append(Element::bare(
                "system-shutdown",
                crate::xml::ns::STREAMS_ERRORS,
            ))
            .build();
        assert!(!peer_shuts_down(&stanza_error));
    }
}
