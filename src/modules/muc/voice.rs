//! Voice requests (XEP-0045 §7.13 and §8.6): a visitor in a moderated room asks for voice with
//! a `muc#request` form; the room passes an approval form to every moderator, and a moderator
//! who submits it with `muc#request_allow` makes the visitor a participant.

use std::sync::Arc;

use jid::FullJid;
use minidom::Element;

use super::room::{ItemExtra, Role, Room};
use crate::router::Router;
use crate::stanza::{self, Kind, StanzaError};
use crate::xml::forms::{self, field, first_value, DataForm, FieldType};
use crate::xml::ns;

/// The `muc#request` form a message carries, if any. A form that does not parse is no
/// request: the message goes on as any other message to the room.
pub(super) fn request_form(message: &Element) -> Option<DataForm> {
    message
        .children()
        .filter(|c| c.is("x", ns::DATA_FORMS))
        .filter_map(|x| forms::read(x).ok())
        .find(|form| first_value(form, forms::FORM_TYPE) == Some(ns::MUC_REQUEST))
}

pub(super) async fn handle(
    router: &Arc<Router>,
    room: &mut Room,
    from: &FullJid,
    form: &DataForm,
) -> Result<(), StanzaError> {
    let Some(index) = room.occupant_by_jid(from) else {
        return Err(StanzaError::not_acceptable().with_text("Only occupants may ask for voice"));
    };
    let is_answer = first_value(form, "muc#request_allow").is_some();
    if is_answer {
        return answer(router, room, index, form).await;
    }
    if room.occupants[index].role != Role::Visitor {
        // Already has voice (or more): nothing to ask for.
        return Ok(());
    }
    let nick = room.occupants[index].nick.clone();
    let moderators: Vec<FullJid> = room
        .occupants
        .iter()
        .filter(|o| o.role == Role::Moderator)
        .map(|o| o.jid.clone())
        .collect();
    for moderator in moderators {
        let message = approval_form(room, from, &nick, &moderator);
        router.route(Kind::Message, moderator.into(), message).await;
    }
    Ok(())
}

/// §8.6, example 113: the form a moderator receives.
fn approval_form(room: &Room, requester: &FullJid, nick: &str, to: &FullJid) -> Element {
    let fields = vec![
        field(
            "muc#role",
            FieldType::ListSingle,
            "Requested role",
            "participant",
        ),
        field(
            "muc#jid",
            FieldType::JidSingle,
            "User ID",
            &requester.to_string(),
        ),
        field("muc#roomnick", FieldType::TextSingle, "Room Nickname", nick),
        field(
            "muc#request_allow",
            FieldType::Boolean,
            "Grant voice to this person?",
            "false",
        ),
    ];
    let form = forms::form(ns::MUC_REQUEST, Some("Voice request"), fields);
    let mut message = Element::bare("message", ns::CLIENT);
    stanza::set_attr(&mut message, "from", room.jid.to_string());
    stanza::set_attr(&mut message, "to", to.to_string());
    stanza::set_attr(
        &mut message,
        "id",
        format!("voice-{}", rand::random::<u64>()),
    );
    message.append_child(form);
    message
}

/// §8.6, example 114: a moderator's answer.
async fn answer(
    router: &Arc<Router>,
    room: &mut Room,
    moderator: usize,
    form: &DataForm,
) -> Result<(), StanzaError> {
    if room.occupants[moderator].role != Role::Moderator {
        return Err(StanzaError::forbidden());
    }
    let allow = first_value(form, "muc#request_allow")
        .and_then(forms::parse_bool)
        .unwrap_or(false);
    if !allow {
        return Ok(());
    }
    let Some(nick) = first_value(form, "muc#roomnick") else {
        return Err(StanzaError::bad_request().with_text("muc#roomnick is missing"));
    };
    let Some(index) = room.occupant_by_nick(nick) else {
        return Err(StanzaError::item_not_found());
    };
    if room.occupants[index].role != Role::Visitor {
        return Ok(());
    }
    room.occupants[index].role = Role::Participant;
    let actor = room.occupants[moderator].nick.clone();
    let extra = ItemExtra {
        actor: Some(&actor),
        ..ItemExtra::default()
    };
    room.broadcast_presence(router, index, true, &[], &[], extra)
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(forms: &str) -> Element {
        format!("<message xmlns='jabber:client'>{forms}</message>")
            .parse()
            .expect("test xml")
    }

    #[test]
    fn the_request_form_is_found_and_a_malformed_one_is_none() {
        let request = format!(
            "<x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE'><value>{}</value></field>\
             <field var='muc#role'><value>participant</value></field></x>",
            ns::MUC_REQUEST
        );
        let other = "<x xmlns='jabber:x:data' type='submit'>\
                     <field var='FORM_TYPE'><value>urn:other</value></field></x>";
        let found = request_form(&message(&format!("{other}{request}"))).expect("found");
        assert_eq!(first_value(&found, "muc#role"), Some("participant"));
        // A field without var: the form is malformed, so the message is no voice request.
        let malformed = request.replace("var='muc#role'", "");
        assert!(request_form(&message(&malformed)).is_none());
    }
}
