//! `muc#admin` (XEP-0045 §8, §9): roles (kick, voice, moderator) by nick and affiliations
//! (ban, member, admin, owner) by JID, with the privilege rules of §5.2, and the lists.

use std::sync::Arc;

use jid::{BareJid, FullJid};
use minidom::Element;

use super::join::{remove_occupant, role_after};
use super::persist;
use super::room::{Affiliation, ItemExtra, Role, Room};
use super::Muc;
use crate::router::Router;
use crate::stanza::{self, Condition, ErrorType, StanzaError};
use crate::xml::ns;

enum Change {
    Role {
        nick: String,
        role: Role,
        reason: Option<String>,
    },
    Affiliation {
        jid: BareJid,
        affiliation: Affiliation,
        reason: Option<String>,
    },
}

struct Actor {
    affiliation: Affiliation,
    role: Role,
    nick: Option<String>,
}

pub(super) async fn handle(
    muc: &Muc,
    router: &Arc<Router>,
    room: &mut Room,
    from: &FullJid,
    is_get: bool,
    query: &Element,
) -> Result<Option<Element>, StanzaError> {
    let occupant = room.occupant_by_jid(from).map(|i| &room.occupants[i]);
    let actor = Actor {
        affiliation: room.affiliation(&from.to_bare()),
        role: occupant.map_or(Role::None, |o| o.role),
        nick: occupant.map(|o| o.nick.clone()),
    };
    let items: Vec<&Element> = query
        .children()
        .filter(|c| c.is("item", ns::MUC_ADMIN))
        .collect();
    let Some(first) = items.first() else {
        return Err(StanzaError::bad_request());
    };
    if is_get {
        return list(room, &actor, first).map(Some);
    }
    let mut changes = Vec::with_capacity(items.len());
    for item in &items {
        let change = parse(room, item)?;
        check(muc, room, &actor, &change)?;
        changes.push(change);
    }
    for change in changes {
        if room.gone {
            break;
        }
        apply(muc, router, room, &actor, change).await;
    }
    Ok(None)
}

fn parse(room: &Room, item: &Element) -> Result<Change, StanzaError> {
    let reason = item.get_child("reason", ns::MUC_ADMIN).map(|r| r.text());
    if let Some(affiliation) = item.attr("affiliation") {
        let affiliation = Affiliation::parse(affiliation).ok_or_else(StanzaError::bad_request)?;
        // The JID is normative; a nick is accepted for an occupant (clients ban from the
        // occupant list).
        let jid = match (item.attr("jid"), item.attr("nick")) {
            (Some(jid), _) => BareJid::new(jid)
                .or_else(|_| jid::Jid::new(jid).map(|j| j.to_bare()))
                .map_err(|_| StanzaError::jid_malformed())?,
            (None, Some(nick)) => room
                .occupant_by_nick(nick)
                .map(|i| room.occupants[i].jid.to_bare())
                .ok_or_else(StanzaError::item_not_found)?,
            (None, None) => return Err(StanzaError::bad_request()),
        };
        return Ok(Change::Affiliation {
            jid,
            affiliation,
            reason,
        });
    }
    match (item.attr("role"), item.attr("nick")) {
        (Some(role), Some(nick)) => Ok(Change::Role {
            nick: nick.to_owned(),
            role: Role::parse(role).ok_or_else(StanzaError::bad_request)?,
            reason,
        }),
        _ => Err(StanzaError::bad_request()),
    }
}

/// §5.2 privileges. `forbidden` when the actor lacks the privilege altogether, `not-allowed`
/// when the target outranks it.
fn check(muc: &Muc, room: &Room, actor: &Actor, change: &Change) -> Result<(), StanzaError> {
    match change {
        Change::Role { nick, role, .. } => {
            if actor.role != Role::Moderator {
                return Err(StanzaError::forbidden());
            }
            let index = room
                .occupant_by_nick(nick)
                .ok_or_else(StanzaError::item_not_found)?;
            let target = &room.occupants[index];
            if *role == Role::None && actor.nick.as_deref() == Some(nick.as_str()) {
                // §8.2: kicking oneself is refused.
                return Err(StanzaError::conflict());
            }
            let target_affiliation = room.affiliation(&target.jid.to_bare());
            // §9.6, §9.7: granting or revoking moderator status is for admins and owners.
            let touches_moderator = *role == Role::Moderator || target.role == Role::Moderator;
            if touches_moderator && actor.affiliation < Affiliation::Admin {
                return Err(StanzaError::forbidden());
            }
            // §8.2, §8.4: admins and owners are moderators by affiliation; nobody kicks them
            // or takes their voice (their affiliation has to change first).
            if target_affiliation >= Affiliation::Admin && *role != Role::Moderator {
                return Err(StanzaError::not_allowed());
            }
            Ok(())
        }
        Change::Affiliation {
            jid, affiliation, ..
        } => {
            if actor.affiliation < Affiliation::Admin {
                return Err(StanzaError::forbidden());
            }
            let current = room.affiliation(jid);
            if actor.affiliation == Affiliation::Admin
                && (current >= Affiliation::Admin || *affiliation >= Affiliation::Admin)
            {
                return Err(StanzaError::not_allowed());
            }
            let owners = room
                .affiliations
                .values()
                .filter(|a| **a == Affiliation::Owner)
                .count();
            if current == Affiliation::Owner && *affiliation != Affiliation::Owner && owners <= 1 {
                // §10.9: a room always keeps an owner.
                return Err(StanzaError::conflict());
            }
            let grows = current == Affiliation::None && *affiliation != Affiliation::None;
            if grows && room.affiliations.len() >= muc.limits.max_affiliations_per_room as usize {
                return Err(StanzaError::new(
                    ErrorType::Wait,
                    Condition::ResourceConstraint,
                ));
            }
            Ok(())
        }
    }
}

async fn apply(muc: &Muc, router: &Arc<Router>, room: &mut Room, actor: &Actor, change: Change) {
    match change {
        Change::Role { nick, role, reason } => {
            let Some(index) = room.occupant_by_nick(&nick) else {
                return;
            };
            let extra = ItemExtra {
                reason: reason.as_deref(),
                actor: actor.nick.as_deref(),
                nick: None,
            };
            if role == Role::None {
                // §8.2: kicked, status 307, everyone told.
                room.occupants[index].presence = Element::bare("presence", ns::CLIENT);
                remove_occupant(muc, router, room, index, &[307], extra).await;
                return;
            }
            room.occupants[index].role = role;
            room.broadcast_presence(router, index, true, &[], &[], extra)
                .await;
        }
        Change::Affiliation {
            jid,
            affiliation,
            reason,
        } => {
            if affiliation == Affiliation::None {
                room.affiliations.remove(&jid);
            } else {
                room.affiliations.insert(jid.clone(), affiliation);
            }
            if room.is_stored() {
                persist::save_affiliation(router, &room.jid, &jid, affiliation).await;
            }
            let extra = ItemExtra {
                reason: reason.as_deref(),
                actor: actor.nick.as_deref(),
                nick: None,
            };
            // Every session of that user in the room is affected, last first so that the
            // indexes stay valid while removing.
            let indexes: Vec<usize> = (0..room.occupants.len())
                .rev()
                .filter(|i| room.occupants[*i].jid.to_bare() == jid)
                .collect();
            for index in indexes {
                if room.gone {
                    return;
                }
                let code = if affiliation == Affiliation::Outcast {
                    Some(301)
                } else if room.config.members_only && affiliation < Affiliation::Member {
                    Some(321)
                } else {
                    None
                };
                if let Some(code) = code {
                    room.occupants[index].presence = Element::bare("presence", ns::CLIENT);
                    remove_occupant(muc, router, room, index, &[code], extra).await;
                    continue;
                }
                let role = role_after(room, room.occupants[index].role, affiliation);
                room.occupants[index].role = role;
                room.broadcast_presence(router, index, true, &[], &[], extra)
                    .await;
            }
        }
    }
}

/// §9.5, §9.8, §10.5–§10.7 and the role lists of §8.5/§9.x.
fn list(room: &Room, actor: &Actor, item: &Element) -> Result<Element, StanzaError> {
    let mut query = Element::bare("query", ns::MUC_ADMIN);
    if let Some(affiliation) = item.attr("affiliation") {
        let wanted = Affiliation::parse(affiliation)
            .filter(|a| *a != Affiliation::None)
            .ok_or_else(StanzaError::bad_request)?;
        if actor.affiliation < Affiliation::Admin {
            return Err(StanzaError::forbidden());
        }
        let mut jids: Vec<String> = room
            .affiliations
            .iter()
            .filter(|(_, a)| **a == wanted)
            .map(|(j, _)| j.to_string())
            .collect();
        jids.sort();
        for jid in jids {
            let mut el = Element::bare("item", ns::MUC_ADMIN);
            stanza::set_attr(&mut el, "affiliation", wanted.as_str());
            stanza::set_attr(&mut el, "jid", jid);
            query.append_child(el);
        }
        return Ok(query);
    }
    let wanted = item
        .attr("role")
        .and_then(Role::parse)
        .filter(|r| *r != Role::None)
        .ok_or_else(StanzaError::bad_request)?;
    if actor.role != Role::Moderator {
        return Err(StanzaError::forbidden());
    }
    for occupant in room.occupants.iter().filter(|o| o.role == wanted) {
        let mut el = Element::bare("item", ns::MUC_ADMIN);
        let affiliation = room.affiliation(&occupant.jid.to_bare());
        stanza::set_attr(&mut el, "affiliation", affiliation.as_str());
        stanza::set_attr(&mut el, "role", wanted.as_str());
        stanza::set_attr(&mut el, "nick", occupant.nick.as_str());
        stanza::set_attr(&mut el, "jid", occupant.jid.to_string());
        query.append_child(el);
    }
    Ok(query)
}
