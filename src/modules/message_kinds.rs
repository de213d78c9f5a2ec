//! What a bodiless one-to-one message is about, for the modules that decide whether to copy
//! (XEP-0280), archive (XEP-0313), store offline (XEP-0160) or push (XEP-0357) it: call
//! signalling (XEP-0353), delivery receipts (XEP-0184) and chat markers (XEP-0333) matter to
//! every device of the account although they carry no `<body/>`.

use minidom::Element;

use crate::xml::ns;

/// A XEP-0353 Jingle Message Initiation message (propose, ringing, proceed, accept, reject,
/// retract, finish), in the current namespace or the older `:1` one some clients still send.
pub fn is_call_signal(message: &Element) -> bool {
    message
        .children()
        .any(|child| child.ns() == ns::JINGLE_MESSAGE || child.ns() == ns::JINGLE_MESSAGE_1)
}

/// A `<propose/>`: the message that makes the callee's devices ring (XEP-0353 §3.1).
pub fn is_call_proposal(message: &Element) -> bool {
    message.has_child("propose", ns::JINGLE_MESSAGE)
        || message.has_child("propose", ns::JINGLE_MESSAGE_1)
}

/// A delivery receipt (XEP-0184 `<received/>`) or a chat marker (XEP-0333 `<received/>`,
/// `<displayed/>`, `<acknowledged/>`): the other devices use them to show a message as
/// delivered or read, so they travel like the conversation itself.
pub fn is_receipt_or_marker(message: &Element) -> bool {
    message.has_child("received", ns::RECEIPTS)
        || ["received", "displayed", "acknowledged"]
            .iter()
            .any(|name| message.has_child(name, ns::CHAT_MARKERS))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(inner: &str) -> Element {
        format!("<message xmlns='jabber:client' type='chat'>{inner}</message>")
            .parse()
            .unwrap()
    }

    #[test]
    fn call_signals_receipts_and_markers_are_recognised() {
        let propose = parse("<propose xmlns='urn:xmpp:jingle-message:0' id='a'/>");
        assert!(is_call_signal(&propose) && is_call_proposal(&propose));
        let finish = parse("<finish xmlns='urn:xmpp:jingle-message:0' id='a'/>");
        assert!(is_call_signal(&finish) && !is_call_proposal(&finish));
        assert!(is_call_proposal(&parse(
            "<propose xmlns='urn:xmpp:jingle-message:1' id='a'/>"
        )));
        assert!(is_receipt_or_marker(&parse(
            "<received xmlns='urn:xmpp:receipts' id='x'/>"
        )));
        assert!(is_receipt_or_marker(&parse(
            "<displayed xmlns='urn:xmpp:chat-markers:0' id='x'/>"
        )));
        // A receipt request or a markable message is a body's companion, not a receipt.
        assert!(!is_receipt_or_marker(&parse(
            "<request xmlns='urn:xmpp:receipts'/><markable xmlns='urn:xmpp:chat-markers:0'/>"
        )));
        assert!(!is_call_signal(&parse("<body>hi</body>")));
    }
}
