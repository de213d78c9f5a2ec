//! Presence to `room/nick` (XEP-0045 §7.2–§7.7 and §10.1): entering (creating the room if it
//! does not exist), presence updates, nick changes and leaving.

use std::sync::Arc;
use std::time::Instant;

use jid::{BareJid, FullJid, Jid};
use minidom::Element;

use super::history::HistoryRequest;
use super::room::{public_presence, Affiliation, ItemExtra, Occupant, Role, Room};
use super::Muc;
use crate::limits::bucket::Bucket;
use crate::router::Router;
use crate::stanza::{self, Condition, ErrorType, Kind, StanzaError};
use crate::xml::ns;

/// §7.14 (status 333): the occupant's session ended without leaving the room first.
pub(super) const GONE_WITHOUT_LEAVING: u16 = 333;

pub(super) async fn presence(
    muc: &Muc,
    router: &Arc<Router>,
    room_jid: &BareJid,
    nick: Option<String>,
    from: FullJid,
    presence: Element,
) {
    let presence_type = stanza::stanza_type(&presence);
    let Some(nick) = nick.filter(|n| !n.trim().is_empty()) else {
        // §7.2.1: entering needs a nick.
        if presence_type == "available" {
            router.bounce(&presence, StanzaError::jid_malformed());
        }
        return;
    };
    match presence_type {
        "available" => available(muc, router, room_jid, nick, from, presence).await,
        "unavailable" | "error" => leave(muc, router, room_jid, &from, &presence).await,
        // Subscriptions and probes to a room mean nothing.
        _ => {}
    }
}

async fn available(
    muc: &Muc,
    router: &Arc<Router>,
    room_jid: &BareJid,
    nick: String,
    from: FullJid,
    presence: Element,
) {
    // A room found gone (destroyed or emptied while we waited for its lock) is looked up
    // again: the join may then create a fresh one.
    for _ in 0..3 {
        let found = match muc.room(room_jid) {
            Some(handle) => Ok((handle, false)),
            None => muc.room_or_create(
                room_jid,
                &from.to_bare(),
                router.is_hosted(from.domain().as_str()),
            ),
        };
        let (handle, created) = match found {
            Ok(found) => found,
            Err(error) => {
                router.bounce(&presence, error);
                return;
            }
        };
        let mut room = handle.lock().await;
        if room.gone {
            continue;
        }
        match room.occupant_by_jid(&from) {
            Some(i) if room.occupants[i].nick == nick => {
                room.occupants[i].presence = public_presence(&presence);
                room.broadcast_presence(router, i, true, &[], &[], ItemExtra::default())
                    .await;
            }
            Some(i) => change_nick(router, &mut room, i, nick, &presence).await,
            None => {
                enter(muc, router, &mut room, created, nick, from, &presence).await;
                if created && room.occupants.is_empty() {
                    muc.forget(&mut room);
                }
            }
        }
        return;
    }
    router.bounce(
        &presence,
        StanzaError::new(ErrorType::Wait, Condition::ResourceConstraint),
    );
}

/// Why `user` may not enter, in the order XEP-0045 §7.2 lists the checks.
fn refusal(
    muc: &Muc,
    room: &Room,
    affiliation: Affiliation,
    nick: &str,
    presence: &Element,
) -> Option<StanzaError> {
    if affiliation == Affiliation::Outcast {
        return Some(StanzaError::forbidden());
    }
    if room.locked && affiliation != Affiliation::Owner {
        // §10.1.1: a room awaiting configuration does not exist for anyone but its owner.
        return Some(StanzaError::item_not_found());
    }
    if room.config.members_only && affiliation < Affiliation::Member {
        return Some(StanzaError::new(
            ErrorType::Auth,
            Condition::RegistrationRequired,
        ));
    }
    if room.config.password_protected {
        let given = presence
            .get_child("x", ns::MUC)
            .and_then(|x| x.get_child("password", ns::MUC))
            .map(|p| p.text());
        if given.as_deref() != Some(room.config.password.as_str()) {
            return Some(StanzaError::new(ErrorType::Auth, Condition::NotAuthorized));
        }
    }
    if room.occupant_by_nick(nick).is_some() {
        return Some(StanzaError::conflict());
    }
    let exempt = muc.limits.owners_exempt_from_cap && affiliation >= Affiliation::Admin;
    if !exempt && room.occupants.len() >= room.config.max_users as usize {
        return Some(StanzaError::service_unavailable().with_text("The room is full"));
    }
    None
}

async fn enter(
    muc: &Muc,
    router: &Arc<Router>,
    room: &mut Room,
    created: bool,
    nick: String,
    from: FullJid,
    presence: &Element,
) {
    let user = from.to_bare();
    if created {
        room.affiliations.insert(user.clone(), Affiliation::Owner);
    }
    let affiliation = room.affiliation(&user);
    if let Some(error) = refusal(muc, room, affiliation, &nick, presence) {
        router.bounce(presence, error);
        return;
    }
    let joiner = Occupant {
        nick,
        jid: from,
        role: room.default_role(affiliation),
        occupant_id: muc.occupant_id(&room.jid, &user),
        presence: public_presence(presence),
        budget: muc.message_rate.map(|_| Bucket::full(Instant::now())),
    };
    // §7.2.3: first everyone already there, as the joiner may see them...
    for other in &room.occupants {
        let p = room.presence_of(other, other.role, &joiner, true, &[], ItemExtra::default());
        router
            .route(Kind::Presence, Jid::from(joiner.jid.clone()), p)
            .await;
    }
    let to = joiner.jid.clone();
    room.occupants.push(joiner);
    let index = room.occupants.len() - 1;
    // ...then the joiner to everyone, its own copy last and marked 110.
    let mut self_codes = Vec::new();
    if room.config.non_anonymous {
        self_codes.push(100);
    }
    if created {
        self_codes.push(201);
    }
    room.broadcast_presence(router, index, true, &[], &self_codes, ItemExtra::default())
        .await;
    // §7.2.14, §7.2.15: history, then the subject.
    let request = HistoryRequest::parse(presence.get_child("x", ns::MUC));
    let room_name = room.jid.to_string();
    for mut message in
        room.history
            .select(&request, room.config.history_length as usize, &room_name)
    {
        stanza::set_attr(&mut message, "to", to.to_string());
        router
            .route(Kind::Message, Jid::from(to.clone()), message)
            .await;
    }
    let subject = room.subject_message(&to);
    router.route(Kind::Message, Jid::from(to), subject).await;
}

/// §7.6: unavailable under the old nick with 303 and the new nick, then available under the
/// new one.
async fn change_nick(
    router: &Arc<Router>,
    room: &mut Room,
    index: usize,
    nick: String,
    presence: &Element,
) {
    if room.occupant_by_nick(&nick).is_some() {
        router.bounce(presence, StanzaError::conflict());
        return;
    }
    let extra = ItemExtra {
        nick: Some(&nick),
        ..ItemExtra::default()
    };
    let subject = &room.occupants[index];
    for viewer in &room.occupants {
        let p = room.presence_of(subject, subject.role, viewer, false, &[303], extra);
        router
            .route(Kind::Presence, Jid::from(viewer.jid.clone()), p)
            .await;
    }
    let occupant = &mut room.occupants[index];
    occupant.nick = nick;
    occupant.presence = public_presence(presence);
    room.broadcast_presence(router, index, true, &[], &[], ItemExtra::default())
        .await;
}

async fn leave(
    muc: &Muc,
    router: &Arc<Router>,
    room_jid: &BareJid,
    from: &FullJid,
    presence: &Element,
) {
    let Some(handle) = muc.room(room_jid) else {
        return;
    };
    let mut room = handle.lock().await;
    let Some(index) = room.occupant_by_jid(from) else {
        return;
    };
    room.occupants[index].presence = public_presence(presence);
    // The presence module says goodbye for sessions that end. A client that closed its
    // stream left like one that sent unavailable; any other end (the connection lost, or
    // ended by the server) is the "technical reason" of status 333.
    let lost = muc.departures.is_lost(from);
    let codes: &[u16] = if lost { &[GONE_WITHOUT_LEAVING] } else { &[] };
    remove_occupant(muc, router, &mut room, index, codes, ItemExtra::default()).await;
}

/// Removes occupant `index`, telling everyone (the occupant included) with `codes`; a
/// temporary room left empty goes away.
pub(super) async fn remove_occupant(
    muc: &Muc,
    router: &Arc<Router>,
    room: &mut Room,
    index: usize,
    codes: &[u16],
    extra: ItemExtra<'_>,
) {
    room.broadcast_presence(router, index, false, codes, &[], extra)
        .await;
    room.occupants.remove(index);
    if room.occupants.is_empty() && !room.config.persistent {
        muc.forget(room);
    }
}

/// The role an occupant should have after an affiliation change, keeping voice a moderator
/// granted or revoked when the affiliation does not decide it.
pub(super) fn role_after(room: &Room, current: Role, affiliation: Affiliation) -> Role {
    match affiliation {
        Affiliation::Owner | Affiliation::Admin => Role::Moderator,
        Affiliation::Member if current < Role::Participant => Role::Participant,
        _ if current == Role::Moderator => room.default_role(affiliation),
        _ => current,
    }
}
