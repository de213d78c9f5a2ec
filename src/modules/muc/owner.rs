//! `muc#owner` (XEP-0045 §10): the configuration form, instant and reserved rooms, and
//! destroying a room.

use std::sync::Arc;

use jid::{FullJid, Jid};
use minidom::Element;

use super::config::{apply_form, form};
use super::join::remove_occupant;
use super::persist;
use super::room::{Affiliation, ItemExtra, Room};
use super::Muc;
use crate::router::Router;
use crate::stanza::{self, Kind, StanzaError};
use crate::xml::ns;

pub(super) async fn handle(
    muc: &Muc,
    router: &Arc<Router>,
    room: &mut Room,
    from: &FullJid,
    is_get: bool,
    query: &Element,
) -> Result<Option<Element>, StanzaError> {
    if room.affiliation(&from.to_bare()) != Affiliation::Owner {
        return Err(StanzaError::forbidden());
    }
    if is_get {
        let mut answer = Element::bare("query", ns::MUC_OWNER);
        answer.append_child(form(&room.config, &muc.limits));
        return Ok(Some(answer));
    }
    if let Some(destroy) = query.get_child("destroy", ns::MUC_OWNER) {
        let reason = destroy.get_child("reason", ns::MUC_OWNER).map(|r| r.text());
        destroy_room(muc, router, room, destroy.attr("jid"), reason.as_deref()).await;
        return Ok(None);
    }
    let Some(x) = query.get_child("x", ns::DATA_FORMS) else {
        return Err(StanzaError::bad_request());
    };
    match x.attr("type") {
        Some("submit") => configure(muc, router, room, x).await.map(|()| None),
        // §10.1.3: cancelling the initial configuration destroys the new room.
        Some("cancel") => {
            if room.locked {
                destroy_room(muc, router, room, None, None).await;
            }
            Ok(None)
        }
        _ => Err(StanzaError::bad_request()),
    }
}

async fn configure(
    muc: &Muc,
    router: &Arc<Router>,
    room: &mut Room,
    form: &Element,
) -> Result<(), StanzaError> {
    let config = apply_form(form, &room.config, &muc.limits)
        .map_err(|e| StanzaError::not_acceptable().with_text(e.to_string()))?;
    let was_locked = room.locked;
    let was_stored = room.is_stored();
    let old = std::mem::replace(&mut room.config, config);
    room.locked = false;
    match (was_stored, room.is_stored()) {
        (false, true) => persist::save_all(router, room).await,
        (true, true) => persist::save_room(router, room).await,
        (true, false) => persist::delete(router, &room.jid).await,
        (false, false) => {}
    }
    if !was_locked {
        // §10.2.1: occupants learn that the configuration changed, and how privacy did.
        let mut codes = vec![104];
        if old.non_anonymous != room.config.non_anonymous {
            codes.push(if room.config.non_anonymous { 172 } else { 173 });
        }
        let notice = room.status_message(&codes);
        room.broadcast_message(router, &notice).await;
    }
    if room.config.members_only && !old.members_only {
        // §9.x: a room turned members-only removes non-members, status 322.
        let outsiders: Vec<usize> = (0..room.occupants.len())
            .rev()
            .filter(|i| room.affiliation(&room.occupants[*i].jid.to_bare()) < Affiliation::Member)
            .collect();
        for index in outsiders {
            if room.gone {
                break;
            }
            room.occupants[index].presence = Element::bare("presence", ns::CLIENT);
            remove_occupant(muc, router, room, index, &[322], ItemExtra::default()).await;
        }
    }
    if !room.gone && room.occupants.is_empty() && !room.config.persistent {
        muc.forget(room);
    }
    Ok(())
}

/// §10.9: everyone gets unavailable presence carrying `<destroy/>` (with the alternate venue
/// and reason), and the room is gone from memory and storage.
pub(super) async fn destroy_room(
    muc: &Muc,
    router: &Arc<Router>,
    room: &mut Room,
    alternate: Option<&str>,
    reason: Option<&str>,
) {
    for occupant in &room.occupants {
        let mut presence = Element::bare("presence", ns::CLIENT);
        stanza::set_attr(&mut presence, "from", room.nick_jid(&occupant.nick));
        stanza::set_attr(&mut presence, "to", occupant.jid.to_string());
        stanza::set_attr(&mut presence, "type", "unavailable");
        let mut x = Element::bare("x", ns::MUC_USER);
        let mut item = Element::bare("item", ns::MUC_USER);
        stanza::set_attr(&mut item, "affiliation", "none");
        stanza::set_attr(&mut item, "role", "none");
        x.append_child(item);
        let mut destroy = Element::bare("destroy", ns::MUC_USER);
        if let Some(alternate) = alternate {
            stanza::set_attr(&mut destroy, "jid", alternate);
        }
        if let Some(reason) = reason {
            destroy.append_child(
                Element::builder("reason", ns::MUC_USER)
                    .append(reason)
                    .build(),
            );
        }
        x.append_child(destroy);
        x.append_child(super::room::status(110));
        presence.append_child(x);
        router
            .route(Kind::Presence, Jid::from(occupant.jid.clone()), presence)
            .await;
    }
    room.occupants.clear();
    if room.config.persistent {
        persist::delete(router, &room.jid).await;
    }
    muc.forget(room);
}
