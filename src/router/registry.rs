//! What modules register with the core: IQ handlers by payload namespace, and hooks on the
//! moments the router does not own (presence broadcast, a message nobody online can take, a
//! session becoming available or going away). Prosody's `module:hook` and ejabberd's
//! `gen_mod` + `ejabberd_hooks` are the models.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use jid::{BareJid, FullJid, Jid};
use minidom::Element;

use tracing::warn;

use super::directory::{Component, DirectoryFactory};
use super::discovery::{DiscoTarget, Discovery, Identity, ItemSource, NodeHandler};
use super::flags::{FlagNames, SessionFlag};
use super::priority::{Ordered, Priority};
use super::sessions::SessionEnd;
use super::Router;
use crate::stanza::StanzaError;

/// The two IQ types that carry a request (RFC 6120 §8.2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IqType {
    Get,
    Set,
}

impl IqType {
    /// `None` for `result`, `error` and anything malformed.
    pub fn of(stanza: &Element) -> Option<IqType> {
        match crate::stanza::stanza_type(stanza) {
            "get" => Some(IqType::Get),
            "set" => Some(IqType::Set),
            _ => None,
        }
    }
}

/// An IQ get/set addressed to the server or, on the user's behalf, to an account's bare JID.
pub struct IqRequest {
    /// The full stanza, `from` already stamped by the server.
    pub stanza: Element,
    pub from: Jid,
    /// `None` when the IQ was addressed to the server domain itself.
    pub account: Option<BareJid>,
    /// Always a type the handler was registered for.
    pub iq_type: IqType,
}

impl IqRequest {
    /// The one payload child (RFC 6120 §8.2.3); checked before a handler is called.
    pub fn payload(&self) -> &Element {
        crate::stanza::iq_payload(&self.stanza).unwrap_or(&self.stanza)
    }

    /// The sending session, when it belongs to the addressed account itself: what settings
    /// that only the account may change (carbons, push registrations) require.
    pub fn own_session(&self) -> Option<&FullJid> {
        let full = self.from.try_as_full().ok()?;
        (self.account.as_ref() == Some(&full.to_bare())).then_some(full)
    }
}

pub type IqResult = Result<Option<Element>, StanzaError>;

/// Handles IQs of the (type, payload) pairs it was registered for. For a payload it knows
/// sent with the other type, the router answers with `authorize` and then `unhandled_type`
/// of the handler it has for that payload, so the handler never looks at the type itself.
#[async_trait]
pub trait IqHandler: Send + Sync {
    /// Who may send this payload at all, checked before the type: someone who may not ask
    /// gets the same answer whatever type they used.
    fn authorize(&self, _request: &IqRequest) -> Result<(), StanzaError> {
        Ok(())
    }

    /// The answer to this payload in an IQ type no handler was registered for. `bad-request`
    /// unless the protocol says otherwise (XEP-0030 and others use `not-allowed`).
    fn unhandled_type(&self) -> StanzaError {
        StanzaError::bad_request()
    }

    /// Called only after `authorize` passed.
    async fn handle_iq(&self, router: &Arc<Router>, request: IqRequest) -> IqResult;
}

/// A session's presence-related moments.
#[async_trait]
pub trait SessionHook: Send + Sync {
    /// The session sent its first available presence with a non-negative priority.
    async fn became_available(&self, _router: &Arc<Router>, _session: &FullJid) {}
    /// The session ended (cleanly or not, `why`) after having been bound.
    async fn ended(
        &self,
        _router: &Arc<Router>,
        _session: &FullJid,
        _was_available: bool,
        _why: SessionEnd,
    ) {
    }
}

/// Work a module must finish before the process exits, run once every session has ended
/// (e.g. committing queued writes).
#[async_trait]
pub trait ShutdownHook: Send + Sync {
    async fn shutdown(&self, router: &Arc<Router>);
}

/// Presence handling (RFC 6121 §3 and §4): one module owns it, the router only hands over.
#[async_trait]
pub trait PresenceHandler: Send + Sync {
    /// Presence a client sent without `to`: the broadcast RFC 6121 §4.2–4.5 describes.
    async fn broadcast(&self, router: &Arc<Router>, from: &FullJid, presence: Element);
    /// Presence a client sent with a `to`: directed presence (§4.6) or subscription
    /// management (§3). `from` is already stamped.
    async fn outbound(&self, router: &Arc<Router>, from: &FullJid, to: Jid, presence: Element) {
        router
            .route_from_user(&Jid::from(from.clone()), to, presence)
            .await;
    }
    /// Presence from anywhere addressed to a local account (`resource` set for a full JID),
    /// after the recipient's stanza filters let it through.
    async fn inbound(
        &self,
        router: &Arc<Router>,
        to: &BareJid,
        resource: Option<&str>,
        presence: Element,
    );
}

/// Watches (and may extend) the presence a local session broadcasts.
#[async_trait]
pub trait PresenceObserver: Send + Sync {
    /// Called before a session's broadcast presence leaves, so a module can add a child such
    /// as the XEP-0153 photo hash.
    async fn decorate(&self, _router: &Arc<Router>, _from: &FullJid, _presence: &mut Element) {}
    /// Called after a session's broadcast presence (available or unavailable) went out.
    async fn broadcasted(&self, _router: &Arc<Router>, _from: &FullJid, _presence: &Element) {}
    /// Called when available or unavailable presence from a session of another server
    /// (`from`) reached the local account `user`: what `broadcasted` tells of local sessions,
    /// for the remote contacts a module serves (PEP learns their caps from it).
    async fn received(
        &self,
        _router: &Arc<Router>,
        _user: &BareJid,
        _from: &FullJid,
        _presence: &Element,
    ) {
    }
    /// `contact` may now see `user`'s presence (RFC 6121 §3.1.5), e.g. to send it the user's
    /// last PEP items (XEP-0163 §6.1).
    async fn subscription_granted(
        &self,
        _router: &Arc<Router>,
        _user: &BareJid,
        _contact: &BareJid,
    ) {
    }
}

/// Told when this server lost its connection to another domain abnormally: the s2s stream or
/// link with it broke, or ended with a stream error (the peer's or ours). Presence and
/// occupancy that server's users had here can no longer be trusted: their sessions may have
/// ended while nothing could tell us (RFC 6121 gives a server that learns a remote session is
/// gone no other way to say so than the unavailable presence it would have sent). Not called
/// for a clean `</stream:stream>` (servers close idle streams routinely and say goodbye for
/// their users first), nor while this server shuts down.
///
/// Federation calls it in a task of its own, off the stream's task; it may be called more than
/// once for one outage (a peer holds a stream in each direction and both break), so an
/// implementation forgets what it acted on and a second call finds nothing left to do.
#[async_trait]
pub trait RemoteDomainHook: Send + Sync {
    /// The connection to `domain` (as it authenticated: `example.org`, or a service of it such
    /// as `conference.example.org`) was lost.
    async fn lost(&self, router: &Arc<Router>, domain: &str);
}

/// What a stanza filter decides.
#[derive(Debug)]
pub enum Verdict {
    Pass,
    /// Silently discard (what XEP-0191 says for presence).
    Drop,
    /// Discard and answer the sender with this error (never for presence or errors).
    Reject(StanzaError),
}

/// A policy applied to stanzas between a local user and another entity, in either direction
/// (XEP-0191 blocking is the model). Called on the routing hot path: implementations answer
/// from memory.
#[async_trait]
pub trait StanzaFilter: Send + Sync {
    /// A stanza a local user (`from`, bare or full) sends towards `to`.
    async fn outbound(
        &self,
        _router: &Arc<Router>,
        _from: &Jid,
        _to: &Jid,
        _stanza: &Element,
    ) -> Verdict {
        Verdict::Pass
    }
    /// A stanza from `from` arriving for the local account `to`.
    async fn inbound(
        &self,
        _router: &Arc<Router>,
        _to: &BareJid,
        _from: &Jid,
        _stanza: &Element,
    ) -> Verdict {
        Verdict::Pass
    }
}

/// A session feature a client may switch on while binding its resource inside SASL2
/// (XEP-0386 Bind2: an `<enable/>`-like child of `<bind/>`, advertised under `<inline/>`).
pub trait InlineFeature: Send + Sync {
    /// Switches the feature on for `session`, which has just been bound, as the feature's own
    /// request would. `request` is the client's element.
    fn enable(&self, router: &Router, session: &FullJid, request: &Element);
}

/// What to do with a chat/normal message to an existing local account with no resource that
/// can take it (RFC 6121 §8.5.2.1.1): store it, or say why not.
#[async_trait]
pub trait UndeliverableMessage: Send + Sync {
    async fn store(
        &self,
        router: &Arc<Router>,
        to: &BareJid,
        message: &Element,
    ) -> Result<(), StanzaError>;
}

/// Watches, and may amend, the one-to-one messages (`chat` and `normal`) a local account sends
/// and receives: archiving (XEP-0313 with XEP-0359 ids), carbons (XEP-0280) and push
/// (XEP-0357) plug in here. Groupchat, headline and error messages never reach these hooks.
/// Called on the delivery path: implementations must not wait on storage (queue the write).
/// An error from `outgoing` or `incoming` refuses the message: it goes no further (later hooks
/// included) and its sender gets the error back, e.g. when the archive cannot take it.
#[async_trait]
pub trait MessageHook: Send + Sync {
    /// A local session sent `message` to `to` and the sender's stanza filters let it pass;
    /// called before it is routed. `from` is the sending session.
    async fn outgoing(
        &self,
        _router: &Arc<Router>,
        _from: &FullJid,
        _to: &Jid,
        _message: &mut Element,
    ) -> Result<(), StanzaError> {
        Ok(())
    }
    /// `message` arrived for the local account `to` (after its inbound filters), before it is
    /// handed to any session or to offline storage.
    async fn incoming(
        &self,
        _router: &Arc<Router>,
        _to: &BareJid,
        _message: &mut Element,
    ) -> Result<(), StanzaError> {
        Ok(())
    }
    /// Where the router put a message for `to`: the sessions it was queued to (empty when
    /// none took it, e.g. it went to offline storage or was bounced).
    async fn delivered(
        &self,
        _router: &Arc<Router>,
        _to: &BareJid,
        _sessions: &[FullJid],
        _message: &Element,
    ) {
    }
    /// Sessions of `to`'s account that already hold a copy of `message` through this hook
    /// (carbons), so that delivering it again when the session it was queued to has ended
    /// (`Router::redeliver`) skips them.
    fn copies_elsewhere(
        &self,
        _router: &Router,
        _to: &FullJid,
        _message: &Element,
    ) -> Vec<FullJid> {
        Vec::new()
    }
}

/// Who handles an IQ: keyed by the payload's (namespace, element name), then by type.
type IqKey = (String, String);

/// Where an IQ for a known payload goes.
pub(super) enum IqRoute<'a> {
    /// Registered for this type.
    Handler(&'a Arc<dyn IqHandler>),
    /// The payload's handler for the other type, which says what to answer instead.
    OtherType(&'a Arc<dyn IqHandler>),
}

/// The handlers of one payload, one per type at most.
#[derive(Default)]
pub(super) struct IqHandlers {
    get: Option<Arc<dyn IqHandler>>,
    set: Option<Arc<dyn IqHandler>>,
}

impl IqHandlers {
    /// Who takes an IQ of `iq_type`; `None` for an entry with no handler at all (never made).
    pub(super) fn for_type(&self, iq_type: IqType) -> Option<IqRoute<'_>> {
        let (wanted, other) = match iq_type {
            IqType::Get => (&self.get, &self.set),
            IqType::Set => (&self.set, &self.get),
        };
        match (wanted, other) {
            (Some(handler), _) => Some(IqRoute::Handler(handler)),
            (None, Some(other)) => Some(IqRoute::OtherType(other)),
            (None, None) => None,
        }
    }

    fn set(&mut self, iq_type: IqType, handler: Arc<dyn IqHandler>) {
        match iq_type {
            IqType::Get => self.get = Some(handler),
            IqType::Set => self.set = Some(handler),
        }
    }
}

#[derive(Default)]
pub struct Registry {
    /// The module whose `register` is running: ties between hooks of one priority are broken
    /// by it, and disco contributions are kept in its order.
    module: &'static str,
    pub(super) server_iq: HashMap<IqKey, IqHandlers>,
    pub(super) account_iq: HashMap<IqKey, IqHandlers>,
    pub(super) session_hooks: Ordered<dyn SessionHook>,
    pub(super) shutdown_hooks: Ordered<dyn ShutdownHook>,
    pub(super) presence: Option<Arc<dyn PresenceHandler>>,
    pub(super) presence_observers: Ordered<dyn PresenceObserver>,
    pub(super) remote_domain_hooks: Ordered<dyn RemoteDomainHook>,
    pub(super) filters: Ordered<dyn StanzaFilter>,
    pub(super) message_hooks: Ordered<dyn MessageHook>,
    pub(super) components: HashMap<String, Arc<dyn Component>>,
    pub(super) remote_domains: Option<Arc<dyn Component>>,
    pub(super) undeliverable: Option<Arc<dyn UndeliverableMessage>>,
    pub(super) discovery: Discovery,
    pub(super) flags: FlagNames,
    pub(super) directory: Option<DirectoryFactory>,
    pub(super) cluster_topics: HashMap<&'static str, Arc<dyn super::ClusterTopic>>,
    pub(super) node_gone_hooks: Ordered<dyn super::NodeGoneHook>,
    /// Bind2 inline features by namespace, in registration order (the order advertised).
    pub(super) inline_features: Vec<(&'static str, Arc<dyn InlineFeature>)>,
    /// Shared objects modules offer one another (a command registry, say), one per type: the
    /// router keeps them without knowing what they are.
    pub(super) services: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl Registry {
    /// Names the module whose registrations follow.
    pub(super) fn enter_module(&mut self, module: &'static str) {
        self.module = module;
    }

    /// Handles `iq_type` IQs to the server's domain with a `<name xmlns=ns>` payload.
    pub fn server_iq(
        &mut self,
        iq_type: IqType,
        ns: &str,
        name: &str,
        handler: Arc<dyn IqHandler>,
    ) {
        self.server_iq
            .entry((ns.to_string(), name.to_string()))
            .or_default()
            .set(iq_type, handler);
    }

    /// Handles `iq_type` IQs to a local account's bare JID (or with no `to`) on the user's
    /// behalf.
    pub fn account_iq(
        &mut self,
        iq_type: IqType,
        ns: &str,
        name: &str,
        handler: Arc<dyn IqHandler>,
    ) {
        self.account_iq
            .entry((ns.to_string(), name.to_string()))
            .or_default()
            .set(iq_type, handler);
    }

    pub fn session_hook(&mut self, priority: Priority, hook: Arc<dyn SessionHook>) {
        self.session_hooks.insert(priority, self.module, hook);
    }

    pub fn shutdown_hook(&mut self, priority: Priority, hook: Arc<dyn ShutdownHook>) {
        self.shutdown_hooks.insert(priority, self.module, hook);
    }

    pub fn presence_handler(&mut self, handler: Arc<dyn PresenceHandler>) {
        self.presence = Some(handler);
    }

    pub fn presence_observer(&mut self, priority: Priority, observer: Arc<dyn PresenceObserver>) {
        self.presence_observers
            .insert(priority, self.module, observer);
    }

    /// See `RemoteDomainHook`: what a module does when the connection to another server
    /// was lost.
    pub fn remote_domain_hook(&mut self, priority: Priority, hook: Arc<dyn RemoteDomainHook>) {
        self.remote_domain_hooks.insert(priority, self.module, hook);
    }

    pub fn stanza_filter(&mut self, priority: Priority, filter: Arc<dyn StanzaFilter>) {
        self.filters.insert(priority, self.module, filter);
    }

    /// See `Priority` for why the archive comes before carbons.
    pub fn message_hook(&mut self, priority: Priority, hook: Arc<dyn MessageHook>) {
        self.message_hooks.insert(priority, self.module, hook);
    }

    /// Serves `domain` (already normalised, e.g. `conference.example.org`) in-process.
    pub fn component(&mut self, domain: String, component: Arc<dyn Component>) {
        self.components.insert(domain, component);
    }

    /// Takes the stanzas for every other domain: one neither hosted here nor served by a
    /// component. Federation's outbound side plugs in here; without it they are bounced with
    /// `remote-server-not-found`. Answers and stanzas from those domains come back in through
    /// `Router::route`.
    pub fn remote_domains(&mut self, egress: Arc<dyn Component>) {
        self.remote_domains = Some(egress);
    }

    /// Declares a per-session flag the module owns (carbons enabled, roster fetched): the
    /// router stores it with each session and answers which sessions have it, but never reads
    /// it. Declaring a name again gives the same flag.
    pub fn session_flag(&mut self, name: &'static str) -> SessionFlag {
        self.flags.declare(name)
    }

    /// Lets clients switch on the feature of namespace `ns` while binding (XEP-0386).
    pub fn inline_feature(&mut self, ns: &'static str, feature: Arc<dyn InlineFeature>) {
        self.inline_features.retain(|(known, _)| *known != ns);
        self.inline_features.push((ns, feature));
    }

    /// Receives what other nodes of a cluster send on `topic` (see `ClusterLink`). A topic
    /// has one receiver: a second registration is ignored (and logged).
    pub fn cluster_topic(&mut self, topic: &'static str, handler: Arc<dyn super::ClusterTopic>) {
        if self.cluster_topics.insert(topic, handler).is_some() {
            tracing::error!(
                topic,
                module = self.module,
                "cluster topic registered twice"
            );
        }
    }

    pub fn node_gone_hook(&mut self, priority: Priority, hook: Arc<dyn super::NodeGoneHook>) {
        self.node_gone_hooks.insert(priority, self.module, hook);
    }

    /// Replaces the single-node directory with one built around it: a cluster directory
    /// that also knows the other nodes' sessions (see `directory`). The last one registered
    /// wins.
    pub fn directory(&mut self, around_local: DirectoryFactory) {
        self.directory = Some(around_local);
    }

    /// The shared `T` of this server, made (with `Default`) by whichever module asks first, so
    /// modules can contribute to it in any registration order. Code with only the router at
    /// hand finds it with `Router::service`.
    pub fn service<T: Default + Send + Sync + 'static>(&mut self) -> Arc<T> {
        let entry = self
            .services
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Arc::new(T::default()) as Arc<dyn Any + Send + Sync>);
        match entry.clone().downcast::<T>() {
            Ok(service) => service,
            // Keyed by the type's id, so the entry is always a `T`; this arm is never taken.
            Err(_) => Arc::new(T::default()),
        }
    }

    pub fn undeliverable_message(&mut self, handler: Arc<dyn UndeliverableMessage>) {
        self.undeliverable = Some(handler);
    }

    /// Disco features of the server (XEP-0030 on the domain).
    pub fn server_feature(&mut self, feature: &'static str) {
        self.discovery.feature(DiscoTarget::Server, feature);
    }

    /// Disco features of every account (XEP-0030 on a bare JID).
    pub fn account_feature(&mut self, feature: &'static str) {
        self.discovery.feature(DiscoTarget::Account, feature);
    }

    /// A disco identity of the server or of every account.
    pub fn disco_identity(&mut self, target: DiscoTarget, identity: Identity) {
        self.discovery.identity(target, identity);
    }

    /// Items `source` lists in disco#items (without a node) on the server or on an account.
    pub fn disco_items(&mut self, target: DiscoTarget, source: Arc<dyn ItemSource>) {
        self.discovery.items(target, self.module, source);
    }

    /// Hands disco#info and disco#items on `node` of the server or of an account to
    /// `handler`. A node has one owner: a second registration is ignored (and logged).
    pub fn disco_node(&mut self, target: DiscoTarget, node: &str, handler: Arc<dyn NodeHandler>) {
        if !self.discovery.node(target, node.to_owned(), handler) {
            warn!(
                module = self.module,
                node, "disco node registered twice; kept the first"
            );
        }
    }
}

/// One feature: a module registers its handlers and features once, at start-up.
pub trait Module: Send + Sync {
    fn name(&self) -> &'static str;
    fn register(self: Arc<Self>, registry: &mut Registry);
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Hook;

    #[async_trait]
    impl MessageHook for Hook {}

    #[async_trait]
    impl SessionHook for Hook {}

    fn position<T: ?Sized>(hooks: &Ordered<T>, hook: &Arc<T>) -> Option<usize> {
        hooks.iter().position(|h| Arc::ptr_eq(h, hook))
    }

    #[test]
    fn hooks_run_by_priority_whatever_the_registration_order() {
        let push: Arc<dyn MessageHook> = Arc::new(Hook);
        let carbons: Arc<dyn MessageHook> = Arc::new(Hook);
        let archive: Arc<dyn MessageHook> = Arc::new(Hook);
        let mut registry = Registry::default();
        // Registered backwards, the way a careless `modules::all` would.
        for (module, priority, hook) in [
            ("push", Priority::Notify, &push),
            ("carbons", Priority::Copies, &carbons),
            ("mam", Priority::Archive, &archive),
        ] {
            registry.enter_module(module);
            registry.message_hook(priority, hook.clone());
        }
        let hooks = &registry.message_hooks;
        assert_eq!(position(hooks, &archive), Some(0));
        assert_eq!(position(hooks, &carbons), Some(1));
        assert_eq!(position(hooks, &push), Some(2));
    }

    #[test]
    fn equal_priorities_run_in_module_name_order() {
        let vcard: Arc<dyn SessionHook> = Arc::new(Hook);
        let pep: Arc<dyn SessionHook> = Arc::new(Hook);
        let presence: Arc<dyn SessionHook> = Arc::new(Hook);
        let mut registry = Registry::default();
        for (module, priority, hook) in [
            ("vcard", Priority::Profile, &vcard),
            ("pep", Priority::Profile, &pep),
            ("presence", Priority::Presence, &presence),
        ] {
            registry.enter_module(module);
            registry.session_hook(priority, hook.clone());
        }
        let hooks = &registry.session_hooks;
        assert_eq!(position(hooks, &presence), Some(0));
        assert_eq!(position(hooks, &pep), Some(1));
        assert_eq!(position(hooks, &vcard), Some(2));
    }
}
