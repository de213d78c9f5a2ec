//! Beyond XEP-0133: the MUC rooms of this server, listed and destroyed by administrators.
//! Registered by the MUC module itself, so the commands exist only where MUC runs.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use jid::BareJid;

use super::admin_users::ADMIN;
use super::command::{Access, Command, CommandError, Context, Outcome, Values};
use super::form::{self, Note};
use crate::modules::muc::Muc;
use crate::router::Registry;
use crate::stanza::StanzaError;
use crate::xml::forms::{DataForm, FieldType};

pub const LIST_ROOMS: &str = "urn:corvid:admin#list-rooms";
pub const DESTROY_ROOM: &str = "urn:corvid:admin#destroy-room";

pub fn register(registry: &mut Registry, muc: Weak<Muc>) {
    super::register_command(registry, Arc::new(ListRooms(muc.clone())));
    super::register_command(registry, Arc::new(DestroyRoom(muc)));
}

fn service(muc: &Weak<Muc>) -> Result<Arc<Muc>, CommandError> {
    muc.upgrade()
        .ok_or(CommandError::Stanza(StanzaError::service_unavailable()))
}

struct ListRooms(Weak<Muc>);

#[async_trait]
impl Command for ListRooms {
    fn node(&self) -> &'static str {
        LIST_ROOMS
    }
    fn name(&self) -> &'static str {
        "List Rooms"
    }
    fn access(&self) -> Access {
        Access::ServerAdmin
    }
    fn stages(&self) -> usize {
        0
    }
    async fn run(&self, ctx: &Context<'_>, _: &Values) -> Result<Outcome, CommandError> {
        let rooms = service(&self.0)?.room_list(ctx.router).await;
        let (jids, occupants): (Vec<String>, Vec<String>) = rooms
            .into_iter()
            .map(|(jid, n)| (jid.to_string(), format!("{jid} ({n})")))
            .unzip();
        Ok(Outcome::form(form::report(
            ADMIN,
            self.name(),
            vec![
                form::value(
                    "roomsnum",
                    FieldType::TextSingle,
                    "Rooms",
                    vec![jids.len().to_string()],
                ),
                form::value("roomjids", FieldType::JidMulti, "Rooms", jids),
                form::value(
                    "occupants",
                    FieldType::TextMulti,
                    "Rooms (occupants)",
                    occupants,
                ),
            ],
        )))
    }
}

struct DestroyRoom(Weak<Muc>);

#[async_trait]
impl Command for DestroyRoom {
    fn node(&self) -> &'static str {
        DESTROY_ROOM
    }
    fn name(&self) -> &'static str {
        "Destroy Rooms"
    }
    fn access(&self) -> Access {
        Access::ServerAdmin
    }
    async fn form(&self, _: &Context<'_>, _: usize, _: &Values) -> Result<DataForm, CommandError> {
        Ok(form::ask(
            ADMIN,
            self.name(),
            "Occupants are told the room is gone, with the reason.",
            vec![
                form::jid_multi("roomjids", "The rooms to destroy"),
                form::text_single("reason", "Reason"),
            ],
        ))
    }
    async fn check(&self, _: &Context<'_>, _: usize, values: &Values) -> Result<(), CommandError> {
        rooms(values).map(|_| ())
    }
    async fn run(&self, ctx: &Context<'_>, values: &Values) -> Result<Outcome, CommandError> {
        let muc = service(&self.0)?;
        let reason = values.one("reason");
        let mut notes = Vec::new();
        for room in rooms(values)? {
            if muc.destroy_room(ctx.router, &room, reason).await {
                notes.push(Note::info(format!("{room} destroyed")));
            } else {
                notes.push(Note::warn(format!("{room} does not exist")));
            }
        }
        Ok(Outcome {
            notes,
            ..Outcome::default()
        })
    }
}

fn rooms(values: &Values) -> Result<Vec<BareJid>, CommandError> {
    let list = values.list("roomjids");
    if list.is_empty() {
        return Err(CommandError::invalid("roomjids", "roomjids is required"));
    }
    list.into_iter()
        .map(|text| {
            BareJid::new(text)
                .ok()
                .filter(|jid| jid.node().is_some())
                .ok_or_else(|| {
                    CommandError::invalid("roomjids", format!("'{text}' is not a room JID"))
                })
        })
        .collect()
}
