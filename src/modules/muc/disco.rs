//! Service discovery (XEP-0045 §6) on the service and on each room, with the
//! `muc#roominfo` extended form (XEP-0128) on rooms.

use minidom::Element;

use super::room::Room;
use super::Muc;
use crate::stanza;
use crate::xml::forms::{self, Field, FieldType};
use crate::xml::ns;

/// Features of the service itself; `tests/xeps.rs` checks these against `xeps.toml`.
pub const SERVICE_FEATURES: &[&str] = &[
    ns::DISCO_INFO,
    ns::DISCO_ITEMS,
    ns::MUC,
    ns::OCCUPANT_ID,
    ns::PING,
];

fn identity(name: &str) -> Element {
    let mut identity = Element::bare("identity", ns::DISCO_INFO);
    stanza::set_attr(&mut identity, "category", "conference");
    stanza::set_attr(&mut identity, "type", "text");
    stanza::set_attr(&mut identity, "name", name);
    identity
}

fn feature(var: &str) -> Element {
    let mut el = Element::bare("feature", ns::DISCO_INFO);
    stanza::set_attr(&mut el, "var", var);
    el
}

fn with_node(mut query: Element, request: &Element) -> Element {
    if let Some(node) = request.attr("node") {
        stanza::set_attr(&mut query, "node", node);
    }
    query
}

pub(super) fn service_info(request: &Element) -> Element {
    let mut query = with_node(Element::bare("query", ns::DISCO_INFO), request);
    query.append_child(identity("Chatrooms"));
    for var in SERVICE_FEATURES {
        query.append_child(feature(var));
    }
    query
}

/// Public rooms of the `service` domain that are configured (locked ones do not exist yet for
/// anyone else).
pub(super) async fn service_items(muc: &Muc, service: &str) -> Element {
    let mut items = Vec::new();
    for handle in muc.all_rooms() {
        let room = handle.lock().await;
        if room.gone || room.locked || !room.config.public || room.jid.domain().as_str() != service
        {
            continue;
        }
        let name = if room.config.name.is_empty() {
            room.jid.node().map(|n| n.to_string()).unwrap_or_default()
        } else {
            room.config.name.clone()
        };
        items.push((room.jid.to_string(), name));
    }
    items.sort();
    let mut query = Element::bare("query", ns::DISCO_ITEMS);
    for (jid, name) in items {
        let mut item = Element::bare("item", ns::DISCO_ITEMS);
        stanza::set_attr(&mut item, "jid", jid);
        stanza::set_attr(&mut item, "name", name);
        query.append_child(item);
    }
    query
}

/// A `muc#roominfo` field: values only, so no type and no label.
fn info_field(var: &str, value: &str) -> Field {
    forms::field(var, FieldType::TextSingle, "", value)
}

/// §6.4: the room's identity, its `muc_*` features and the `muc#roominfo` form.
pub(super) fn room_info(room: &Room, request: &Element, archived: bool) -> Element {
    let mut query = with_node(Element::bare("query", ns::DISCO_INFO), request);
    let name = if room.config.name.is_empty() {
        room.jid.node().map(|n| n.to_string()).unwrap_or_default()
    } else {
        room.config.name.clone()
    };
    query.append_child(identity(&name));
    let c = &room.config;
    let pick = |on: bool, yes: &'static str, no: &'static str| if on { yes } else { no };
    let features = [
        ns::MUC,
        ns::DISCO_INFO,
        ns::DISCO_ITEMS,
        ns::STANZA_ID,
        ns::OCCUPANT_ID,
        ns::MUC_SELF_PING,
        ns::MESSAGE_MODERATE,
        ns::MESSAGE_RETRACT,
        pick(c.persistent, "muc_persistent", "muc_temporary"),
        pick(c.members_only, "muc_membersonly", "muc_open"),
        pick(c.moderated, "muc_moderated", "muc_unmoderated"),
        pick(c.non_anonymous, "muc_nonanonymous", "muc_semianonymous"),
        pick(
            c.password_protected,
            "muc_passwordprotected",
            "muc_unsecured",
        ),
        pick(c.public, "muc_public", "muc_hidden"),
    ];
    for var in features {
        query.append_child(feature(var));
    }
    if archived {
        query.append_child(feature(ns::MAM));
    }
    let fields = vec![
        info_field("muc#roomconfig_roomname", &name),
        info_field("muc#roominfo_description", &c.description),
        info_field("muc#roominfo_occupants", &room.occupants.len().to_string()),
        info_field("muc#roominfo_subject", &room.subject),
        info_field(
            "muc#roominfo_subjectmod",
            forms::bool_value(c.change_subject),
        ),
        info_field("muc#maxhistoryfetch", &c.history_length.to_string()),
        info_field("muc#roomconfig_maxusers", &c.max_users.to_string()),
    ];
    let form = forms::result(ns::MUC_ROOMINFO, fields);
    query.append_child(form);
    query
}
