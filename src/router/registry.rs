//! What modules register with the core: IQ handlers by payload namespace, and hooks on the
//! moments the router does not own (presence broadcast, a message nobody online can take, a
//! session becoming available or going away). Prosody's `module:hook` and ejabberd's
//! `gen_mod` + `ejabberd_hooks` are the models.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use jid::{BareJid, FullJid, Jid};
use minidom::Element;

use super::Router;
use crate::stanza::StanzaError;

/// An IQ get/set addressed to the server or, on the user's behalf, to an account's bare JID.
pub struct IqRequest {
    /// The full stanza, `from` already stamped by the server.
    pub stanza: Element,
    pub from: Jid,
    /// `None` when the IQ was addressed to the server domain itself.
    pub account: Option<BareJid>,
    pub is_set: bool,
}

impl IqRequest {
    /// The one payload child (RFC 6120 §8.2.3); checked before a handler is called.
    pub fn payload(&self) -> &Element {
        crate::stanza::iq_payload(&self.stanza).unwrap_or(&self.stanza)
    }
}

pub type IqResult = Result<Option<Element>, StanzaError>;

#[async_trait]
pub trait IqHandler: Send + Sync {
    async fn handle_iq(&self, router: &Arc<Router>, request: IqRequest) -> IqResult;
}

/// A session's presence-related moments.
#[async_trait]
pub trait SessionHook: Send + Sync {
    /// The session sent its first available presence with a non-negative priority.
    async fn became_available(&self, _router: &Arc<Router>, _session: &FullJid) {}
    /// The session ended (cleanly or not) after having been bound.
    async fn ended(&self, _router: &Arc<Router>, _session: &FullJid, _was_available: bool) {}
}

/// Presence a client sent without `to`: the broadcast RFC 6121 §4.2–4.5 describes.
#[async_trait]
pub trait PresenceBroadcast: Send + Sync {
    async fn broadcast(&self, router: &Arc<Router>, from: &FullJid, presence: Element);
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

/// Who handles an IQ: keyed by the payload's (namespace, element name).
type IqKey = (String, String);

#[derive(Default)]
pub struct Registry {
    pub(super) server_iq: HashMap<IqKey, Arc<dyn IqHandler>>,
    pub(super) account_iq: HashMap<IqKey, Arc<dyn IqHandler>>,
    pub(super) session_hooks: Vec<Arc<dyn SessionHook>>,
    pub(super) presence: Option<Arc<dyn PresenceBroadcast>>,
    pub(super) undeliverable: Option<Arc<dyn UndeliverableMessage>>,
    pub(super) server_features: Vec<&'static str>,
    pub(super) account_features: Vec<&'static str>,
}

impl Registry {
    /// Handles IQs to the server's domain with a `<name xmlns=ns>` payload.
    pub fn server_iq(&mut self, ns: &str, name: &str, handler: Arc<dyn IqHandler>) {
        self.server_iq
            .insert((ns.to_string(), name.to_string()), handler);
    }

    /// Handles IQs to a local account's bare JID (or with no `to`) on the user's behalf.
    pub fn account_iq(&mut self, ns: &str, name: &str, handler: Arc<dyn IqHandler>) {
        self.account_iq
            .insert((ns.to_string(), name.to_string()), handler);
    }

    pub fn session_hook(&mut self, hook: Arc<dyn SessionHook>) {
        self.session_hooks.push(hook);
    }

    pub fn presence_broadcast(&mut self, handler: Arc<dyn PresenceBroadcast>) {
        self.presence = Some(handler);
    }

    pub fn undeliverable_message(&mut self, handler: Arc<dyn UndeliverableMessage>) {
        self.undeliverable = Some(handler);
    }

    /// Disco features of the server (XEP-0030 on the domain).
    pub fn server_feature(&mut self, feature: &'static str) {
        if !self.server_features.contains(&feature) {
            self.server_features.push(feature);
        }
    }

    /// Disco features of every account (XEP-0030 on a bare JID).
    pub fn account_feature(&mut self, feature: &'static str) {
        if !self.account_features.contains(&feature) {
            self.account_features.push(feature);
        }
    }
}

/// One feature: a module registers its handlers and features once, at start-up.
pub trait Module: Send + Sync {
    fn name(&self) -> &'static str;
    fn register(self: Arc<Self>, registry: &mut Registry);
}
