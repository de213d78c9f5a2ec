//! Messages to a room (XEP-0045 §7.4 groupchat, §8.1 subject, §7.8.2 mediated invitations)
//! and to an occupant's nick (§7.5 private messages).

use std::sync::Arc;
use std::time::Instant;

use jid::{BareJid, FullJid, Jid};
use minidom::Element;

use super::config::AllowPm;
use super::room::{occupant_id, Affiliation, Role, Room};
use super::Muc;
use crate::limits::bucket::Rate;
use crate::modules::mam::Archiver;
use crate::router::Router;
use crate::stanza::{self, Condition, ErrorType, Kind, StanzaError};
use crate::xml::ns;

pub(super) async fn handle(
    muc: &Muc,
    router: &Arc<Router>,
    room_jid: &BareJid,
    nick: Option<String>,
    from: FullJid,
    message: Element,
) {
    // Errors are bounces of what the room sent; a room does not answer them.
    if stanza::is_error(&message) {
        return;
    }
    let Some(handle) = muc.room(room_jid) else {
        router.bounce(&message, StanzaError::item_not_found());
        return;
    };
    let mut room = handle.lock().await;
    if room.gone || (room.locked && room.occupant_by_jid(&from).is_none()) {
        router.bounce(&message, StanzaError::item_not_found());
        return;
    }
    let is_groupchat = stanza::stanza_type(&message) == "groupchat";
    let result = match (nick, is_groupchat) {
        // §7.5: groupchat is for the whole room, never for one nick.
        (Some(_), true) => Err(StanzaError::bad_request()),
        (Some(nick), false) => private(router, &room, &nick, &from, message.clone()).await,
        (None, true) => {
            let service = Service {
                archive: muc.archive.as_deref(),
                rate: muc.message_rate.as_ref(),
            };
            groupchat(router, service, &mut room, &from, message.clone()).await
        }
        (None, false) => to_room(muc, router, &mut room, &from, &message).await,
    };
    if let Err(error) = result {
        router.bounce(&message, error);
    }
}

/// What the service brings to a groupchat message besides the room.
struct Service<'a> {
    archive: Option<&'a Archiver>,
    rate: Option<&'a Rate>,
}

async fn groupchat(
    router: &Arc<Router>,
    service: Service<'_>,
    room: &mut Room,
    from: &FullJid,
    message: Element,
) -> Result<(), StanzaError> {
    let Some(index) = room.occupant_by_jid(from) else {
        return Err(StanzaError::not_acceptable().with_text("Only occupants may speak"));
    };
    let sender = &room.occupants[index];
    let subject = message.get_child("subject", ns::CLIENT).map(|s| s.text());
    let has_body = message.has_child("body", ns::CLIENT);
    if sender.role < Role::Participant {
        return Err(StanzaError::forbidden().with_text("Visitors have no voice"));
    }
    // Counted before anything is applied, broadcast or archived. Every groupchat message
    // counts, chat states and markers too: each costs one stanza per occupant all the same.
    if let (Some(rate), Some(budget)) = (service.rate, room.occupants[index].budget.as_mut()) {
        if let Err(exhausted) = budget.take(rate, Instant::now()) {
            return Err(
                StanzaError::new(ErrorType::Wait, Condition::PolicyViolation)
                    .with_text(format!("You are sending messages too fast: {exhausted}")),
            );
        }
    }
    let sender = &room.occupants[index];
    if let (Some(subject), false) = (&subject, has_body) {
        // §8.1: moderators, or participants if the room lets them.
        let allowed = sender.role == Role::Moderator || room.config.change_subject;
        if !allowed {
            return Err(StanzaError::forbidden());
        }
        room.subject = subject.clone();
        room.subject_nick = sender.nick.clone();
        if room.is_stored() {
            super::persist::save_room(router, room).await;
        }
    }
    let sender_occupant_id = sender.occupant_id.clone();
    let is_retraction = super::moderation::own_retraction(room, &sender_occupant_id, &message)?;
    let sender = &room.occupants[index];
    let room_name = room.jid.to_string();
    let mut out = message;
    stanza::remove_attr(&mut out, "to");
    // Only the room may say which id it gave a message (XEP-0359 §3) and who sent it
    // (XEP-0421): whatever the sender put there is dropped.
    while out.remove_child("stanza-id", ns::STANZA_ID).is_some() {}
    while out.remove_child("occupant-id", ns::OCCUPANT_ID).is_some() {}
    stanza::set_attr(&mut out, "from", room.nick_jid(&sender.nick));
    out.append_child(occupant_id(&sender.occupant_id));
    // XEP-0313 room archive: the archive's id is the stanza-id, taken in the writer's order.
    let archivable = has_body
        && subject.is_none()
        && !out.has_child("no-store", ns::HINTS)
        && !out.has_child("no-permanent-store", ns::HINTS);
    let archived = match service.archive {
        Some(archive) if archivable => {
            let stored = crate::xml::to_string(&out);
            archive
                .append(router, &room_name, &room_name, false, stored)
                .await?
        }
        _ => None,
    };
    let id = archived.unwrap_or_else(|| router.ids().next_id());
    let mut stanza_id = Element::bare("stanza-id", ns::STANZA_ID);
    stanza::set_attr(&mut stanza_id, "id", id.to_string());
    stanza::set_attr(&mut stanza_id, "by", room_name);
    out.append_child(stanza_id);
    if has_body && subject.is_none() && !is_retraction {
        room.history.push(out.clone());
    }
    room.broadcast_message(router, &out).await;
    Ok(())
}

/// §7.5: a private message to one occupant, from the sender's nick.
async fn private(
    router: &Arc<Router>,
    room: &Room,
    nick: &str,
    from: &FullJid,
    mut message: Element,
) -> Result<(), StanzaError> {
    let Some(sender) = room.occupant_by_jid(from).map(|i| &room.occupants[i]) else {
        return Err(StanzaError::not_acceptable());
    };
    let allowed = match room.config.allow_pm {
        AllowPm::Anyone => true,
        AllowPm::Participants => sender.role >= Role::Participant,
        AllowPm::Moderators => sender.role == Role::Moderator,
        AllowPm::None => false,
    };
    if !allowed {
        return Err(StanzaError::forbidden());
    }
    let Some(target) = room.occupant_by_nick(nick).map(|i| &room.occupants[i]) else {
        return Err(StanzaError::item_not_found());
    };
    stanza::set_attr(&mut message, "from", room.nick_jid(&sender.nick));
    stanza::set_attr(&mut message, "to", target.jid.to_string());
    // XEP-0045 §7.5: marks it as a MUC private message so clients thread it right.
    if !message.has_child("x", ns::MUC_USER) {
        message.append_child(Element::bare("x", ns::MUC_USER));
    }
    router
        .route(Kind::Message, Jid::from(target.jid.clone()), message)
        .await;
    Ok(())
}

/// Non-groupchat messages to the room itself: invitations and declines (§7.8.2), voice
/// requests and their approvals (§7.13, §8.6).
async fn to_room(
    muc: &Muc,
    router: &Arc<Router>,
    room: &mut Room,
    from: &FullJid,
    message: &Element,
) -> Result<(), StanzaError> {
    if let Some(form) = super::voice::request_form(message) {
        return super::voice::handle(router, room, from, &form).await;
    }
    let Some(x) = message.get_child("x", ns::MUC_USER) else {
        return Err(StanzaError::bad_request());
    };
    if let Some(decline) = x.get_child("decline", ns::MUC_USER) {
        return forward_decline(muc, router, room, from, decline).await;
    }
    let invites: Vec<&Element> = x
        .children()
        .filter(|c| c.is("invite", ns::MUC_USER))
        .collect();
    if invites.is_empty() {
        return Err(StanzaError::bad_request());
    }
    let Some(index) = room.occupant_by_jid(from) else {
        return Err(StanzaError::not_acceptable());
    };
    let inviter_role = room.occupants[index].role;
    let inviter_affiliation = room.affiliation(&from.to_bare());
    let allowed = room.config.allow_invites
        || inviter_role == Role::Moderator
        || inviter_affiliation >= Affiliation::Admin;
    if !allowed {
        return Err(StanzaError::forbidden());
    }
    let mut targets = Vec::new();
    for invite in &invites {
        let Some(to) = invite.attr("to").and_then(|t| Jid::new(t).ok()) else {
            return Err(StanzaError::jid_malformed());
        };
        // Invitations go to users, never to another room of this service (which could
        // wait on this room's lock).
        if muc.serves(to.domain().as_str()) {
            return Err(StanzaError::bad_request());
        }
        let reason = invite
            .get_child("reason", ns::MUC_USER)
            .map(|r| r.text())
            .unwrap_or_default();
        targets.push((to, reason));
    }
    for (to, reason) in targets {
        let invitee = to.to_bare();
        // §9.3: in a members-only room, an invitation by someone allowed to invite makes the
        // invitee a member, so that the invitation can be used.
        if room.config.members_only && room.affiliation(&invitee) == Affiliation::None {
            let room_jid = room.jid.clone();
            if room.affiliations.len() < muc.limits.max_affiliations_per_room as usize {
                room.affiliations
                    .insert(invitee.clone(), Affiliation::Member);
                if room.is_stored() {
                    super::persist::save_affiliation(
                        router,
                        &room_jid,
                        &invitee,
                        Affiliation::Member,
                    )
                    .await;
                }
            }
        }
        let invitation = invitation(room, from, &to, &reason);
        router.route(Kind::Message, to, invitation).await;
    }
    Ok(())
}

fn invitation(room: &Room, from: &FullJid, to: &Jid, reason: &str) -> Element {
    let mut message = Element::bare("message", ns::CLIENT);
    stanza::set_attr(&mut message, "from", room.jid.to_string());
    stanza::set_attr(&mut message, "to", to.to_string());
    stanza::set_attr(&mut message, "id", format!("muc-{}", rand::random::<u64>()));
    let mut x = Element::bare("x", ns::MUC_USER);
    let mut invite = Element::bare("invite", ns::MUC_USER);
    stanza::set_attr(&mut invite, "from", from.to_string());
    if !reason.is_empty() {
        invite.append_child(
            Element::builder("reason", ns::MUC_USER)
                .append(reason)
                .build(),
        );
    }
    x.append_child(invite);
    if room.config.password_protected {
        x.append_child(
            Element::builder("password", ns::MUC_USER)
                .append(room.config.password.as_str())
                .build(),
        );
    }
    message.append_child(x);
    // For clients without MUC support, a readable line.
    message.append_child(
        Element::builder("body", ns::CLIENT)
            .append(format!(
                "{} invites you to the room {}",
                from.to_bare(),
                room.jid
            ))
            .build(),
    );
    message
}

/// §7.8.2: the invitee declines; the room tells the inviter.
async fn forward_decline(
    muc: &Muc,
    router: &Arc<Router>,
    room: &Room,
    from: &FullJid,
    decline: &Element,
) -> Result<(), StanzaError> {
    let Some(to) = decline.attr("to").and_then(|t| Jid::new(t).ok()) else {
        return Err(StanzaError::bad_request());
    };
    if muc.serves(to.domain().as_str()) {
        return Err(StanzaError::bad_request());
    }
    let mut message = Element::bare("message", ns::CLIENT);
    stanza::set_attr(&mut message, "from", room.jid.to_string());
    stanza::set_attr(&mut message, "to", to.to_string());
    let mut x = Element::bare("x", ns::MUC_USER);
    let mut out = Element::bare("decline", ns::MUC_USER);
    stanza::set_attr(&mut out, "from", from.to_bare().to_string());
    if let Some(reason) = decline.get_child("reason", ns::MUC_USER) {
        out.append_child(reason.clone());
    }
    x.append_child(out);
    message.append_child(x);
    router.route(Kind::Message, to, message).await;
    Ok(())
}
