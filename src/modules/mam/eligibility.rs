//! What gets archived (XEP-0313 §5.1.1 and XEP-0334), and XEP-0359 §6 stanza-id hygiene.

use jid::Jid;
use minidom::{Element, Node};

use crate::modules::message_kinds;
use crate::stanza;
use crate::xml::ns;

/// End-to-end encrypted payloads: archived even without a `<body/>` (OMEMO key-transport
/// and heartbeat messages aside, these are the conversation).
const ENCRYPTED: [(&str, &str); 4] = [
    ("encrypted", ns::OMEMO_LEGACY),
    ("encrypted", ns::OMEMO_2),
    ("openpgp", ns::OPENPGP),
    ("x", ns::LEGACY_PGP),
];

/// A chat/normal message worth keeping: it has a body or an encrypted payload, or it is call
/// signalling (XEP-0353: every device learns of a call and its end from the archive), a
/// delivery receipt or a chat marker (other devices sync delivered/read state from the
/// archive, as Prosody's archive keeps them too), and the sender did not ask for it not to
/// be stored (`<no-store/>`, `<no-permanent-store/>`).
pub fn worth_archiving(message: &Element) -> bool {
    if !matches!(stanza::stanza_type(message), "chat" | "normal") {
        return false;
    }
    if message.has_child("no-store", ns::HINTS)
        || message.has_child("no-permanent-store", ns::HINTS)
    {
        return false;
    }
    if message.has_child("store", ns::HINTS) {
        return true;
    }
    message.has_child("body", ns::CLIENT)
        || message_kinds::is_call_signal(message)
        || message_kinds::is_receipt_or_marker(message)
        || ENCRYPTED
            .iter()
            .any(|(name, namespace)| message.has_child(*name, *namespace))
}

/// Removes every `<stanza-id xmlns='urn:xmpp:sid:0'/>` claiming to be from `by` (a bare JID):
/// only this server may say what id `by`'s archive gave a message (XEP-0359 §6).
pub fn strip_stanza_ids(message: &mut Element, by: &str) {
    let spoofed = |el: &Element| {
        el.is("stanza-id", ns::STANZA_ID)
            && el
                .attr("by")
                .is_none_or(|claimed| same_bare_jid(claimed, by))
    };
    if !message.children().any(spoofed) {
        return;
    }
    let nodes = message.take_nodes();
    for node in nodes {
        match node {
            Node::Element(el) if spoofed(&el) => {}
            node => message.append_node(node),
        }
    }
}

/// `claimed` names the bare JID `by` (normalised the same way), with or without a resource.
fn same_bare_jid(claimed: &str, by: &str) -> bool {
    match Jid::new(claimed) {
        Ok(jid) => jid.to_bare().as_str() == by,
        Err(_) => claimed == by,
    }
}

/// `<stanza-id xmlns='urn:xmpp:sid:0' id=… by=…/>`.
pub fn stanza_id(id: i64, by: &str) -> Element {
    let mut el = Element::bare("stanza-id", ns::STANZA_ID);
    stanza::set_attr(&mut el, "id", id.to_string());
    stanza::set_attr(&mut el, "by", by);
    el
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    #[test]
    fn bodies_and_encrypted_payloads_are_archived_hints_respected() {
        let m = |inner: &str| {
            parse(&format!(
                "<message xmlns='jabber:client' type='chat'>{inner}</message>"
            ))
        };
        assert!(worth_archiving(&m("<body>hi</body>")));
        assert!(!worth_archiving(&m(
            "<active xmlns='http://jabber.org/protocol/chatstates'/>"
        )));
        assert!(worth_archiving(&m(
            "<encrypted xmlns='eu.siacs.conversations.axolotl'/>"
        )));
        assert!(worth_archiving(&m("<encrypted xmlns='urn:xmpp:omemo:2'/>")));
        assert!(!worth_archiving(&m(
            "<body>hi</body><no-store xmlns='urn:xmpp:hints'/>"
        )));
        assert!(!worth_archiving(&m(
            "<body>hi</body><no-permanent-store xmlns='urn:xmpp:hints'/>"
        )));
        assert!(worth_archiving(&m("<store xmlns='urn:xmpp:hints'/>")));
        // Call signalling, receipts and markers, even without a <store/> hint.
        assert!(worth_archiving(&m(
            "<propose xmlns='urn:xmpp:jingle-message:0' id='c'/>"
        )));
        assert!(worth_archiving(&m(
            "<finish xmlns='urn:xmpp:jingle-message:0' id='c'/>"
        )));
        assert!(worth_archiving(&m(
            "<received xmlns='urn:xmpp:receipts' id='r'/>"
        )));
        assert!(worth_archiving(&m(
            "<displayed xmlns='urn:xmpp:chat-markers:0' id='r'/>"
        )));
        assert!(!worth_archiving(&m(
            "<displayed xmlns='urn:xmpp:chat-markers:0' id='r'/><no-store xmlns='urn:xmpp:hints'/>"
        )));
        let groupchat =
            parse("<message xmlns='jabber:client' type='groupchat'><body>x</body></message>");
        assert!(!worth_archiving(&groupchat));
    }

    #[test]
    fn only_stanza_ids_claiming_the_owner_are_stripped() {
        let mut m = parse(
            "<message xmlns='jabber:client'><body>x</body>\
             <stanza-id xmlns='urn:xmpp:sid:0' id='1' by='Juliet@Example.org'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' id='2' by='room@muc.example.org'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' id='3' by='juliet@example.org'/></message>",
        );
        strip_stanza_ids(&mut m, "juliet@example.org");
        let left: Vec<_> = m
            .children()
            .filter(|c| c.is("stanza-id", ns::STANZA_ID))
            .map(|c| c.attr("id").unwrap().to_string())
            .collect();
        assert_eq!(left, vec!["2"]);
        assert!(m.has_child("body", ns::CLIENT));
    }
}
