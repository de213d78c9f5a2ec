//! Service discovery (XEP-0045 §6) on the service and on each room, with the
//! `muc#roominfo` extended form (XEP-0128) on rooms.

use std::collections::HashSet;
use std::sync::Arc;

use jid::BareJid;
use minidom::Element;
use xmpp_parsers::disco::{DiscoInfoResult, DiscoItemsResult, Identity, Item};

use super::room::Room;
use super::Muc;
use crate::router::Router;
use crate::xml::forms::{self, DataForm, Field, FieldType};
use crate::xml::ns;

/// Features of the service itself; `tests/xeps.rs` checks these against `xeps.toml`.
pub const SERVICE_FEATURES: &[&str] = &[
    ns::DISCO_INFO,
    ns::DISCO_ITEMS,
    ns::MUC,
    ns::OCCUPANT_ID,
    ns::PING,
];

fn identity(name: &str) -> Identity {
    Identity {
        category: "conference".to_owned(),
        type_: "text".to_owned(),
        lang: None,
        name: Some(name.to_owned()),
    }
}

/// A disco#info answer, for the node the request named if any.
fn info(request: &Element, name: &str, features: &[&str], extensions: Vec<DataForm>) -> Element {
    DiscoInfoResult {
        node: request.attr("node").map(str::to_owned),
        identities: vec![identity(name)],
        features: features.iter().map(|&var| var.to_owned()).collect(),
        extensions,
    }
    .into()
}

pub(super) fn service_info(request: &Element) -> Element {
    info(request, "Chatrooms", SERVICE_FEATURES, Vec::new())
}

/// Public rooms of the `service` domain that are configured (locked ones do not exist yet for
/// anyone else). On a cluster, the persistent ones other nodes serve are listed from storage;
/// temporary rooms are listed by the node serving them only (they live in its memory, and
/// asking every node on every request would make the list as slow as the slowest node).
pub(super) async fn service_items(muc: &Muc, router: &Arc<Router>, service: &str) -> Element {
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
        items.push((room.jid.to_string(), room.jid.clone(), name));
    }
    if router.cluster().is_some() {
        let served_here: HashSet<BareJid> = muc.all_rooms_jids();
        for (jid, name) in super::cluster::stored_public_rooms(muc, router, service).await {
            if served_here.contains(&jid) {
                continue;
            }
            let name = if name.is_empty() {
                jid.node().map(|n| n.to_string()).unwrap_or_default()
            } else {
                name
            };
            items.push((jid.to_string(), jid, name));
        }
    }
    items.sort();
    DiscoItemsResult {
        node: None,
        items: items
            .into_iter()
            .map(|(_, jid, name)| Item {
                jid: jid.into(),
                node: None,
                name: Some(name),
            })
            .collect(),
        rsm: None,
    }
    .into()
}

/// A `muc#roominfo` field: values only, so no type and no label.
fn info_field(var: &str, value: &str) -> Field {
    forms::field(var, FieldType::TextSingle, "", value)
}

/// §6.4: the room's identity, its `muc_*` features and the `muc#roominfo` form.
pub(super) fn room_info(room: &Room, request: &Element, archived: bool) -> Element {
    let name = if room.config.name.is_empty() {
        room.jid.node().map(|n| n.to_string()).unwrap_or_default()
    } else {
        room.config.name.clone()
    };
    let c = &room.config;
    let pick = |on: bool, yes: &'static str, no: &'static str| if on { yes } else { no };
    let mut features = vec![
        ns::MUC,
        ns::DISCO_INFO,
        ns::DISCO_ITEMS,
        ns::STANZA_ID,
        ns::OCCUPANT_ID,
        ns::MUC_SELF_PING,
        ns::MESSAGE_MODERATE,
        ns::MESSAGE_MODERATE_0,
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
    if archived {
        features.push(ns::MAM);
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
    info(request, &name, &features, vec![form])
}
