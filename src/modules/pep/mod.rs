//! XEP-0163 Personal Eventing Protocol: every account is a small XEP-0060 pubsub service at its
//! bare JID. The owner publishes (nodes are created on first publish, `publish-options` set or
//! check their configuration); readers are filtered by the node's access model; notifications
//! go to the owner's sessions and to contacts subscribed to the owner's presence, filtered by
//! the `+notify` features of their XEP-0115 caps.
//!
//! Explicit subscriptions (`subscribe`) are offered beside the implicit ones and stored.
//! XEP-0402 bookmarks are kept in step with their XEP-0048 forms (`bookmarks`), and XEP-0084
//! avatars with the vCard photo (`avatar`, XEP-0398).
//!
//! Not offered: subscription options, the owner's subscription management,
//! the `roster` and `authorize` access models, a whitelist beyond the owner, collection nodes,
//! XEP-0033 `replyto` on notifications, and notifications to remote domains (no federation).
//!
//! One job per file: `publish` (the pubsub namespace), `owner` (pubsub#owner), `config`
//! (node configuration forms), `access` (who may read), `store` (where items live), `notify`
//! (who gets events), `interest` and `caps` (what each session asked for), `subscribe`
//! (explicit subscriptions), `bookmarks` (XEP-0402 §5 compatibility), `avatar` (XEP-0398).

mod access;
mod avatar;
pub mod bookmarks;
mod caps;
mod cluster;
mod config;
mod interest;
mod notify;
mod owner;
mod publish;
mod store;
mod subscribe;

use std::sync::Arc;

pub use avatar::{Avatar, AvatarListener};
pub use bookmarks::{
    check_legacy as check_legacy_bookmarks, PepHandle, FEATURE_COMPAT as FEATURE_BOOKMARKS_COMPAT,
};

use async_trait::async_trait;
use jid::{BareJid, FullJid, Jid};
use minidom::Element;

use crate::config::PepConfig;
use crate::router::{
    DiscoQuery, DiscoTarget, Identity, IqHandler, IqRequest, IqResult, IqType, Item, ItemSource,
    Module, PresenceObserver, Priority, Registry, RemoteDomainHook, Router, SessionEnd,
    SessionHook,
};
use crate::stanza::{self, Condition, ErrorType, StanzaError};
use crate::storage::PepStore;
use crate::xml::ns;

/// The pubsub features of XEP-0060 §10 that corvid's PEP service has.
const FEATURES: &[&str] = &[
    "http://jabber.org/protocol/pubsub#access-open",
    "http://jabber.org/protocol/pubsub#access-presence",
    "http://jabber.org/protocol/pubsub#access-whitelist",
    "http://jabber.org/protocol/pubsub#auto-create",
    "http://jabber.org/protocol/pubsub#auto-subscribe",
    "http://jabber.org/protocol/pubsub#config-node",
    "http://jabber.org/protocol/pubsub#create-and-configure",
    "http://jabber.org/protocol/pubsub#create-nodes",
    "http://jabber.org/protocol/pubsub#delete-items",
    "http://jabber.org/protocol/pubsub#delete-nodes",
    "http://jabber.org/protocol/pubsub#filtered-notifications",
    "http://jabber.org/protocol/pubsub#item-ids",
    "http://jabber.org/protocol/pubsub#last-published",
    "http://jabber.org/protocol/pubsub#multi-items",
    "http://jabber.org/protocol/pubsub#persistent-items",
    "http://jabber.org/protocol/pubsub#presence-notifications",
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#publish-options",
    "http://jabber.org/protocol/pubsub#purge-nodes",
    "http://jabber.org/protocol/pubsub#retract-items",
    "http://jabber.org/protocol/pubsub#retrieve-default",
    "http://jabber.org/protocol/pubsub#retrieve-items",
    "http://jabber.org/protocol/pubsub#retrieve-subscriptions",
    "http://jabber.org/protocol/pubsub#subscribe",
];

/// What the module keeps in memory, shared with the tasks it spawns.
#[derive(Default)]
pub(crate) struct PepState {
    interests: interest::Interests,
    transient: store::Transient,
    /// Told of avatars published through PEP (XEP-0398); the vCard module.
    avatar_listener: std::sync::OnceLock<std::sync::Weak<dyn AvatarListener>>,
}

#[derive(Default)]
pub struct Pep {
    state: Arc<PepState>,
}

impl Module for Pep {
    fn name(&self) -> &'static str {
        "pep"
    }

    fn register(self: Arc<Self>, registry: &mut Registry) {
        let converts_avatars = self.state.avatar_listener.get().is_some();
        // One handler per namespace and type; the action is the `<pubsub/>`'s child, which
        // the handler reads (XEP-0060 §6–8).
        let handlers: [(IqType, &str, Arc<dyn IqHandler>); 4] = [
            (IqType::Get, ns::PUBSUB, self.service(Action::Get)),
            (IqType::Set, ns::PUBSUB, self.service(Action::Set)),
            (
                IqType::Get,
                ns::PUBSUB_OWNER,
                self.service(Action::OwnerGet),
            ),
            (
                IqType::Set,
                ns::PUBSUB_OWNER,
                self.service(Action::OwnerSet),
            ),
        ];
        for (iq_type, namespace, handler) in handlers {
            registry.account_iq(iq_type, namespace, "pubsub", handler);
        }
        registry.session_hook(Priority::Profile, self.clone());
        registry.presence_observer(Priority::Profile, self.clone());
        registry.remote_domain_hook(Priority::Profile, self.clone());
        registry.cluster_topic(
            cluster::TOPIC,
            Arc::new(cluster::RemoteEvents(self.state.clone())),
        );
        registry.disco_items(DiscoTarget::Account, self);
        // XEP-0163 §6.1: an account with a PEP service is also a pubsub/pep entity.
        registry.disco_identity(DiscoTarget::Account, Identity::new("pubsub", "pep"));
        for feature in FEATURES {
            registry.account_feature(feature);
        }
        // XEP-0402 §5.2: the legacy PEP node follows the native one.
        registry.account_feature(bookmarks::FEATURE_COMPAT_PEP);
        // XEP-0292 vCard4 is an ordinary PEP node; XEP-0398 needs the vCard module listening.
        registry.account_feature("urn:xmpp:vcard4");
        if converts_avatars {
            registry.account_feature(avatar::FEATURE_CONVERSION);
        }
    }
}

/// One request against one account's PEP service.
pub(crate) struct Ctx<'a> {
    router: &'a Arc<Router>,
    state: &'a Arc<PepState>,
    owner: BareJid,
    /// The owner's bare JID as text, as storage keys it.
    owner_name: String,
    /// Who asks (or, for last items, who receives), as a bare JID.
    requester: BareJid,
}

impl<'a> Ctx<'a> {
    fn new(
        router: &'a Arc<Router>,
        state: &'a Arc<PepState>,
        owner: BareJid,
        requester: BareJid,
    ) -> Option<Ctx<'a>> {
        owner.node()?;
        let owner_name = owner.to_string();
        Some(Ctx {
            router,
            state,
            owner,
            owner_name,
            requester,
        })
    }

    fn storage(&self) -> &dyn PepStore {
        self.router.storage().pep.as_ref()
    }

    fn limits(&self) -> &PepConfig {
        &self.router.config().pep
    }

    /// XEP-0163 §2.2: only the account owner publishes or manages nodes.
    fn require_owner(&self) -> Result<(), StanzaError> {
        if self.owner == self.requester {
            Ok(())
        } else {
            Err(StanzaError::forbidden())
        }
    }
}

/// A standard condition with a XEP-0060 `pubsub#errors` condition under it.
fn pubsub_error(base: StanzaError, condition: &str) -> StanzaError {
    base.with_app_condition(Element::bare(condition, ns::PUBSUB_ERRORS))
}

/// `<feature-not-implemented/>` with `<unsupported feature=…/>` (XEP-0060 §7.1.3.6 style).
fn unsupported(feature: &'static str) -> StanzaError {
    let mut condition = Element::bare("unsupported", ns::PUBSUB_ERRORS);
    stanza::set_attr(&mut condition, "feature", feature);
    StanzaError::feature_not_implemented().with_app_condition(condition)
}

fn bad_request(condition: &str) -> StanzaError {
    pubsub_error(StanzaError::bad_request(), condition)
}

fn not_acceptable() -> StanzaError {
    StanzaError::new(ErrorType::Modify, Condition::NotAcceptable)
}

/// The node named by an action element, or `<nodeid-required/>`.
fn node_attr(action: &Element) -> Result<&str, StanzaError> {
    match action.attr("node") {
        Some(node) if !node.is_empty() && node.len() <= MAX_NODE_LEN => Ok(node),
        Some(_) => Err(not_acceptable().with_text("node name too long")),
        None => Err(bad_request("nodeid-required")),
    }
}

/// Node names and item ids longer than this are refused rather than stored.
const MAX_NODE_LEN: usize = 1024;
const MAX_ITEM_ID_LEN: usize = 1024;

/// Disco#items on an account (XEP-0163 §6.2 / XEP-0060 §5.2): the nodes the requester may
/// read.
#[async_trait]
impl ItemSource for Pep {
    async fn items(&self, router: &Arc<Router>, query: &DiscoQuery<'_>) -> Vec<Item> {
        match query.account {
            Some(account) => readable_nodes(router, account, query.from).await,
            None => Vec::new(),
        }
    }
}

async fn readable_nodes(router: &Arc<Router>, account: &BareJid, requester: &Jid) -> Vec<Item> {
    if account.node().is_none() {
        return Vec::new();
    }
    let nodes = match router.storage().pep.pep_nodes(account.as_str()).await {
        Ok(nodes) => nodes,
        Err(e) => {
            tracing::warn!(error = %e, "listing PEP nodes failed");
            return Vec::new();
        }
    };
    let reader = requester.to_bare();
    let mut items = Vec::new();
    for node in nodes {
        if access::may_read(router, account, &reader, node.config.access_model)
            .await
            .unwrap_or(false)
        {
            items.push(Item::new(account.to_string()).with_node(node.name));
        }
    }
    items
}

impl Pep {
    /// What other modules use of this PEP service (bookmarks through Private XML).
    pub fn handle(&self) -> PepHandle {
        PepHandle {
            state: self.state.clone(),
        }
    }

    fn service(&self, action: Action) -> Arc<dyn IqHandler> {
        Arc::new(Service {
            state: self.state.clone(),
            action,
        })
    }
}

/// Which requests a registered handler takes: a namespace and a type.
#[derive(Clone, Copy)]
enum Action {
    Get,
    Set,
    OwnerGet,
    OwnerSet,
}

/// One account's PEP service, for one kind of request.
struct Service {
    state: Arc<PepState>,
    action: Action,
}

#[async_trait]
impl IqHandler for Service {
    async fn handle_iq(&self, router: &Arc<Router>, request: IqRequest) -> IqResult {
        let Some(account) = request.account.clone() else {
            return Err(StanzaError::service_unavailable());
        };
        let requester = request.from.to_bare();
        let Some(ctx) = Ctx::new(router, &self.state, account, requester) else {
            return Err(StanzaError::service_unavailable());
        };
        // Someone else's request to an account that does not exist (RFC 6121 §8.5.1).
        if ctx.owner != ctx.requester {
            let exists = router
                .storage()
                .accounts
                .account_exists(&ctx.owner_name)
                .await
                .map_err(store::storage_error)?;
            if !exists {
                return Err(StanzaError::service_unavailable());
            }
        }
        let payload = request.payload();
        match self.action {
            Action::Get => publish::get(&ctx, payload).await,
            Action::Set => publish::set(&ctx, payload).await,
            Action::OwnerGet => owner::get(&ctx, payload).await,
            Action::OwnerSet => owner::set(&ctx, payload).await,
        }
    }
}

#[async_trait]
impl PresenceObserver for Pep {
    async fn broadcasted(&self, router: &Arc<Router>, from: &FullJid, presence: &Element) {
        interest::on_presence(router, &self.state, from, presence);
    }

    async fn received(
        &self,
        router: &Arc<Router>,
        user: &BareJid,
        from: &FullJid,
        presence: &Element,
    ) {
        interest::on_remote_presence(router, &self.state, user, from, presence);
    }

    async fn subscription_granted(&self, router: &Arc<Router>, user: &BareJid, contact: &BareJid) {
        // A contact of another server: its sessions known from the presence they sent `user`.
        let sessions: Vec<FullJid> = if router.is_hosted(contact.domain().as_str()) {
            router
                .available_resources(contact)
                .into_iter()
                .map(|(session, _)| session)
                .collect()
        } else {
            self.state.interests.remote_sessions(contact, user)
        };
        for session in sessions {
            let nodes = self.state.interests.wanted_nodes(&session);
            notify::send_last_items_from(router, &self.state, user.clone(), &session, &nodes).await;
        }
    }
}

#[async_trait]
impl SessionHook for Pep {
    async fn ended(
        &self,
        _router: &Arc<Router>,
        session: &FullJid,
        _was_available: bool,
        _why: SessionEnd,
    ) {
        self.state.interests.forget(session);
    }
}

/// The connection to another server was lost: its users' sessions get no notifications and no
/// last items until they send presence again (the presence module's unavailable, which runs
/// first, already let go of those it knew of).
#[async_trait]
impl RemoteDomainHook for Pep {
    async fn lost(&self, _router: &Arc<Router>, domain: &str) {
        let forgotten = self.state.interests.forget_domain(domain);
        if forgotten > 0 {
            tracing::debug!(%domain, forgotten, "PEP interests of a lost domain forgotten");
        }
    }
}
