//! One room's state: configuration, affiliations, occupants, history, subject; and the
//! presence stanzas that describe an occupant to others (XEP-0045 §7.2.3).

use std::collections::HashMap;
use std::sync::Arc;

use jid::{BareJid, FullJid, Jid};
use minidom::Element;

use super::config::RoomConfig;
use super::history::History;
use crate::limits::bucket::Bucket;
use crate::router::{Router, SharedStanza};
use crate::stanza::{self, Kind};
use crate::xml::ns;

/// Long-lived position in the room (§5.2), ordered by rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Affiliation {
    Outcast,
    None,
    Member,
    Admin,
    Owner,
}

impl Affiliation {
    pub fn as_str(self) -> &'static str {
        match self {
            Affiliation::Outcast => "outcast",
            Affiliation::None => "none",
            Affiliation::Member => "member",
            Affiliation::Admin => "admin",
            Affiliation::Owner => "owner",
        }
    }

    pub fn parse(value: &str) -> Option<Affiliation> {
        Some(match value {
            "outcast" => Affiliation::Outcast,
            "none" => Affiliation::None,
            "member" => Affiliation::Member,
            "admin" => Affiliation::Admin,
            "owner" => Affiliation::Owner,
            _ => return None,
        })
    }
}

/// Temporary position while present (§5.1), ordered by privilege.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    None,
    Visitor,
    Participant,
    Moderator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::None => "none",
            Role::Visitor => "visitor",
            Role::Participant => "participant",
            Role::Moderator => "moderator",
        }
    }

    pub fn parse(value: &str) -> Option<Role> {
        Some(match value {
            "none" => Role::None,
            "visitor" => Role::Visitor,
            "participant" => Role::Participant,
            "moderator" => Role::Moderator,
            _ => return None,
        })
    }
}

pub struct Occupant {
    pub nick: String,
    pub jid: FullJid,
    pub role: Role,
    /// XEP-0421 id: the same for every session of one bare JID in this room.
    pub occupant_id: String,
    /// The occupant's last presence, reduced to what others may see (show, status, caps…).
    pub presence: Element,
    /// Groupchat messages it may still send (`muc.occupant_messages_per_second`); none when
    /// there is no limit. Goes with the occupant, so leaving the room forgets it.
    pub budget: Option<Bucket>,
}

/// What a presence item says besides affiliation and role.
#[derive(Default, Clone, Copy)]
pub struct ItemExtra<'a> {
    pub reason: Option<&'a str>,
    pub actor: Option<&'a str>,
    /// The new nick, on the unavailable presence of a nick change (§7.6).
    pub nick: Option<&'a str>,
}

pub struct Room {
    pub jid: BareJid,
    pub config: RoomConfig,
    pub affiliations: HashMap<BareJid, Affiliation>,
    pub occupants: Vec<Occupant>,
    pub history: History,
    pub subject: String,
    pub subject_nick: String,
    /// Created but not yet configured (§10.1.1): only the owner may enter.
    pub locked: bool,
    /// Destroyed or emptied and dropped: whoever waited for the lock must look again.
    pub gone: bool,
    /// Who created it since this process started (for `max_rooms_per_user`).
    pub creator: Option<BareJid>,
}

impl Room {
    pub fn new(jid: BareJid, config: RoomConfig, history_capacity: usize) -> Room {
        Room {
            jid,
            config,
            affiliations: HashMap::new(),
            occupants: Vec::new(),
            history: History::new(history_capacity),
            subject: String::new(),
            subject_nick: String::new(),
            locked: false,
            gone: false,
            creator: None,
        }
    }

    pub fn affiliation(&self, jid: &BareJid) -> Affiliation {
        self.affiliations
            .get(jid)
            .copied()
            .unwrap_or(Affiliation::None)
    }

    pub fn occupant_by_jid(&self, jid: &FullJid) -> Option<usize> {
        self.occupants.iter().position(|o| &o.jid == jid)
    }

    pub fn occupant_by_nick(&self, nick: &str) -> Option<usize> {
        self.occupants.iter().position(|o| o.nick == nick)
    }

    /// The role an occupant with `affiliation` gets on entering (§5.1.2).
    pub fn default_role(&self, affiliation: Affiliation) -> Role {
        match affiliation {
            Affiliation::Owner | Affiliation::Admin => Role::Moderator,
            Affiliation::Member => Role::Participant,
            Affiliation::None if self.config.moderated => Role::Visitor,
            Affiliation::None => Role::Participant,
            Affiliation::Outcast => Role::None,
        }
    }

    /// True if this room should be in storage.
    pub fn is_stored(&self) -> bool {
        self.config.persistent && !self.locked
    }

    pub fn nick_jid(&self, nick: &str) -> String {
        format!("{}/{}", self.jid, nick)
    }

    /// Whether `viewer` may see real JIDs in this room.
    pub fn shows_jids_to(&self, viewer: &Occupant) -> bool {
        self.config.non_anonymous || viewer.role == Role::Moderator
    }

    /// The presence describing `subject` to `viewer`. `available` false gives the
    /// unavailable form (no show/status); `codes` are added to every copy, 110 to the
    /// subject's own.
    pub fn presence_of(
        &self,
        subject: &Occupant,
        role: Role,
        viewer: &Occupant,
        available: bool,
        codes: &[u16],
        extra: ItemExtra<'_>,
    ) -> Element {
        let mut presence = if available {
            subject.presence.clone()
        } else {
            // What the occupant said on leaving (its status text) is all that is kept.
            let mut p = Element::bare("presence", ns::CLIENT);
            stanza::set_attr(&mut p, "type", "unavailable");
            for status in subject
                .presence
                .children()
                .filter(|c| c.is("status", ns::CLIENT))
            {
                p.append_child(status.clone());
            }
            p
        };
        stanza::set_attr(&mut presence, "from", self.nick_jid(&subject.nick));
        stanza::set_attr(&mut presence, "to", viewer.jid.to_string());
        let mut item = Element::bare("item", ns::MUC_USER);
        let affiliation = self.affiliation(&subject.jid.to_bare());
        stanza::set_attr(&mut item, "affiliation", affiliation.as_str());
        stanza::set_attr(&mut item, "role", role.as_str());
        if self.shows_jids_to(viewer) {
            stanza::set_attr(&mut item, "jid", subject.jid.to_string());
        }
        if let Some(nick) = extra.nick {
            stanza::set_attr(&mut item, "nick", nick);
        }
        if let Some(actor) = extra.actor {
            let mut el = Element::bare("actor", ns::MUC_USER);
            stanza::set_attr(&mut el, "nick", actor);
            item.append_child(el);
        }
        if let Some(reason) = extra.reason {
            item.append_child(
                Element::builder("reason", ns::MUC_USER)
                    .append(reason)
                    .build(),
            );
        }
        let mut x = Element::bare("x", ns::MUC_USER);
        x.append_child(item);
        let is_self = subject.jid == viewer.jid;
        for code in codes.iter().copied().chain(is_self.then_some(110)) {
            x.append_child(status(code));
        }
        presence.append_child(x);
        presence.append_child(occupant_id(&subject.occupant_id));
        presence
    }

    /// Sends every occupant the presence of occupant `index` (§7.2.3, §7.6, §9.x).
    /// `self_codes` go only to the occupant's own copy.
    pub async fn broadcast_presence(
        &self,
        router: &Arc<Router>,
        index: usize,
        available: bool,
        codes: &[u16],
        self_codes: &[u16],
        extra: ItemExtra<'_>,
    ) {
        let Some(subject) = self.occupants.get(index) else {
            return;
        };
        let role = if available { subject.role } else { Role::None };
        for viewer in &self.occupants {
            let mut all: Vec<u16> = codes.to_vec();
            if viewer.jid == subject.jid {
                all.extend_from_slice(self_codes);
            }
            let presence = self.presence_of(subject, role, viewer, available, &all, extra);
            router
                .route(Kind::Presence, Jid::from(viewer.jid.clone()), presence)
                .await;
        }
    }

    /// Sends a copy of `message` (from the room or `room/nick`) to every occupant.
    pub async fn broadcast_message(&self, router: &Arc<Router>, message: &Element) {
        // Serialized once for the whole room; each occupant's session adds its own `to`.
        let shared = Arc::new(SharedStanza::new(message.clone()));
        for viewer in &self.occupants {
            router.route_shared(&viewer.jid, &shared).await;
        }
    }

    /// A groupchat message from the room itself carrying status codes (e.g. 104).
    pub fn status_message(&self, codes: &[u16]) -> Element {
        let mut message = Element::bare("message", ns::CLIENT);
        stanza::set_attr(&mut message, "from", self.jid.to_string());
        stanza::set_attr(&mut message, "type", "groupchat");
        stanza::set_attr(&mut message, "id", format!("muc-{}", rand::random::<u64>()));
        let mut x = Element::bare("x", ns::MUC_USER);
        for code in codes {
            x.append_child(status(*code));
        }
        message.append_child(x);
        message
    }

    /// The subject message sent last on join (§7.2.15): empty `<subject/>` when none is set.
    pub fn subject_message(&self, to: &FullJid) -> Element {
        let mut message = Element::bare("message", ns::CLIENT);
        let from = if self.subject_nick.is_empty() {
            self.jid.to_string()
        } else {
            self.nick_jid(&self.subject_nick)
        };
        stanza::set_attr(&mut message, "from", from);
        stanza::set_attr(&mut message, "to", to.to_string());
        stanza::set_attr(&mut message, "type", "groupchat");
        stanza::set_attr(&mut message, "id", format!("muc-{}", rand::random::<u64>()));
        let mut subject = Element::bare("subject", ns::CLIENT);
        if !self.subject.is_empty() {
            subject.append_text(self.subject.as_str());
        }
        message.append_child(subject);
        message
    }
}

pub fn status(code: u16) -> Element {
    let mut el = Element::bare("status", ns::MUC_USER);
    stanza::set_attr(&mut el, "code", code.to_string());
    el
}

pub fn occupant_id(id: &str) -> Element {
    let mut el = Element::bare("occupant-id", ns::OCCUPANT_ID);
    stanza::set_attr(&mut el, "id", id);
    el
}

/// An occupant's presence as others may see it: the client's own MUC elements and anything
/// claiming to be the room's (occupant-id, muc#user) are dropped, and addressing is reset.
pub fn public_presence(presence: &Element) -> Element {
    let mut clean = Element::bare("presence", ns::CLIENT);
    for child in presence.children() {
        let ours = child.is("x", ns::MUC)
            || child.is("x", ns::MUC_USER)
            || child.is("occupant-id", ns::OCCUPANT_ID)
            || child.is("error", ns::CLIENT);
        if !ours {
            clean.append_child(child.clone());
        }
    }
    clean
}
