//! Roster items on the wire (RFC 6121 §2.1.2): building `<item/>` and reading a roster set.

use jid::BareJid;
use minidom::Element;

use crate::stanza::{self, Condition, ErrorType, StanzaError};
use crate::storage::RosterItem;
use crate::xml::ns;

/// Longest item name or group name accepted (RFC 6121 §2.3.3 lets the server pick a limit).
pub const MAX_NAME_BYTES: usize = 1024;
/// Most groups one item may be in.
pub const MAX_GROUPS: usize = 64;

/// `<item/>` as a roster result or push carries it.
pub fn item_element(item: &RosterItem) -> Element {
    let mut el = Element::bare("item", ns::ROSTER);
    stanza::set_attr(&mut el, "jid", item.contact.clone());
    if let Some(name) = &item.name {
        stanza::set_attr(&mut el, "name", name.clone());
    }
    stanza::set_attr(&mut el, "subscription", item.subscription.as_str());
    if item.ask {
        stanza::set_attr(&mut el, "ask", "subscribe");
    }
    if item.approved {
        stanza::set_attr(&mut el, "approved", "true");
    }
    for group in &item.groups {
        el.append_child(
            Element::builder("group", ns::ROSTER)
                .append(group.as_str())
                .build(),
        );
    }
    el
}

/// The push for a removed item.
pub fn removed_item_element(contact: &str) -> Element {
    let mut el = Element::bare("item", ns::ROSTER);
    stanza::set_attr(&mut el, "jid", contact);
    stanza::set_attr(&mut el, "subscription", "remove");
    el
}

/// What a client asked for in a roster set.
#[derive(Debug)]
pub enum RosterSet {
    Update {
        contact: BareJid,
        name: Option<String>,
        groups: Vec<String>,
    },
    Remove {
        contact: BareJid,
    },
}

fn not_acceptable(text: &str) -> StanzaError {
    StanzaError::new(ErrorType::Modify, Condition::NotAcceptable).with_text(text)
}

/// Reads a roster set's `<query/>`, with the errors RFC 6121 §2.3.3 names.
pub fn parse_set(query: &Element) -> Result<RosterSet, StanzaError> {
    let mut items = query.children().filter(|c| c.is("item", ns::ROSTER));
    let (Some(item), None) = (items.next(), items.next()) else {
        return Err(StanzaError::bad_request().with_text("a roster set carries exactly one item"));
    };
    let jid = item
        .attr("jid")
        .ok_or_else(|| StanzaError::bad_request().with_text("the item has no jid"))?;
    let contact = match jid::Jid::new(jid) {
        Ok(jid) if jid.resource().is_none() => jid.to_bare(),
        // A full JID is not a contact: the roster holds bare JIDs (§2.1.2.2).
        _ => return Err(StanzaError::jid_malformed()),
    };
    if item.attr("subscription") == Some("remove") {
        return Ok(RosterSet::Remove { contact });
    }
    // Any other `subscription` (and any `ask`) from a client is ignored (§2.1.2.5, §2.1.2.1).
    let name = item.attr("name").map(str::to_owned);
    if name.as_ref().is_some_and(|n| n.len() > MAX_NAME_BYTES) {
        return Err(not_acceptable("the item name is too long"));
    }
    let mut groups: Vec<String> = Vec::new();
    for group in item.children().filter(|c| c.is("group", ns::ROSTER)) {
        let group = group.text();
        if group.is_empty() {
            return Err(not_acceptable("empty group name"));
        }
        if group.len() > MAX_NAME_BYTES {
            return Err(not_acceptable("the group name is too long"));
        }
        if groups.contains(&group) {
            return Err(StanzaError::bad_request().with_text("duplicate group"));
        }
        groups.push(group);
    }
    if groups.len() > MAX_GROUPS {
        return Err(not_acceptable("too many groups"));
    }
    Ok(RosterSet::Update {
        contact,
        name,
        groups,
    })
}
