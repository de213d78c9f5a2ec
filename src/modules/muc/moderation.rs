//! Taking messages back in a room: a moderator removes anyone's message (XEP-0425 Message
//! Moderation, `urn:xmpp:message-moderate:1`), and an occupant retracts its own (XEP-0424
//! Message Retraction). Either way the room's history keeps a tombstone in place of the
//! message, and every occupant is told which message (by its room stanza-id) is gone.
//!
//! Clients written against XEP-0425 before version 0.3 (`urn:xmpp:message-moderate:0`, the
//! request and the announcement wrapped in XEP-0422 `<apply-to/>`) are still common: their
//! request is accepted too, and every announcement carries both forms, as Prosody's does.

use std::sync::Arc;

use chrono::{SecondsFormat, Utc};
use jid::FullJid;
use minidom::Element;

use super::room::{occupant_id, Role, Room};
use crate::modules::mam::Archiver;
use crate::router::Router;
use crate::stanza::{self, StanzaError};
use crate::xml::ns;

/// A moderation request: the current `<moderate id=…><retract/><reason/></moderate>`, or the
/// legacy `<apply-to id=…><moderate><retract/><reason/></moderate></apply-to>`.
pub(super) fn is_request(payload: &Element) -> bool {
    payload.is("moderate", ns::MESSAGE_MODERATE) || legacy_request(payload).is_some()
}

/// The `<moderate/>` inside a legacy `<apply-to/>` request.
fn legacy_request(payload: &Element) -> Option<&Element> {
    if !payload.is("apply-to", ns::FASTEN) {
        return None;
    }
    payload.get_child("moderate", ns::MESSAGE_MODERATE_0)
}

/// What a request asks, in either form: the message's id and the reason, if any.
fn read_request(request: &Element) -> Result<(&str, Option<String>), StanzaError> {
    let (id, moderate, retract_ns, moderate_ns) = match legacy_request(request) {
        Some(moderate) => (
            request.attr("id"),
            moderate,
            ns::MESSAGE_RETRACT_0,
            ns::MESSAGE_MODERATE_0,
        ),
        None => (
            request.attr("id"),
            request,
            ns::MESSAGE_RETRACT,
            ns::MESSAGE_MODERATE,
        ),
    };
    let id = id
        .filter(|id| !id.is_empty())
        .ok_or_else(|| StanzaError::bad_request().with_text("which message? 'id' is missing"))?;
    if !moderate.has_child("retract", retract_ns) {
        return Err(StanzaError::bad_request().with_text("only <retract/> is supported"));
    }
    let reason = moderate
        .get_child("reason", moderate_ns)
        .map(|r| r.text())
        .filter(|r| !r.is_empty());
    Ok((id, reason))
}

/// A moderation request (see `is_request`) from `from`.
pub(super) async fn moderate(
    router: &Arc<Router>,
    archive: Option<&Archiver>,
    room: &mut Room,
    from: &FullJid,
    request: &Element,
) -> Result<Option<Element>, StanzaError> {
    let (id, reason) = read_request(request)?;
    let moderator = room
        .occupant_by_jid(from)
        .map(|i| &room.occupants[i])
        .filter(|o| o.role == Role::Moderator)
        .ok_or_else(|| StanzaError::forbidden().with_text("only moderators may moderate"))?;
    if room.history.find(id).is_none() {
        return Err(StanzaError::item_not_found());
    }
    let mut moderated = Element::bare("moderated", ns::MESSAGE_MODERATE);
    stanza::set_attr(&mut moderated, "by", room.nick_jid(&moderator.nick));
    moderated.append_child(occupant_id(&moderator.occupant_id));

    let mut retracted = retracted_now();
    retracted.append_child(moderated.clone());
    if let Some(reason) = &reason {
        retracted.append_child(reason_element(reason));
    }
    room.history
        .replace(id, |original| tombstone(original, retracted));

    let mut retract = Element::bare("retract", ns::MESSAGE_RETRACT);
    stanza::set_attr(&mut retract, "id", id);
    retract.append_child(moderated);
    if let Some(reason) = &reason {
        retract.append_child(reason_element(reason));
    }
    let mut announcement = Element::bare("message", ns::CLIENT);
    stanza::set_attr(&mut announcement, "from", room.jid.to_string());
    stanza::set_attr(&mut announcement, "type", "groupchat");
    stanza::set_attr(
        &mut announcement,
        "id",
        format!("moderate-{}", rand::random::<u64>()),
    );
    announcement.append_child(retract);
    announcement.append_child(legacy_announcement(
        id,
        &room.nick_jid(&moderator.nick),
        &moderator.occupant_id,
        reason.as_deref(),
    ));
    // Archived like any room message, so a client catching up through MAM learns of it too
    // (the original stays in the archive; clients hide it when they see this).
    let room_name = room.jid.to_string();
    let archived = match archive {
        Some(archive) => {
            let stored = crate::xml::to_string(&announcement);
            archive
                .append(router, &room_name, &room_name, false, stored)
                .await?
        }
        None => None,
    };
    let id = archived.unwrap_or_else(|| router.ids().next_id());
    let mut stanza_id = Element::bare("stanza-id", ns::STANZA_ID);
    stanza::set_attr(&mut stanza_id, "id", id.to_string());
    stanza::set_attr(&mut stanza_id, "by", room.jid.to_string());
    announcement.append_child(stanza_id);
    room.broadcast_message(router, &announcement).await;
    Ok(None)
}

/// XEP-0424 in a room: an occupant retracting a message of its own. A retraction of another
/// occupant's message is refused; one of a message the room no longer holds is passed on,
/// since clients check the occupant-id themselves (XEP-0424 §8). Returns whether `message`
/// is a retraction (which the room relays but does not keep as history).
pub(super) fn own_retraction(
    room: &mut Room,
    sender_occupant_id: &str,
    message: &Element,
) -> Result<bool, StanzaError> {
    let Some(id) = message
        .get_child("retract", ns::MESSAGE_RETRACT)
        .and_then(|r| r.attr("id"))
    else {
        return Ok(false);
    };
    let Some(original) = room.history.find(id) else {
        return Ok(true);
    };
    let author = original
        .get_child("occupant-id", ns::OCCUPANT_ID)
        .and_then(|o| o.attr("id"));
    if author != Some(sender_occupant_id) {
        return Err(StanzaError::forbidden().with_text("only the author may retract a message"));
    }
    let id = id.to_owned();
    room.history
        .replace(&id, |original| tombstone(original, retracted_now()));
    Ok(true)
}

/// The pre-0.3 XEP-0425 announcement: `<apply-to id=…><moderated by=…><retract/><reason/>
/// </moderated></apply-to>`, in the `:0` namespaces.
fn legacy_announcement(
    id: &str,
    by: &str,
    moderator_occupant_id: &str,
    reason: Option<&str>,
) -> Element {
    let mut moderated = Element::bare("moderated", ns::MESSAGE_MODERATE_0);
    stanza::set_attr(&mut moderated, "by", by);
    moderated.append_child(Element::bare("retract", ns::MESSAGE_RETRACT_0));
    moderated.append_child(occupant_id(moderator_occupant_id));
    if let Some(reason) = reason {
        let mut el = Element::bare("reason", ns::MESSAGE_MODERATE_0);
        el.append_text(reason.to_owned());
        moderated.append_child(el);
    }
    let mut apply_to = Element::bare("apply-to", ns::FASTEN);
    stanza::set_attr(&mut apply_to, "id", id);
    apply_to.append_child(moderated);
    apply_to
}

fn retracted_now() -> Element {
    let mut retracted = Element::bare("retracted", ns::MESSAGE_RETRACT);
    stanza::set_attr(
        &mut retracted,
        "stamp",
        Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
    );
    retracted
}

fn reason_element(reason: &str) -> Element {
    let mut el = Element::bare("reason", ns::MESSAGE_MODERATE);
    el.append_text(reason.to_owned());
    el
}

/// What history keeps of a retracted message: who sent it and its ids, not what it said.
fn tombstone(original: &Element, retracted: Element) -> Element {
    let mut kept = Element::bare("message", ns::CLIENT);
    for name in ["from", "type", "id"] {
        if let Some(value) = original.attr(name) {
            stanza::set_attr(&mut kept, name, value);
        }
    }
    for child in original.children() {
        if child.is("stanza-id", ns::STANZA_ID) || child.is("occupant-id", ns::OCCUPANT_ID) {
            kept.append_child(child.clone());
        }
    }
    kept.append_child(retracted);
    kept
}
