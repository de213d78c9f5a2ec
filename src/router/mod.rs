//! The one router: every stanza from every listener comes here and leaves towards a local
//! session, a module, storage (through a module) or an error reply. Delivery follows RFC 6120
//! §10 and RFC 6121 §8; nothing here knows about sockets or about any particular XEP.

mod checks;
pub mod cluster_link;
pub mod directory;
pub mod discovery;
pub mod flags;
mod local_sessions;
pub mod priority;
pub mod registry;
mod resource_cap;
pub mod session_queue;
mod sessions;
mod shutdown;

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use tokio::sync::{oneshot, Notify};
use tracing::{debug, warn};

pub use cluster_link::{ClusterLink, ClusterTopic, NodeGoneHook};
pub use directory::{
    Component, Destination, Directory, DirectoryFactory, Location, NodeId, Replaced, Resource,
};
pub use discovery::{
    Contributions, DiscoQuery, DiscoTarget, Discovery, Identity, Item, ItemSource, NodeHandler,
    NodeInfo,
};
pub use flags::{SessionFlag, SessionFlags};
pub use priority::Priority;
pub use registry::{
    InlineFeature, IqHandler, IqRequest, IqResult, IqType, MessageHook, Module, PresenceHandler,
    PresenceObserver, Registry, RemoteDomainHook, SessionHook, ShutdownHook, StanzaFilter,
    UndeliverableMessage, Verdict,
};
pub use resource_cap::{Reservation, TooManyResources};
pub use session_queue::{QueueReceiver, QueueSender};
pub use sessions::{Availability, Outbound, SessionEnd, SharedStanza};
pub use shutdown::{ShutdownSignal, TaskGuard};

use crate::address;
use crate::config::Config;
use crate::ids::IdGenerator;
use crate::stanza::{self, Kind, StanzaError};
use crate::storage::Storage;
use local_sessions::SessionTable;

pub struct Router {
    /// The main domain: what answers for the server when nothing names a hosted domain.
    domain: String,
    /// Every hosted domain, the main one included.
    hosted: std::collections::HashSet<String>,
    /// For the few replies that must leave through an async egress from a sync caller.
    this: std::sync::Weak<Router>,
    registry: Registry,
    /// Where each account's resources are: this node's session table, or what a registered
    /// directory built around it.
    directory: Box<dyn Directory>,
    storage: Storage,
    ids: IdGenerator,
    config: Arc<Config>,
    /// IQs the server sent and awaits an answer to: id -> (who must answer, waiter).
    pending_iqs: DashMap<String, (Jid, oneshot::Sender<Element>)>,
    /// Resources granted during negotiation that are not in the directory yet.
    pending_resources: resource_cap::Pending,
    shutdown: shutdown::Shutdown,
    metrics: Arc<crate::metrics::Metrics>,
    /// Set once at start: what `reload` runs (configuration and certificates).
    reloader: std::sync::OnceLock<Arc<crate::reload::Reloader>>,
    /// Set once at start on a node of a cluster.
    cluster: std::sync::OnceLock<Arc<dyn ClusterLink>>,
}

/// The ids of the IQs the server sends: the number is a sortable id, so it names the node
/// that waits for the answer.
const PENDING_IQ_PREFIX: &str = "corvid-";

/// The cluster topic on which answers to another node's `request_iq` travel.
pub const PENDING_IQ_TOPIC: &str = "iq-answer";

/// Why `request_iq` got no answer.
#[derive(Debug, thiserror::Error)]
pub enum IqRequestError {
    #[error("no answer within the timeout")]
    Timeout,
    #[error("the request could not be delivered")]
    Undelivered,
}

impl Router {
    /// `node`: this node's number (see `crate::ids`), which goes into every id it makes.
    pub fn new(
        config: Arc<Config>,
        storage: Storage,
        modules: Vec<Arc<dyn Module>>,
        node: u16,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Arc<Self> {
        let mut registry = Registry::default();
        for module in modules {
            debug!(module = module.name(), "registering module");
            registry.enter_module(module.name());
            module.register(&mut registry);
        }
        let local: Box<dyn Directory> = Box::new(SessionTable::default());
        let directory = match registry.directory.take() {
            Some(around) => around(local),
            None => local,
        };
        Arc::new_cyclic(|this| Router {
            this: this.clone(),
            domain: config.domain.clone(),
            hosted: config
                .hosted_domains()
                .into_iter()
                .map(|host| host.domain)
                .collect(),
            registry,
            directory,
            storage,
            ids: IdGenerator::new(node),
            config,
            pending_iqs: DashMap::new(),
            pending_resources: resource_cap::Pending::default(),
            shutdown: shutdown::Shutdown::default(),
            metrics,
            reloader: std::sync::OnceLock::new(),
            cluster: std::sync::OnceLock::new(),
        })
    }

    /// Connects this node to the rest of its cluster (once, at start).
    pub fn set_cluster(&self, link: Arc<dyn ClusterLink>) {
        let _ = self.cluster.set(link);
    }

    /// The link to the other nodes, on a node of a cluster.
    pub fn cluster(&self) -> Option<&Arc<dyn ClusterLink>> {
        self.cluster.get()
    }

    /// The receiver of `topic` from other nodes.
    pub fn cluster_topic(&self, topic: &str) -> Option<Arc<dyn ClusterTopic>> {
        self.registry.cluster_topics.get(topic).cloned()
    }

    /// Another node is gone with `sessions`: every module forgets what they had here. With
    /// `run_session_ends` (one node of the cluster does it), each session also ends as a
    /// local one whose connection broke would: contacts hear it go unavailable.
    pub async fn node_gone(
        self: &Arc<Self>,
        node: NodeId,
        sessions: &[(FullJid, bool)],
        run_session_ends: bool,
    ) {
        if self.shutdown.has_begun() {
            return;
        }
        let jids: Vec<FullJid> = sessions.iter().map(|(jid, _)| jid.clone()).collect();
        for hook in self.registry.node_gone_hooks.iter() {
            hook.node_gone(self, node, &jids).await;
        }
        if !run_session_ends {
            return;
        }
        for (jid, was_available) in sessions {
            for hook in self.registry.session_hooks.iter() {
                hook.ended(self, jid, *was_available, SessionEnd::ConnectionLost)
                    .await;
            }
        }
    }

    /// This server's metrics.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// Installs what reloads the configuration and certificates (once, at start).
    pub fn set_reloader(&self, reloader: Arc<crate::reload::Reloader>) {
        let _ = self.reloader.set(reloader);
    }

    /// What reloads the configuration and certificates, and holds the settings that follow a
    /// reload (for ad-hoc commands, `corvid ctl`). `None` before the server has started.
    pub fn reloader(&self) -> Option<&Arc<crate::reload::Reloader>> {
        self.reloader.get()
    }

    /// The main hosted domain.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Whether `domain` is one of the domains this server hosts (not a service of one).
    pub fn is_hosted(&self, domain: &str) -> bool {
        self.hosted.contains(domain)
    }

    /// The hosted domain of `address` (a JID as text), or the main domain when it names none:
    /// who answers for the server about it.
    pub fn hosted_domain_of(&self, address: Option<&str>) -> String {
        address
            .and_then(|a| Jid::new(a).ok())
            .map(|jid| jid.domain().to_string())
            .filter(|domain| self.is_hosted(domain))
            .unwrap_or_else(|| self.domain.clone())
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn ids(&self) -> &IdGenerator {
        &self.ids
    }

    /// The shared `T` a module made with `Registry::service`, if any did.
    pub fn service<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.registry
            .services
            .get(&std::any::TypeId::of::<T>())
            .and_then(|service| service.clone().downcast::<T>().ok())
    }

    /// Every session bound on this node: its JID, availability and flags.
    pub fn local_sessions(&self) -> Vec<(FullJid, Availability, SessionFlags)> {
        let mut found = Vec::new();
        self.directory.each_local(&mut |resource| {
            found.push((resource.jid.clone(), resource.availability, resource.flags));
        });
        found
    }

    /// Tells a session of this node to end with the stream error `condition` (RFC 6120
    /// §4.9.3) and `text`; false when it is not bound here.
    pub fn terminate_session(
        &self,
        jid: &FullJid,
        condition: crate::xml::StreamCondition,
        text: &'static str,
    ) -> bool {
        self.directory
            .order_local(jid, Outbound::Terminate(condition, text))
    }

    /// What modules contributed to service discovery.
    pub fn discovery(&self) -> &Discovery {
        &self.registry.discovery
    }

    /// The namespaces of the features modules let clients switch on while binding (XEP-0386),
    /// in the order they registered.
    pub fn inline_features(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.registry.inline_features.iter().map(|(ns, _)| *ns)
    }

    /// Switches on, for the just-bound `session`, each feature the client asked for inline;
    /// requests for a feature no module registered are ignored (it was not advertised).
    pub fn enable_inline(&self, session: &FullJid, requests: &[Element]) {
        for request in requests {
            let feature = self
                .registry
                .inline_features
                .iter()
                .find(|(ns, _)| request.has_ns(*ns));
            if let Some((_, feature)) = feature {
                feature.enable(self, session, request);
            }
        }
    }

    /// In priority order.
    pub fn presence_observers(&self) -> impl Iterator<Item = &Arc<dyn PresenceObserver>> {
        self.registry.presence_observers.iter()
    }

    /// Where each account's resources are, with their availability and flags.
    pub fn directory(&self) -> &dyn Directory {
        &*self.directory
    }

    /// A flag some module declared under `name` (see `Registry::session_flag`), for code that
    /// has no module instance at hand; `None` when no module declared it.
    pub fn session_flag(&self, name: &str) -> Option<SessionFlag> {
        self.registry.flags.find(name)
    }

    /// Sets or clears a module's flag on a session.
    pub fn set_session_flag(&self, jid: &FullJid, flag: SessionFlag, on: bool) {
        self.directory.set_flag(jid, flag, on);
    }

    pub fn has_session_flag(&self, jid: &FullJid, flag: SessionFlag) -> bool {
        self.directory.flags(jid).contains(flag)
    }

    /// The user's sessions that have `flag`.
    pub fn resources_with_flag(&self, user: &BareJid, flag: SessionFlag) -> Vec<FullJid> {
        let mut found = Vec::new();
        self.directory.resources(user, &mut |resource| {
            if resource.flags.contains(flag) {
                found.push(resource.jid.clone());
            }
        });
        found
    }

    /// `SessionFlag::DISCONNECTED` under the name stream management uses: the session's
    /// connection broke and it waits to be resumed, or it is attached again. Kept for the
    /// callers in `src/stream/`.
    pub fn set_detached(&self, jid: &FullJid, detached: bool) {
        self.set_session_flag(jid, SessionFlag::DISCONNECTED, detached);
    }

    /// True while the session waits for its client to resume it: stanzas queue up unread.
    /// Kept for the callers in `src/stream/` and the tests; modules ask for the flag.
    pub fn is_detached(&self, jid: &FullJid) -> bool {
        self.has_session_flag(jid, SessionFlag::DISCONNECTED)
    }

    /// Whether the user has any bound session (no list built: for per-message checks).
    pub fn has_sessions(&self, user: &BareJid) -> bool {
        self.directory.has_any(user)
    }

    /// Every bound session of the user, available or not.
    pub fn bound_resources(&self, user: &BareJid) -> Vec<FullJid> {
        let mut found = Vec::new();
        self.directory
            .resources(user, &mut |resource| found.push(resource.jid.clone()));
        found
    }

    /// Sends an IQ get/set from the server's domain and waits for the answer. The answer is
    /// only accepted from the entity the request went to, so a third party cannot forge it.
    pub async fn request_iq(
        self: &Arc<Self>,
        to: Jid,
        iq: Element,
        timeout: Duration,
    ) -> Result<Element, IqRequestError> {
        let from = self.hosted_domain_of(Some(to.as_str()));
        self.request_iq_as(from, to, iq, timeout).await
    }

    /// `request_iq` on behalf of `from`, a local account's bare JID or the server's domain
    /// (XEP-0357 notifications come from the user's account, for instance).
    pub async fn request_iq_as(
        self: &Arc<Self>,
        from: String,
        to: Jid,
        mut iq: Element,
        timeout: Duration,
    ) -> Result<Element, IqRequestError> {
        let id = format!("{PENDING_IQ_PREFIX}{}", self.ids.next_id());
        stanza::set_attr(&mut iq, "id", id.clone());
        stanza::set_attr(&mut iq, "from", from);
        stanza::set_attr(&mut iq, "to", to.to_string());
        let (tx, rx) = oneshot::channel();
        self.pending_iqs.insert(id.clone(), (to.clone(), tx));
        self.route(Kind::Iq, to, iq).await;
        let answer = tokio::time::timeout(timeout, rx).await;
        self.pending_iqs.remove(&id);
        match answer {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(IqRequestError::Undelivered),
            Err(_) => Err(IqRequestError::Timeout),
        }
    }

    /// Hands an IQ result/error to whoever is waiting in `request_iq`.
    fn answer_pending_iq(&self, answer: Element) {
        let Err(answer) = self.hand_to_waiter(answer) else {
            return;
        };
        // Another node of the cluster asked (its number is in the id it made), and the
        // answer reached this node's session first: the asker waits for it there.
        let Some(cluster) = self.cluster.get() else {
            return;
        };
        let asker = answer
            .attr("id")
            .and_then(|id| id.strip_prefix(PENDING_IQ_PREFIX))
            .and_then(|n| n.parse::<i64>().ok())
            .map(|n| NodeId(IdGenerator::node_of(n)));
        if let Some(asker) = asker.filter(|n| *n != cluster.node()) {
            cluster.send(asker, PENDING_IQ_TOPIC, crate::xml::to_bytes(&answer));
        }
    }

    /// An answer to this node's `request_iq` that reached another node of the cluster.
    pub fn answer_forwarded_iq(&self, answer: Element) {
        let _ = self.hand_to_waiter(answer);
    }

    /// The answer back when nobody here waits for it from its sender.
    fn hand_to_waiter(&self, answer: Element) -> Result<(), Element> {
        let Some(id) = answer.attr("id") else {
            return Err(answer);
        };
        let from = answer.attr("from").and_then(|f| Jid::new(f).ok());
        let expected = self
            .pending_iqs
            .get(id)
            .is_some_and(|entry| Some(&entry.0) == from.as_ref());
        if !expected {
            return Err(answer);
        }
        if let Some((_, (_, waiter))) = self.pending_iqs.remove(id) {
            let _ = waiter.send(answer);
        }
        Ok(())
    }

    /// Grants `jid` as a new resource under `limits.max_resources_per_account`; hold the
    /// reservation until `bind` has registered the session. Binding a resource that is bound
    /// already replaces that session (RFC 6120 §7.7.2.2), so it is granted without counting;
    /// XEP-0198 resumption takes over a session without binding and never asks.
    pub fn reserve_resource(&self, jid: &FullJid) -> Result<Reservation, TooManyResources> {
        let max = self
            .config
            .account_limits(jid.domain().as_str())
            .max_resources_per_account;
        if max == 0 || self.directory.locate(jid).is_bound() {
            return Ok(Reservation::uncounted());
        }
        let user = jid.to_bare();
        self.pending_resources
            .reserve(&user, max, || self.directory.count(&user))
    }

    /// Registers a bound resource. A session already bound to the same full JID is told to
    /// end with `<conflict/>` (RFC 6120 §7.7.2.2, "override the existing session").
    pub fn bind(&self, jid: FullJid, tx: QueueSender<Outbound>, stalled: Arc<Notify>) -> u64 {
        let (seq, replaced) = self.directory.bind(jid, tx, stalled);
        if let Some(old) = replaced {
            let _ = old.try_send(Outbound::Replaced);
        }
        seq
    }

    /// Removes a session and runs the session-end hooks (presence unavailable, etc.).
    pub async fn unbind(self: &Arc<Self>, id: u64, jid: &FullJid, why: SessionEnd) {
        if let Some(last) = self.directory.unbind(jid, id) {
            for hook in self.registry.session_hooks.iter() {
                hook.ended(self, jid, last.is_available(), why).await;
            }
        }
    }

    /// The connection to the other server `domain` was lost abnormally (see
    /// `RemoteDomainHook`): each module forgets or ends what that server's users had here.
    /// Nothing runs once shutdown has begun: the loss is then our own doing.
    pub async fn remote_domain_lost(self: &Arc<Self>, domain: &str) {
        if self.shutdown.has_begun() {
            return;
        }
        for hook in self.registry.remote_domain_hooks.iter() {
            hook.lost(self, domain).await;
        }
    }

    /// Records a session's presence and runs `became_available` hooks when it becomes
    /// available with a non-negative priority (when XEP-0160 says offline messages flow).
    /// Returns the previous availability (`None` if the session is not bound).
    pub async fn set_availability(
        self: &Arc<Self>,
        jid: &FullJid,
        availability: Availability,
    ) -> Option<Availability> {
        let previous = self.directory.set_availability(jid, availability);
        // Also when a negative priority turns non-negative: messages to the bare JID went to
        // offline storage meanwhile, and now this session can take them.
        let was_reachable = matches!(previous, Some(Availability::Available(p)) if p >= 0);
        let reachable = matches!(availability, Availability::Available(p) if p >= 0);
        if previous.is_some() && !was_reachable && reachable {
            for hook in self.registry.session_hooks.iter() {
                hook.became_available(self, jid).await;
            }
        }
        previous
    }

    /// The user's sessions that have sent available presence.
    pub fn available_resources(&self, user: &BareJid) -> Vec<(FullJid, i8)> {
        let mut found = Vec::new();
        self.directory.resources(user, &mut |resource| {
            if let Availability::Available(priority) = resource.availability {
                found.push((resource.jid.clone(), priority));
            }
        });
        found
    }

    pub fn is_bound(&self, jid: &FullJid) -> bool {
        self.directory.locate(jid).is_bound()
    }

    /// Sessions bound on this node.
    pub fn online_session_count(&self) -> usize {
        self.directory.local_count()
    }

    /// Routes a stanza a local client sent; `from` is already stamped with its full JID.
    pub async fn route_from_client(self: &Arc<Self>, from: &FullJid, mut stanza: Element) {
        let Some(kind) = Kind::of(&stanza) else {
            return;
        };
        // Backpressure from a cluster link that falls behind: the client waits, its stanzas
        // are not dropped.
        if let Some(link) = self.cluster().filter(|link| link.is_congested()) {
            link.room().await;
        }
        let _timer = self.metrics.stanza_routed(kind);
        let to = match stanza.attr("to").map(|to| (to, address::parse(to))) {
            None => None,
            Some((written, Ok(to))) => {
                // Recipients see the address they are known by (no trailing dot, prepared).
                if to.as_str() != written {
                    stanza::set_attr(&mut stanza, "to", to.to_string());
                }
                Some(to)
            }
            Some((_, Err(e))) => {
                debug!(error = %e, "malformed 'to'");
                let error = StanzaError::jid_malformed().with_text(e.to_string());
                // Answered from the server, not from the malformed address: a client whose
                // JID parser refuses it would drop the error and never learn what failed.
                stanza::remove_attr(&mut stanza, "to");
                // An IQ result is not answered either: its sender waits for nothing.
                let result = kind == Kind::Iq && stanza::stanza_type(&stanza) == "result";
                if !result {
                    self.bounce(&stanza, error);
                }
                return;
            }
        };
        if let Err(malformed) = checks::check(kind, &mut stanza) {
            debug!(error = %malformed, "malformed stanza");
            // Without a `to` the stanza was for the account itself (RFC 6120 §10.3.3).
            let account = from.to_bare().to_string();
            self.bounce_from(&stanza, malformed.stanza_error(), &account);
            return;
        }
        match (kind, to) {
            (Kind::Presence, None) => {
                // The presence module runs the observers around what it broadcasts.
                if let Some(handler) = &self.registry.presence {
                    handler.broadcast(self, from, stanza).await;
                }
            }
            (Kind::Presence, Some(to)) => match &self.registry.presence {
                Some(handler) => handler.outbound(self, from, to, stanza).await,
                None => self.route(kind, to, stanza).await,
            },
            (Kind::Iq, None) => {
                let account = from.to_bare();
                self.handle_iq(stanza, Jid::from(from.clone()), Some(account), true)
                    .await;
            }
            (Kind::Message, to) => {
                let to = to.unwrap_or_else(|| Jid::from(from.to_bare()));
                self.message_from_client(from, to, stanza).await;
            }
            (_, Some(to)) => {
                self.route_from_user(&Jid::from(from.clone()), to, stanza)
                    .await
            }
        }
    }

    /// Routes a stanza a local user sends (or the server sends on the user's behalf, such as
    /// presence broadcast to contacts) after the user's outbound stanza filters.
    pub async fn route_from_user(self: &Arc<Self>, from: &Jid, to: Jid, stanza: Element) {
        let Some(kind) = Kind::of(&stanza) else {
            return;
        };
        if self.outbound_allowed(kind, from, &to, &stanza).await {
            self.route(kind, to, stanza).await;
        }
    }

    /// A message a client sent: the sender's filters, then the message hooks (archive,
    /// carbons), then routing.
    async fn message_from_client(self: &Arc<Self>, from: &FullJid, to: Jid, mut stanza: Element) {
        let sender = Jid::from(from.clone());
        if !self
            .outbound_allowed(Kind::Message, &sender, &to, &stanza)
            .await
        {
            return;
        }
        if self.has_message_hooks(&stanza) {
            for hook in self.registry.message_hooks.iter() {
                if let Err(error) = hook.outgoing(self, from, &to, &mut stanza).await {
                    self.bounce(&stanza, error);
                    return;
                }
            }
        }
        self.route(Kind::Message, to, stanza).await;
    }

    /// Message hooks see one-to-one messages only (see `MessageHook`).
    fn has_message_hooks(&self, message: &Element) -> bool {
        !self.registry.message_hooks.is_empty()
            && matches!(stanza::stanza_type(message), "chat" | "normal")
    }

    /// Runs the sender's outbound stanza filters; false means the stanza was consumed.
    async fn outbound_allowed(
        self: &Arc<Self>,
        kind: Kind,
        from: &Jid,
        to: &Jid,
        stanza: &Element,
    ) -> bool {
        for filter in self.registry.filters.iter() {
            match filter.outbound(self, from, to, stanza).await {
                Verdict::Pass => {}
                Verdict::Drop => return false,
                Verdict::Reject(error) => {
                    if kind != Kind::Presence {
                        self.bounce(stanza, error);
                    }
                    return false;
                }
            }
        }
        true
    }

    /// Runs the recipient's inbound stanza filters; false means the stanza was consumed.
    async fn inbound_allowed(
        self: &Arc<Self>,
        kind: Kind,
        user: &BareJid,
        stanza: &Element,
    ) -> bool {
        if self.registry.filters.is_empty() {
            return true;
        }
        let Some(from) = stanza.attr("from").and_then(|f| Jid::new(f).ok()) else {
            return true;
        };
        for filter in self.registry.filters.iter() {
            match filter.inbound(self, user, &from, stanza).await {
                Verdict::Pass => {}
                Verdict::Drop => return false,
                Verdict::Reject(error) => {
                    if kind != Kind::Presence {
                        self.bounce(stanza, error);
                    }
                    return false;
                }
            }
        }
        true
    }

    /// Routes a stanza from any source (a client, a module, the server itself) to `to`.
    pub async fn route(self: &Arc<Self>, kind: Kind, to: Jid, stanza: Element) {
        match self.destination(&to) {
            Destination::Service(service) => {
                service.clone().handle(self, kind, to, stanza).await;
            }
            Destination::Remote(egress) => {
                egress.clone().handle(self, kind, to, stanza).await;
            }
            // Nothing reaches other domains: say so instead of dropping (RFC 6120 §8.3.3.15).
            Destination::Unreachable => {
                if kind != Kind::Presence {
                    self.bounce(&stanza, StanzaError::remote_server_not_found());
                }
            }
            Destination::Server => self.route_to_server(kind, stanza).await,
            Destination::Nothing => {
                if kind != Kind::Presence {
                    self.bounce(&stanza, StanzaError::service_unavailable());
                }
            }
            Destination::Account => {
                let resource = to.resource().map(|r| r.as_str().to_owned());
                let bare = to.to_bare();
                self.route_to_local_user(kind, &bare, resource.as_deref(), stanza)
                    .await;
            }
        }
    }

    /// Whether `domain` (prepared) is served here: a hosted domain or a service of one.
    pub fn serves_domain(&self, domain: &str) -> bool {
        self.hosted.contains(domain) || self.registry.components.contains_key(domain)
    }

    /// Where `to` is, as far as the domain says: the accounts' resources are the directory's.
    pub fn destination(&self, to: &Jid) -> Destination<'_> {
        Destination::of(
            to,
            &self.hosted,
            &self.registry.components,
            self.registry.remote_domains.as_ref(),
        )
    }

    /// A message the router queued to the local session `ended` (its id), which ended without
    /// delivering it (XEP-0198 §5, RFC 6120 §10). The message hooks ran when it was first
    /// routed (it is archived, copies went out), so they do not run again; and a session that
    /// already holds a copy does not get another:
    /// - no other resource is available: offline storage, as RFC 6121 §8.5.3.2.1 says for a
    ///   full JID that is gone;
    /// - sent to the bare JID: the message was routed after `ended` was bound, so every
    ///   session bound before it and available had its own copy; sessions bound later (a
    ///   replacement under the same resource, a new device) get it now;
    /// - sent to the full JID: the sessions bound before `ended` that a hook copied it to (a
    ///   carbon) are skipped; every other available session gets it.
    ///
    /// A session bound later that happened to be there when the message was routed gets it
    /// twice: a duplicate is the price of never losing a message (XEP-0198 delivers at least
    /// once, too).
    pub async fn redeliver(self: &Arc<Self>, to: Jid, stanza: Element, ended: u64) {
        if !self.is_hosted(to.domain().as_str()) || to.node().is_none() {
            self.route(Kind::Message, to, stanza).await;
            return;
        }
        let user = to.to_bare();
        let mut available: Vec<(FullJid, u64)> = Vec::new();
        self.directory.resources(&user, &mut |resource| {
            if resource.takes_bare_messages() {
                available.push((resource.jid.clone(), resource.seq));
            }
        });
        if available.is_empty() || self.shutdown.has_begun() {
            self.deliver_message(&user, None, stanza).await;
            return;
        }
        let copied: Vec<FullJid> = match FullJid::try_from(to) {
            Ok(full) => self
                .registry
                .message_hooks
                .iter()
                .flat_map(|hook| hook.copies_elsewhere(self, &full, &stanza))
                .collect(),
            // Every session available at the time took the bare-JID message itself.
            Err(_) => available.iter().map(|(jid, _)| jid.clone()).collect(),
        };
        let targets = available
            .iter()
            .filter(|(jid, id)| *id > ended || !copied.contains(jid));
        for (target, _) in targets {
            if let Err(back) = self.directory.deliver(target, stanza.clone()) {
                self.undeliverable_after_queue_full(Kind::Message, &user, back)
                    .await;
            }
        }
    }

    /// `route` for a groupchat message many local sessions receive (a room's message to its
    /// occupants): the recipient's inbound filters apply as in `route`, but the stanza is
    /// queued shared, not copied per recipient. Anything other than a plain delivery to a
    /// bound local session takes `route` with a copy of its own.
    pub async fn route_shared(self: &Arc<Self>, to: &FullJid, stanza: &Arc<SharedStanza>) {
        let groupchat = stanza.element.name() == "message"
            && stanza::stanza_type(&stanza.element) == "groupchat";
        if groupchat && self.is_hosted(to.domain().as_str()) {
            if !self
                .inbound_allowed(Kind::Message, &to.to_bare(), &stanza.element)
                .await
            {
                return;
            }
            if self.directory.deliver_shared(to, stanza) {
                return;
            }
        }
        let copy = stanza.element_to(to);
        self.route(Kind::Message, Jid::from(to.clone()), copy).await;
    }

    async fn route_to_server(self: &Arc<Self>, kind: Kind, stanza: Element) {
        match kind {
            Kind::Iq => {
                if matches!(stanza::stanza_type(&stanza), "result" | "error") {
                    self.answer_pending_iq(stanza);
                    return;
                }
                let from = stanza.attr("from").and_then(|f| Jid::new(f).ok());
                if let Some(from) = from {
                    self.handle_iq(stanza, from, None, false).await;
                }
            }
            // The server itself is not a chat partner; presence to it carries no request.
            Kind::Message => {
                if matches!(stanza::stanza_type(&stanza), "chat" | "normal") {
                    self.bounce(&stanza, StanzaError::service_unavailable());
                }
            }
            Kind::Presence => {}
        }
    }

    async fn route_to_local_user(
        self: &Arc<Self>,
        kind: Kind,
        user: &BareJid,
        resource: Option<&str>,
        stanza: Element,
    ) {
        if !self.inbound_allowed(kind, user, &stanza).await {
            return;
        }
        match kind {
            Kind::Presence => match &self.registry.presence {
                Some(handler) => handler.inbound(self, user, resource, stanza).await,
                None => self.presence_to_resources(user, resource, stanza),
            },
            Kind::Message => self.message_to_local_user(user, resource, stanza).await,
            Kind::Iq => {
                if let Some(resource) = resource {
                    let full = user.with_resource_str(resource).ok();
                    if let Some(full) = full.filter(|f| self.directory.locate(f).is_bound()) {
                        if let Err(stanza) = self.directory.deliver(&full, stanza) {
                            self.undeliverable_after_queue_full(kind, user, stanza)
                                .await;
                        }
                    } else if matches!(stanza::stanza_type(&stanza), "get" | "set") {
                        // RFC 6121 §8.5.3.2.3: no such resource.
                        self.bounce(&stanza, StanzaError::service_unavailable());
                    }
                    return;
                }
                if matches!(stanza::stanza_type(&stanza), "result" | "error") {
                    // An answer to a request the server sent on the account's behalf.
                    self.answer_pending_iq(stanza);
                    return;
                }
                let from = stanza.attr("from").and_then(|f| Jid::new(f).ok());
                if let Some(from) = from {
                    self.handle_iq(stanza, from, Some(user.clone()), false)
                        .await;
                }
            }
        }
    }

    /// A message for a local account, wrapped in the message hooks: `incoming` may amend it
    /// before delivery, `delivered` learns which sessions took it.
    async fn message_to_local_user(
        self: &Arc<Self>,
        user: &BareJid,
        resource: Option<&str>,
        mut stanza: Element,
    ) {
        if !self.has_message_hooks(&stanza) {
            self.deliver_message(user, resource, stanza).await;
            return;
        }
        for hook in self.registry.message_hooks.iter() {
            if let Err(error) = hook.incoming(self, user, &mut stanza).await {
                self.bounce(&stanza, error);
                return;
            }
        }
        let copy = stanza.clone();
        let sessions = self.deliver_message(user, resource, stanza).await;
        for hook in self.registry.message_hooks.iter() {
            hook.delivered(self, user, &sessions, &copy).await;
        }
    }

    /// RFC 6121 §8.5.2 and §8.5.3 for messages; returns the sessions it was queued to.
    async fn deliver_message(
        self: &Arc<Self>,
        user: &BareJid,
        resource: Option<&str>,
        stanza: Element,
    ) -> Vec<FullJid> {
        if self.shutdown.has_begun() {
            // No session will write anything any more: store instead (after what the ending
            // sessions still hold for this user, see `shutdown`).
            if let Some(stanza) = self.shutdown.hold(user, stanza) {
                self.store_offline(user, stanza).await;
            }
            return Vec::new();
        }
        let Some(resource) = resource else {
            return self.message_to_bare(user, stanza).await;
        };
        let full = user.with_resource_str(resource).ok();
        if let Some(full) = full.filter(|f| self.directory.locate(f).is_bound()) {
            return match self.directory.deliver(&full, stanza) {
                Ok(()) => vec![full],
                Err(stanza) => {
                    self.undeliverable_after_queue_full(Kind::Message, user, stanza)
                        .await;
                    Vec::new()
                }
            };
        }
        // RFC 6121 §8.5.3.2.1: no such resource.
        match stanza::stanza_type(&stanza) {
            "chat" | "normal" => self.message_to_bare(user, stanza).await,
            "groupchat" => {
                self.bounce(&stanza, StanzaError::service_unavailable());
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// RFC 6121 §8.5.2.1.1 (and §8.5.1 when the account does not exist); returns the
    /// sessions the message was queued to.
    async fn message_to_bare(self: &Arc<Self>, user: &BareJid, stanza: Element) -> Vec<FullJid> {
        let message_type = stanza::stanza_type(&stanza).to_owned();
        if message_type == "groupchat" {
            self.bounce(&stanza, StanzaError::service_unavailable());
            return Vec::new();
        }
        let mut targets: Vec<FullJid> = Vec::new();
        self.directory.resources(user, &mut |resource| {
            if resource.takes_bare_messages() {
                targets.push(resource.jid.clone());
            }
        });
        let mut undelivered = None;
        let mut delivered = Vec::with_capacity(targets.len());
        for target in targets {
            match self.directory.deliver(&target, stanza.clone()) {
                Ok(()) => delivered.push(target),
                Err(back) => undelivered = Some(back),
            }
        }
        if !delivered.is_empty() {
            return delivered;
        }
        let stanza = undelivered.unwrap_or(stanza);
        match message_type.as_str() {
            "chat" | "normal" => self.store_or_reject(user, stanza).await,
            // Headline and error messages are not worth keeping (RFC 6121 §8.5.2.1.1).
            _ => {}
        }
        Vec::new()
    }

    /// Without a presence module: availability presence is delivered, nothing else.
    fn presence_to_resources(&self, user: &BareJid, resource: Option<&str>, stanza: Element) {
        if matches!(stanza::stanza_type(&stanza), "available" | "unavailable") {
            self.deliver_presence(user, resource, stanza);
        }
    }

    /// RFC 6121 §8.5 for presence to a local user: to the addressed resource if it is bound
    /// (dropped otherwise, §8.5.3.2.2), or to every available resource for the bare JID.
    pub fn deliver_presence(&self, user: &BareJid, resource: Option<&str>, stanza: Element) {
        match resource {
            Some(resource) => {
                if let Ok(full) = user.with_resource_str(resource) {
                    let _ = self.directory.deliver(&full, stanza);
                }
            }
            None => {
                for (target, _) in self.available_resources(user) {
                    let _ = self.directory.deliver(&target, stanza.clone());
                }
            }
        }
    }

    async fn store_or_reject(self: &Arc<Self>, user: &BareJid, stanza: Element) {
        if user.node().is_none() {
            return;
        }
        match self.storage.accounts.account_exists(user.as_str()).await {
            Ok(true) => {}
            Ok(false) => {
                self.bounce(&stanza, StanzaError::service_unavailable());
                return;
            }
            Err(e) => {
                warn!(error = %e, "account lookup failed");
                self.bounce(&stanza, StanzaError::storage_failure());
                return;
            }
        }
        let result = match &self.registry.undeliverable {
            Some(handler) => handler.store(self, user, &stanza).await,
            None => Err(StanzaError::service_unavailable()),
        };
        if let Err(error) = result {
            self.bounce(&stanza, error);
        }
    }

    /// A live session's queue was full (it was disconnected for it): chat and normal messages
    /// still reach the user through offline storage instead of vanishing.
    async fn undeliverable_after_queue_full(
        self: &Arc<Self>,
        kind: Kind,
        user: &BareJid,
        stanza: Element,
    ) {
        self.metrics.queue_stall();
        if kind == Kind::Message && matches!(stanza::stanza_type(&stanza), "chat" | "normal") {
            self.store_or_reject(user, stanza).await;
        } else if kind == Kind::Iq && matches!(stanza::stanza_type(&stanza), "get" | "set") {
            self.bounce(&stanza, StanzaError::service_unavailable());
        }
    }

    /// `implicit_to`: the client sent no `to`, which RFC 6120 §10.3.3 reads as its own bare
    /// JID; the reply then comes from that bare JID, not from the domain.
    async fn handle_iq(
        self: &Arc<Self>,
        stanza: Element,
        from: Jid,
        account: Option<BareJid>,
        implicit_to: bool,
    ) {
        // Responses addressed to the server or an account: nobody is waiting for them.
        let Some(iq_type) = IqType::of(&stanza) else {
            return;
        };
        let reply_from = match (&account, implicit_to) {
            (Some(account), true) => account.to_string(),
            _ => self.hosted_domain_of(stanza.attr("to").or(Some(from.as_str()))),
        };
        let Some(payload) = stanza::iq_payload(&stanza) else {
            self.bounce_from(&stanza, StanzaError::bad_request(), &reply_from);
            return;
        };
        let key = (payload.ns(), payload.name().to_owned());
        let handlers = match &account {
            Some(_) => self.registry.account_iq.get(&key).or_else(|| {
                // Pings and disco without `to` are meant for the server.
                self.registry.server_iq.get(&key).filter(|_| implicit_to)
            }),
            None => self.registry.server_iq.get(&key),
        };
        let Some(handler) = handlers.and_then(|h| h.for_type(iq_type)) else {
            self.bounce_from(&stanza, StanzaError::service_unavailable(), &reply_from);
            return;
        };
        let request = IqRequest {
            stanza: stanza.clone(),
            from,
            account,
            iq_type,
        };
        let answer = match handler {
            registry::IqRoute::Handler(handler) => match handler.authorize(&request) {
                Ok(()) => handler.clone().handle_iq(self, request).await,
                Err(refused) => Err(refused),
            },
            // A payload this server knows, in the other type: the handler that has it says
            // what to answer, after the same access check as a request of its own type.
            registry::IqRoute::OtherType(other) => Err(other
                .authorize(&request)
                .err()
                .unwrap_or_else(|| other.unhandled_type())),
        };
        let reply = match answer {
            Ok(payload) => stanza::iq_result(&stanza, payload, &reply_from),
            Err(error) => stanza::error_reply(&stanza, &error, &reply_from),
        };
        self.send_iq_answer(reply).await;
    }

    /// An answer to an IQ that may have come from a component (a MUC room passing a vCard
    /// request on, say) or from another domain: local sessions get it directly, the others
    /// through `route`.
    async fn send_iq_answer(self: &Arc<Self>, reply: Element) {
        let Some(to) = reply.attr("to").and_then(|t| Jid::new(t).ok()) else {
            return;
        };
        if matches!(
            self.destination(&to),
            Destination::Service(_) | Destination::Remote(_)
        ) {
            // Boxed: routing can lead back here (a component asking a user's account).
            Box::pin(self.route(Kind::Iq, to, reply)).await;
        } else {
            self.send_reply(reply);
        }
    }

    /// Sends the error reply for `original` back to its sender. Never answers an error with an
    /// error (RFC 6120 §8.3.1).
    pub fn bounce(&self, original: &Element, error: StanzaError) {
        let fallback = self.hosted_domain_of(original.attr("from"));
        self.bounce_from(original, error, &fallback);
    }

    /// `bounce`, naming who answers when the original had no `to`.
    fn bounce_from(&self, original: &Element, error: StanzaError, fallback_from: &str) {
        if stanza::is_error(original) {
            return;
        }
        let reply = stanza::error_reply(original, &error, fallback_from);
        self.send_reply(reply);
    }

    /// Delivers a server-generated stanza to a local full JID, dropping it if that session is
    /// gone: replies are never re-routed or bounced, so they cannot loop. A reply to another
    /// domain (an error for a remote sender) leaves through the egress, which never bounces
    /// an error either.
    pub fn send_reply(&self, reply: Element) {
        let Some(to) = reply.attr("to").and_then(|t| Jid::new(t).ok()) else {
            return;
        };
        let egress = match self.destination(&to) {
            Destination::Remote(egress) => Some(egress),
            Destination::Service(service) if service.takes_replies() => Some(service),
            _ => None,
        };
        if let Some(egress) = egress {
            if let (Some(router), Some(kind)) = (self.this.upgrade(), Kind::of(&reply)) {
                let egress = egress.clone();
                tokio::spawn(async move { egress.handle(&router, kind, to, reply).await });
            }
            return;
        }
        let Ok(to) = FullJid::try_from(to) else {
            return;
        };
        let _ = self.directory.deliver(&to, reply);
    }

    /// Delivers to one bound session; hands the stanza back if it could not be queued.
    pub fn deliver_to_session(&self, to: &FullJid, stanza: Element) -> Result<(), Element> {
        self.directory.deliver(to, stanza)
    }

    /// Begins shutdown: every session is told to end with `<system-shutdown/>`, and messages
    /// for local users go to offline storage instead of to sessions from now on.
    pub fn shutdown_all(&self) {
        self.shutdown.begin();
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.has_begun()
    }

    /// What a session or detached-session task waits on besides its own work.
    pub fn shutdown_signal(&self) -> ShutdownSignal {
        self.shutdown.signal()
    }

    /// Registers a task that owns a session's undelivered stanzas until the guard drops.
    pub fn track_task(&self) -> TaskGuard {
        self.shutdown.track()
    }

    /// Returns once every tracked task has ended (and stored what it held).
    pub async fn tasks_done(&self) {
        self.shutdown.tasks_done().await;
    }

    /// Stores the messages routed during the shutdown window, after the sessions' own
    /// leftovers (which are older); anything routed later is stored at once.
    pub async fn store_late_messages(self: &Arc<Self>) {
        for (user, message) in self.shutdown.take_late() {
            self.store_offline(&user, message).await;
        }
    }

    /// Lets modules finish their own work (the archive writer's queue) before storage closes.
    pub async fn run_shutdown_hooks(self: &Arc<Self>) {
        for hook in self.registry.shutdown_hooks.iter() {
            hook.shutdown(self).await;
        }
    }

    /// A message that no session will deliver: chat and normal go to offline storage (or
    /// bounce when they cannot), the rest is not worth keeping (RFC 6121 §8.5.2.1.1).
    /// Message hooks do not run again: the message already went through them when it was
    /// first routed (archived, copied).
    pub async fn store_offline(self: &Arc<Self>, user: &BareJid, message: Element) {
        if matches!(stanza::stanza_type(&message), "chat" | "normal") {
            self.store_or_reject(user, message).await;
        }
    }
}
