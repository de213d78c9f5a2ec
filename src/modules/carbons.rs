//! XEP-0280 Message Carbons: a session that enables carbons gets a copy of every eligible
//! one-to-one message its account sends from another resource (`<sent/>`) or receives on
//! another resource (`<received/>`), so a phone and a laptop show the same conversation.

use std::sync::Arc;

use async_trait::async_trait;
use jid::{BareJid, FullJid, Jid};
use minidom::Element;

use super::message_kinds;
use crate::router::{
    InlineFeature, IqHandler, IqRequest, IqResult, IqType, MessageHook, Module, Priority, Registry,
    Router, SessionFlag,
};
use crate::stanza::{self, StanzaError};
use crate::xml::ns;

/// The flag of sessions that enabled carbons.
pub const ENABLED: &str = "carbons-enabled";

pub struct Carbons;

impl Module for Carbons {
    fn name(&self) -> &'static str {
        "carbons"
    }

    fn register(self: Arc<Self>, registry: &mut Registry) {
        let copies = Arc::new(Copies {
            enabled: registry.session_flag(ENABLED),
        });
        registry.account_iq(IqType::Set, ns::CARBONS, "enable", copies.clone());
        registry.account_iq(IqType::Set, ns::CARBONS, "disable", copies.clone());
        registry.message_hook(Priority::Copies, copies.clone());
        registry.inline_feature(ns::CARBONS, copies);
        // Clients look for it on the server (XEP-0280 §3).
        registry.server_feature(ns::CARBONS);
    }
}

/// The account's sessions that enabled carbons.
pub fn enabled_sessions(router: &Router, account: &BareJid) -> Vec<FullJid> {
    router
        .session_flag(ENABLED)
        .map(|enabled| router.resources_with_flag(account, enabled))
        .unwrap_or_default()
}

/// The registered handler and hook: which sessions get copies.
struct Copies {
    enabled: SessionFlag,
}

/// XEP-0386: `<enable xmlns='urn:xmpp:carbons:2'/>` inside Bind2 does what the IQ does.
impl InlineFeature for Copies {
    fn enable(&self, router: &Router, session: &FullJid, _request: &Element) {
        router.set_session_flag(session, self.enabled, true);
    }
}

#[async_trait]
impl IqHandler for Copies {
    /// Only a session of the account itself can switch its own carbons.
    fn authorize(&self, request: &IqRequest) -> Result<(), StanzaError> {
        request
            .own_session()
            .map(|_| ())
            .ok_or_else(StanzaError::forbidden)
    }

    async fn handle_iq(&self, router: &Arc<Router>, request: IqRequest) -> IqResult {
        let session = request
            .own_session()
            .cloned()
            .ok_or_else(StanzaError::forbidden)?;
        let on = request.payload().name() == "enable";
        router.set_session_flag(&session, self.enabled, on);
        Ok(None)
    }
}

/// Which way a copied message went, from the account's point of view.
#[derive(Clone, Copy)]
enum Direction {
    Sent,
    Received,
}

impl Direction {
    fn element(self) -> &'static str {
        match self {
            Direction::Sent => "sent",
            Direction::Received => "received",
        }
    }
}

/// XEP-0280 §6: what is worth copying. The router only calls message hooks for `chat` and
/// `normal` messages, so groupchat, headline and error types never get here.
fn eligible(message: &Element) -> bool {
    if message.has_child("private", ns::CARBONS) || message.has_child("no-copy", ns::HINTS) {
        return false;
    }
    // No carbons of carbons: a forwarded copy is never copied again.
    if message.has_child("sent", ns::CARBONS) || message.has_child("received", ns::CARBONS) {
        return false;
    }
    match stanza::stanza_type(message) {
        "chat" => true,
        // A normal message only when it carries something a person reads or a chat client
        // tracks (receipts, markers, chat states, call signalling: XEP-0353 relies on carbons
        // so that every device stops ringing when one answers).
        _ => {
            message_kinds::is_call_signal(message)
                || message.children().any(|child| {
                    (child.name() == "body" && child.ns() == ns::CLIENT)
                        || child.ns() == ns::CHATSTATES
                        || child.ns() == ns::RECEIPTS
                        || child.ns() == ns::CHAT_MARKERS
                })
        }
    }
}

/// A private message from a MUC occupant: the account's other resources are not in the room,
/// so a copy would only confuse them (Prosody and ejabberd skip these too).
fn is_muc_private_message(message: &Element) -> bool {
    message.has_child("x", ns::MUC_USER)
}

fn wrap(direction: Direction, account: &BareJid, to: &FullJid, message: &Element) -> Element {
    let mut forwarded = Element::bare("forwarded", ns::FORWARD);
    forwarded.append_child(message.clone());
    let mut carbon = Element::bare(direction.element(), ns::CARBONS);
    carbon.append_child(forwarded);
    let mut wrapper = Element::bare("message", ns::CLIENT);
    stanza::set_attr(&mut wrapper, "from", account.to_string());
    stanza::set_attr(&mut wrapper, "to", to.to_string());
    stanza::set_attr(&mut wrapper, "type", stanza::stanza_type(message));
    wrapper.append_child(carbon);
    wrapper
}

/// Copies `message` to the account's carbons-enabled sessions, except those in `skip` (they
/// have the message itself).
fn copy_to_sessions(
    router: &Router,
    enabled: SessionFlag,
    direction: Direction,
    account: &BareJid,
    skip: &[&FullJid],
    message: &Element,
) {
    for session in router.resources_with_flag(account, enabled) {
        if skip.contains(&&session) {
            continue;
        }
        let carbon = wrap(direction, account, &session, message);
        // A session too far behind to take a copy is being disconnected for it; the message
        // itself is in the archive.
        let _ = router.deliver_to_session(&session, carbon);
    }
}

#[async_trait]
impl MessageHook for Copies {
    async fn outgoing(
        &self,
        router: &Arc<Router>,
        from: &FullJid,
        to: &Jid,
        message: &mut Element,
    ) -> Result<(), StanzaError> {
        if !eligible(message) {
            return Ok(());
        }
        let account = from.to_bare();
        // A message to the account itself reaches its sessions directly (or as a received
        // copy); a sent copy as well would show it twice.
        if to.to_bare() == account {
            return Ok(());
        }
        copy_to_sessions(
            router,
            self.enabled,
            Direction::Sent,
            &account,
            &[from],
            message,
        );
        Ok(())
    }

    async fn delivered(
        &self,
        router: &Arc<Router>,
        to: &BareJid,
        sessions: &[FullJid],
        message: &Element,
    ) {
        if !eligible(message) || is_muc_private_message(message) {
            return;
        }
        // A session messaging its own full JID talks to itself (clients and tests use it as
        // a loopback); nobody else is part of that conversation.
        if message.attr("from").is_some() && message.attr("from") == message.attr("to") {
            return;
        }
        // The account messaging itself: the sending session already got a `<sent/>` copy.
        let sender = message.attr("from").and_then(|f| FullJid::new(f).ok());
        let mut skip: Vec<&FullJid> = sessions.iter().collect();
        if let Some(sender) = sender.as_ref().filter(|s| s.to_bare() == *to) {
            skip.push(sender);
        }
        copy_to_sessions(
            router,
            self.enabled,
            Direction::Received,
            to,
            &skip,
            message,
        );
    }

    fn copies_elsewhere(&self, router: &Router, to: &FullJid, message: &Element) -> Vec<FullJid> {
        if !eligible(message) || is_muc_private_message(message) {
            return Vec::new();
        }
        router.resources_with_flag(&to.to_bare(), self.enabled)
    }
}
