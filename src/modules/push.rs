//! XEP-0357 Push Notifications: a mobile client registers its app server (a JID and a node)
//! and, when a message arrives while none of the account's sessions can take it (all gone,
//! or detached by stream management), the server publishes a notification to that node so
//! the app server can wake the device.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use tracing::{debug, warn};

use super::message_kinds;
use crate::router::{
    IqHandler, IqRequest, IqResult, IqType, MessageHook, Module, Priority, Registry, Router,
    SessionFlag,
};
use crate::stanza::{self, StanzaError};
use crate::storage::{PushRegistration, StorageError};
use crate::xml::{self, ns};

pub struct Push;

impl Module for Push {
    fn name(&self) -> &'static str {
        "push"
    }

    fn register(self: Arc<Self>, registry: &mut Registry) {
        registry.account_iq(IqType::Set, ns::PUSH, "enable", self.clone());
        registry.account_iq(IqType::Set, ns::PUSH, "disable", self.clone());
        registry.message_hook(Priority::Notify, self);
        // XEP-0357 §5: the user's server advertises it on the account.
        registry.account_feature(ns::PUSH);
        registry.account_feature(ns::TIGASE_PUSH_PRIORITY);
    }
}

/// The addressed account's username, when one of its own sessions asks.
fn own_username(request: &IqRequest) -> Result<&str, StanzaError> {
    match (request.own_session(), &request.account) {
        (Some(_), Some(account)) if account.node().is_some() => Ok(account.as_str()),
        _ => Err(StanzaError::forbidden()),
    }
}

#[async_trait]
impl IqHandler for Push {
    /// Only the account's own sessions register its push services.
    fn authorize(&self, request: &IqRequest) -> Result<(), StanzaError> {
        own_username(request).map(|_| ())
    }

    async fn handle_iq(&self, router: &Arc<Router>, request: IqRequest) -> IqResult {
        let username = own_username(&request)?;
        let payload = request.payload();
        let service = payload
            .attr("jid")
            .and_then(|j| Jid::new(j).ok())
            .ok_or_else(|| StanzaError::bad_request().with_text("a valid 'jid' is required"))?;
        let node = payload.attr("node").filter(|n| !n.is_empty());
        let push = &router.storage().push;
        let result = match payload.name() {
            "enable" => {
                let node = node.ok_or_else(|| {
                    StanzaError::bad_request().with_text("'node' is required to enable")
                })?;
                let registration = PushRegistration {
                    service: service.to_string(),
                    node: node.to_owned(),
                    publish_options: publish_options(payload).map(xml::to_string),
                };
                let cap = router.config().push.max_registrations_per_user;
                let stamp = router.ids().next_id();
                push.enable_push(username, &registration, stamp, cap).await
            }
            _ => push
                .disable_push(username, &service.to_string(), node)
                .await
                .map(|_| ()),
        };
        match result {
            Ok(()) => Ok(None),
            Err(StorageError::NotFound) => Err(StanzaError::item_not_found()),
            Err(e) => {
                warn!(error = %e, "storing a push registration failed");
                Err(StanzaError::storage_failure())
            }
        }
    }
}

/// The client's `publish-options` form (XEP-0357 §5): handed back unchanged with every
/// notification, so the app server can check its secret.
fn publish_options(enable: &Element) -> Option<&Element> {
    enable.get_child("x", ns::DATA_FORMS).filter(|form| {
        form.children().any(|field| {
            field.attr("var") == Some("FORM_TYPE")
                && field
                    .get_child("value", ns::DATA_FORMS)
                    .is_some_and(|v| v.text() == ns::PUBSUB_PUBLISH_OPTIONS)
        })
    })
}

/// Worth waking a phone for: something a person reads, in clear or end-to-end encrypted, or
/// a call proposal (XEP-0353: the phone has to ring). Chat states, receipts and the rest of
/// the call signalling alone are not.
fn is_important(message: &Element) -> bool {
    message_kinds::is_call_proposal(message)
        || message.children().any(|child| {
            (child.name() == "body" && child.ns() == ns::CLIENT)
                || (child.name() == "encrypted"
                    && (child.ns() == ns::OMEMO_LEGACY || child.ns() == ns::OMEMO_2))
        })
}

/// None of the sessions that took the message can show it now: there were none, or all are
/// detached by stream management (the phone dropped off the network and may never return
/// unless woken).
fn nobody_is_listening(router: &Router, sessions: &[FullJid]) -> bool {
    sessions
        .iter()
        .all(|session| router.has_session_flag(session, SessionFlag::DISCONNECTED))
}

fn form_field(var: &str, value: &str) -> Element {
    let mut field = Element::bare("field", ns::DATA_FORMS);
    stanza::set_attr(&mut field, "var", var.to_owned());
    let mut v = Element::bare("value", ns::DATA_FORMS);
    v.append_text(value.to_owned());
    field.append_child(v);
    field
}

/// The `<pubsub><publish/>…</pubsub>` IQ of XEP-0357 §7, with the summary form.
fn notification(router: &Router, registration: &PushRegistration, message: &Element) -> Element {
    let config = &router.config().push;
    let mut summary = Element::bare("x", ns::DATA_FORMS);
    stanza::set_attr(&mut summary, "type", "submit");
    summary.append_child(form_field("FORM_TYPE", ns::PUSH_SUMMARY));
    summary.append_child(form_field("message-count", "1"));
    if config.include_sender {
        if let Some(from) = message.attr("from") {
            summary.append_child(form_field("last-message-sender", from));
        }
    }
    if config.include_body {
        if let Some(body) = message.get_child("body", ns::CLIENT) {
            summary.append_child(form_field("last-message-body", &body.text()));
        }
    }
    let mut content = Element::bare("notification", ns::PUSH);
    content.append_child(summary);
    // Tigase's push priority extension (what Siskin's and Monal's app servers read; Prosody's
    // mod_push_priority sends it too): everything pushed here is important, and a high
    // priority is what lets a phone show an incoming call at once.
    content.append_child(
        Element::builder("priority", ns::TIGASE_PUSH_PRIORITY)
            .append("high")
            .build(),
    );
    let mut item = Element::bare("item", ns::PUBSUB);
    item.append_child(content);
    let mut publish = Element::bare("publish", ns::PUBSUB);
    stanza::set_attr(&mut publish, "node", registration.node.clone());
    publish.append_child(item);
    let mut pubsub = Element::bare("pubsub", ns::PUBSUB);
    pubsub.append_child(publish);
    let options = registration
        .publish_options
        .as_deref()
        .and_then(|xml| xml::parse_standalone(xml.as_bytes(), xml::XmlLimits::STORED).ok());
    if let Some(form) = options {
        let mut wrapper = Element::bare("publish-options", ns::PUBSUB);
        wrapper.append_child(form);
        pubsub.append_child(wrapper);
    }
    let mut iq = Element::bare("iq", ns::CLIENT);
    stanza::set_attr(&mut iq, "type", "set");
    iq.append_child(pubsub);
    iq
}

/// An app server that says the node is gone (or we may not publish) will say so again:
/// stop asking it (XEP-0357 §8, and what Prosody and ejabberd do).
fn registration_is_dead(answer: &Element) -> bool {
    stanza::is_error(answer)
        && answer
            .get_child("error", ns::CLIENT)
            .is_some_and(|e| matches!(e.attr("type"), Some("cancel" | "auth")))
}

async fn notify(router: Arc<Router>, user: BareJid, registration: PushRegistration, iq: Element) {
    let Ok(service) = Jid::new(&registration.service) else {
        return;
    };
    let timeout = Duration::from_secs(router.config().push.timeout_secs);
    let answer = router
        .request_iq_as(user.to_string(), service, iq, timeout)
        .await;
    match answer {
        Ok(answer) if registration_is_dead(&answer) => {
            debug!(%user, service = %registration.service, "app server refused; disabling");
            if user.node().is_some() {
                let _ = router
                    .storage()
                    .push
                    .disable_push(
                        user.as_str(),
                        &registration.service,
                        Some(&registration.node),
                    )
                    .await;
            }
        }
        Ok(_) => {}
        Err(e) => debug!(%user, service = %registration.service, error = %e, "no answer to a push"),
    }
}

#[async_trait]
impl MessageHook for Push {
    async fn delivered(
        &self,
        router: &Arc<Router>,
        to: &BareJid,
        sessions: &[FullJid],
        message: &Element,
    ) {
        if !is_important(message) || !nobody_is_listening(router, sessions) {
            return;
        }
        if to.node().is_none() {
            return;
        }
        // Reading the registrations and talking to the app server happen off the delivery
        // path: the sender's session should not wait for a phone to be woken.
        let router = router.clone();
        let user = to.clone();
        let username = to.as_str().to_owned();
        let message = message.clone();
        tokio::spawn(async move {
            let registrations = match router.storage().push.push_registrations(&username).await {
                Ok(registrations) => registrations,
                Err(e) => {
                    warn!(error = %e, "reading push registrations failed");
                    return;
                }
            };
            for registration in registrations {
                let iq = notification(&router, &registration, &message);
                tokio::spawn(notify(router.clone(), user.clone(), registration, iq));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(inner: &str) -> Element {
        format!("<message xmlns='jabber:client' type='chat'>{inner}</message>")
            .parse()
            .unwrap()
    }

    #[test]
    fn only_a_call_proposal_among_call_signals_wakes_a_phone() {
        assert!(is_important(&message(
            "<propose xmlns='urn:xmpp:jingle-message:0' id='c'/>"
        )));
        for action in ["ringing", "proceed", "reject", "retract", "finish"] {
            assert!(
                !is_important(&message(&format!(
                    "<{action} xmlns='urn:xmpp:jingle-message:0' id='c'/>"
                ))),
                "{action}"
            );
        }
        assert!(!is_important(&message(
            "<received xmlns='urn:xmpp:receipts' id='m'/>"
        )));
        assert!(is_important(&message("<body>hi</body>")));
    }
}
