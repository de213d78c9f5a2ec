//! Small helpers over `minidom::Element` for the three stanza kinds: reading the routing
//! attributes and building the RFC 6120 §8.3 error replies.

use minidom::Element;

pub use crate::xml::attrs::{remove_attr, set_attr};
use crate::xml::ns;

/// RFC 6120 §8.3.3 stanza error conditions, as xmpp-parsers models them.
pub use xmpp_parsers::stanza_error::DefinedCondition as Condition;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Message,
    Presence,
    Iq,
}

impl Kind {
    /// The stanza kind of a top-level `jabber:client` element, if it is one.
    /// Runs several times per stanza: `has_ns` compares in place, `ns()` would allocate.
    pub fn of(el: &Element) -> Option<Kind> {
        if !el.has_ns(ns::CLIENT) {
            return None;
        }
        match el.name() {
            "message" => Some(Kind::Message),
            "presence" => Some(Kind::Presence),
            "iq" => Some(Kind::Iq),
            _ => None,
        }
    }
}

/// RFC 6120 §8.3.2 error types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    Auth,
    Cancel,
    Continue,
    Modify,
    Wait,
}

impl ErrorType {
    fn as_str(self) -> &'static str {
        match self {
            ErrorType::Auth => "auth",
            ErrorType::Cancel => "cancel",
            ErrorType::Continue => "continue",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
        }
    }
}

/// A stanza error condition with its RFC-recommended type.
#[derive(Debug, Clone, PartialEq)]
pub struct StanzaError {
    pub kind: ErrorType,
    pub condition: Condition,
    pub text: Option<String>,
    /// An application-specific condition (RFC 6120 §8.3.4), e.g. XEP-0060's
    /// `<precondition-not-met xmlns='http://jabber.org/protocol/pubsub#errors'/>`.
    pub app_condition: Option<Box<Element>>,
}

impl StanzaError {
    pub fn new(kind: ErrorType, condition: Condition) -> Self {
        StanzaError {
            kind,
            condition,
            text: None,
            app_condition: None,
        }
    }

    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    pub fn with_app_condition(mut self, condition: Element) -> Self {
        self.app_condition = Some(Box::new(condition));
        self
    }

    pub fn service_unavailable() -> Self {
        Self::new(ErrorType::Cancel, Condition::ServiceUnavailable)
    }
    pub fn item_not_found() -> Self {
        Self::new(ErrorType::Cancel, Condition::ItemNotFound)
    }
    pub fn bad_request() -> Self {
        Self::new(ErrorType::Modify, Condition::BadRequest)
    }
    pub fn jid_malformed() -> Self {
        Self::new(ErrorType::Modify, Condition::JidMalformed)
    }
    pub fn feature_not_implemented() -> Self {
        Self::new(ErrorType::Cancel, Condition::FeatureNotImplemented)
    }
    pub fn remote_server_not_found() -> Self {
        Self::new(ErrorType::Cancel, Condition::RemoteServerNotFound)
    }
    pub fn forbidden() -> Self {
        Self::new(ErrorType::Auth, Condition::Forbidden)
    }
    pub fn not_allowed() -> Self {
        Self::new(ErrorType::Cancel, Condition::NotAllowed)
    }
    pub fn internal_server_error() -> Self {
        Self::new(ErrorType::Cancel, Condition::InternalServerError)
    }
    /// Storage failed (down, locked, read-only): type `wait`, since the same request may well
    /// succeed once it is back.
    pub fn storage_failure() -> Self {
        Self::new(ErrorType::Wait, Condition::InternalServerError)
            .with_text("Storage is temporarily unavailable; try again later")
    }
    pub fn conflict() -> Self {
        Self::new(ErrorType::Cancel, Condition::Conflict)
    }
    pub fn not_acceptable() -> Self {
        Self::new(ErrorType::Modify, Condition::NotAcceptable)
    }
    pub fn resource_constraint() -> Self {
        Self::new(ErrorType::Wait, Condition::ResourceConstraint)
    }

    pub fn to_element(&self) -> Element {
        let mut error = Element::bare("error", ns::CLIENT);
        set_attr(&mut error, "type", self.kind.as_str());
        error.append_child(Element::from(self.condition.clone()));
        if let Some(text) = &self.text {
            error.append_child(
                Element::builder("text", ns::STANZAS_ERRORS)
                    .append(text.as_str())
                    .build(),
            );
        }
        if let Some(app) = &self.app_condition {
            error.append_child((**app).clone());
        }
        error
    }
}

/// The stanza's `type`, with RFC defaults (`normal` for messages, `available` for presence).
pub fn stanza_type(el: &Element) -> &str {
    match (el.attr("type"), el.name()) {
        (Some(t), _) => t,
        (None, "message") => "normal",
        (None, "presence") => "available",
        (None, _) => "",
    }
}

/// True for stanzas that must never be answered with an error (RFC 6120 §8.3.1).
pub fn is_error(el: &Element) -> bool {
    el.attr("type") == Some("error")
}

/// The error reply to `original`: addressed back to its sender, from its intended recipient
/// (`fallback_from` when it had no `to`). Message and presence errors carry the original
/// payload, as RFC 6120 §8.3.1 allows, so the sender can tell which stanza failed; IQ errors
/// carry only the error, which is all most clients parse.
pub fn error_reply(original: &Element, error: &StanzaError, fallback_from: &str) -> Element {
    let mut reply = Element::bare(original.name(), ns::CLIENT);
    if let Some(id) = original.attr("id") {
        set_attr(&mut reply, "id", id);
    }
    if let Some(sender) = original.attr("from") {
        set_attr(&mut reply, "to", sender);
    }
    set_attr(
        &mut reply,
        "from",
        original.attr("to").unwrap_or(fallback_from),
    );
    set_attr(&mut reply, "type", "error");
    if original.name() != "iq" {
        for child in original.children() {
            if child.name() != "error" {
                reply.append_child(child.clone());
            }
        }
    }
    reply.append_child(error.to_element());
    reply
}

/// An IQ result answering `request`, optionally carrying `payload`.
pub fn iq_result(request: &Element, payload: Option<Element>, fallback_from: &str) -> Element {
    let mut reply = Element::bare("iq", ns::CLIENT);
    if let Some(id) = request.attr("id") {
        set_attr(&mut reply, "id", id);
    }
    if let Some(sender) = request.attr("from") {
        set_attr(&mut reply, "to", sender);
    }
    set_attr(
        &mut reply,
        "from",
        request.attr("to").unwrap_or(fallback_from),
    );
    set_attr(&mut reply, "type", "result");
    if let Some(payload) = payload {
        reply.append_child(payload);
    }
    reply
}

/// The single payload child of an IQ get/set (RFC 6120 §8.2.3 requires exactly one).
pub fn iq_payload(iq: &Element) -> Option<&Element> {
    let mut children = iq.children();
    let first = children.next()?;
    children.next().is_none().then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_reply_swaps_addresses_and_keeps_message_payload() {
        let msg: Element = "<message xmlns='jabber:client' from='a@x/r' to='b@x' id='7' type='chat'><body>hi</body></message>"
            .parse()
            .unwrap();
        let reply = error_reply(&msg, &StanzaError::service_unavailable(), "x");
        assert_eq!(reply.attr("to"), Some("a@x/r"));
        assert_eq!(reply.attr("from"), Some("b@x"));
        assert_eq!(reply.attr("id"), Some("7"));
        assert_eq!(reply.attr("type"), Some("error"));
        assert!(reply.has_child("body", ns::CLIENT));
        let error = reply.get_child("error", ns::CLIENT).unwrap();
        assert_eq!(error.attr("type"), Some("cancel"));
        assert!(error.has_child("service-unavailable", ns::STANZAS_ERRORS));
    }

    #[test]
    fn iq_payload_requires_exactly_one_child() {
        let two: Element = "<iq xmlns='jabber:client'><a/><b/></iq>".parse().unwrap();
        assert!(iq_payload(&two).is_none());
        let one: Element = "<iq xmlns='jabber:client'><a/></iq>".parse().unwrap();
        assert_eq!(iq_payload(&one).map(|e| e.name()), Some("a"));
    }
}
