//! The `type` and shape rules a client's stanza must meet before it is routed: RFC 6120
//! §8.2.3 for IQs, RFC 6121 §4.7.1 for presence, RFC 6121 §5.2.2 for messages. A stanza that
//! breaks them is answered here rather than passed on for a module or another client to
//! ignore, which left the sender waiting for an answer that never came.

use minidom::Element;

use crate::stanza::{self, Kind, StanzaError};

/// Why a stanza is refused with `<bad-request/>`.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Malformed {
    #[error("an iq needs a type: get, set, result or error")]
    IqWithoutType,
    #[error("'{0}' is not an iq type: get, set, result or error")]
    UnknownIqType(String),
    #[error("an iq of type {0} carries exactly one payload element, not {1}")]
    PayloadCount(&'static str, usize),
    #[error("'{0}' is not a presence type")]
    UnknownPresenceType(String),
}

impl Malformed {
    pub fn stanza_error(&self) -> StanzaError {
        StanzaError::bad_request().with_text(self.to_string())
    }
}

/// Checks a client stanza, fixing what the RFCs say to read differently (a message of an
/// unknown type is a normal one). IQ results and errors are never refused, whatever their
/// shape: answering an answer is how error loops start (RFC 6120 §8.3.1).
pub fn check(kind: Kind, el: &mut Element) -> Result<(), Malformed> {
    match kind {
        Kind::Iq => check_iq(el),
        Kind::Presence => {
            normalize_available(el);
            check_presence(el)
        }
        Kind::Message => {
            normalize_message_type(el);
            Ok(())
        }
    }
}

fn check_iq(el: &Element) -> Result<(), Malformed> {
    let iq_type = match el.attr("type") {
        None => return Err(Malformed::IqWithoutType),
        Some("get") => "get",
        Some("set") => "set",
        Some("result" | "error") => return Ok(()),
        Some(other) => return Err(Malformed::UnknownIqType(other.to_owned())),
    };
    match el.children().count() {
        1 => Ok(()),
        n => Err(Malformed::PayloadCount(iq_type, n)),
    }
}

/// RFC 6121 §4.7.1 lists the values; "available" is the absence of a type, not a value.
fn check_presence(el: &Element) -> Result<(), Malformed> {
    match el.attr("type") {
        None
        | Some(
            "error" | "probe" | "subscribe" | "subscribed" | "unavailable" | "unsubscribe"
            | "unsubscribed",
        ) => Ok(()),
        Some(other) => Err(Malformed::UnknownPresenceType(other.to_owned())),
    }
}

/// `type='available'` is not one of RFC 6121's values, but it names what the absence of a
/// type means and some client libraries write it out; ejabberd takes it as available too.
/// Refusing it would cost those clients their presence for no protection.
fn normalize_available(el: &mut Element) {
    if el.attr("type") == Some("available") {
        stanza::remove_attr(el, "type");
    }
}

/// RFC 6121 §5.2.2: a type the receiver does not understand means `normal`. Written out so
/// that every later rule (offline storage, archiving, carbons) and the recipient agree.
fn normalize_message_type(el: &mut Element) {
    let known = matches!(
        el.attr("type"),
        None | Some("chat" | "error" | "groupchat" | "headline" | "normal")
    );
    if !known {
        stanza::set_attr(el, "type", "normal");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stanza::Condition;

    fn el(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    fn iq(attrs: &str, children: &str) -> Element {
        el(&format!(
            "<iq xmlns='jabber:client' {attrs}>{children}</iq>"
        ))
    }

    #[test]
    fn iq_type_is_required_and_one_of_four() {
        let ping = "<ping xmlns='urn:xmpp:ping'/>";
        assert_eq!(
            check(Kind::Iq, &mut iq("", ping)),
            Err(Malformed::IqWithoutType)
        );
        assert_eq!(
            check(Kind::Iq, &mut iq("type='foo'", ping)),
            Err(Malformed::UnknownIqType("foo".into()))
        );
        assert_eq!(
            check(Kind::Iq, &mut iq("type='GET'", ping)),
            Err(Malformed::UnknownIqType("GET".into()))
        );
        for t in ["get", "set", "result", "error"] {
            assert_eq!(
                check(Kind::Iq, &mut iq(&format!("type='{t}'"), ping)),
                Ok(())
            );
        }
    }

    #[test]
    fn iq_get_and_set_carry_exactly_one_child() {
        assert_eq!(
            check(Kind::Iq, &mut iq("type='get'", "")),
            Err(Malformed::PayloadCount("get", 0))
        );
        assert_eq!(
            check(
                Kind::Iq,
                &mut iq("type='set'", "<a xmlns='x'/><b xmlns='x'/>")
            ),
            Err(Malformed::PayloadCount("set", 2))
        );
        let error = check(Kind::Iq, &mut iq("type='set'", "")).unwrap_err();
        assert_eq!(error.stanza_error().condition, Condition::BadRequest);
    }

    #[test]
    fn iq_results_and_errors_pass_whatever_their_shape() {
        for t in ["result", "error"] {
            assert_eq!(check(Kind::Iq, &mut iq(&format!("type='{t}'"), "")), Ok(()));
            let two = "<a xmlns='x'/><b xmlns='x'/>";
            assert_eq!(
                check(Kind::Iq, &mut iq(&format!("type='{t}'"), two)),
                Ok(())
            );
        }
    }

    #[test]
    fn presence_types_are_the_rfc_6121_ones() {
        let mut ok = el("<presence xmlns='jabber:client'/>");
        assert_eq!(check(Kind::Presence, &mut ok), Ok(()));
        for t in ["unavailable", "subscribe", "probe", "error", "unsubscribed"] {
            let mut p = el(&format!("<presence xmlns='jabber:client' type='{t}'/>"));
            assert_eq!(check(Kind::Presence, &mut p), Ok(()), "{t}");
        }
        let mut available = el("<presence xmlns='jabber:client' type='available'/>");
        assert_eq!(check(Kind::Presence, &mut available), Ok(()));
        assert_eq!(available.attr("type"), None);
        for t in ["foo", "AVAILABLE", ""] {
            let mut p = el(&format!("<presence xmlns='jabber:client' type='{t}'/>"));
            assert_eq!(
                check(Kind::Presence, &mut p),
                Err(Malformed::UnknownPresenceType(t.into()))
            );
        }
    }

    #[test]
    fn unknown_message_type_becomes_normal() {
        let mut m = el("<message xmlns='jabber:client' type='foo'><body>x</body></message>");
        assert_eq!(check(Kind::Message, &mut m), Ok(()));
        assert_eq!(m.attr("type"), Some("normal"));
        for t in ["chat", "groupchat", "headline", "error", "normal"] {
            let mut m = el(&format!("<message xmlns='jabber:client' type='{t}'/>"));
            check(Kind::Message, &mut m).unwrap();
            assert_eq!(m.attr("type"), Some(t));
        }
        let mut m = el("<message xmlns='jabber:client'/>");
        check(Kind::Message, &mut m).unwrap();
        assert_eq!(m.attr("type"), None);
    }
}
