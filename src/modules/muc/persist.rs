//! Persistent rooms in storage: loaded when the service starts serving, written when their
//! configuration, subject or affiliations change. A storage failure is logged and the room
//! keeps working from memory: losing a write is better than refusing the chat.

use std::sync::Arc;

use jid::BareJid;
use tracing::warn;

use super::config::RoomConfig;
use super::room::{Affiliation, Room};
use crate::config::MucConfig;
use crate::router::Router;
use crate::storage::StoredRoom;

pub(super) async fn load(router: &Arc<Router>, limits: &MucConfig) -> Vec<Room> {
    let stored = match router.storage().muc.muc_rooms().await {
        Ok(rooms) => rooms,
        Err(e) => {
            warn!(error = %e, "cannot load MUC rooms");
            return Vec::new();
        }
    };
    let mut rooms = Vec::with_capacity(stored.len());
    for row in stored {
        if let Some(room) = from_row(router, limits, row).await {
            rooms.push(room);
        }
    }
    rooms
}

/// The stored room `jid`, if there is one: what a node of a cluster serves when it takes the
/// room over from another. `Err` when storage could not say.
pub(super) async fn load_room(
    router: &Arc<Router>,
    limits: &MucConfig,
    jid: &BareJid,
) -> Result<Option<Room>, crate::storage::StorageError> {
    let wanted = jid.to_string();
    let row = router
        .storage()
        .muc
        .muc_rooms()
        .await?
        .into_iter()
        .find(|row| row.jid == wanted);
    Ok(match row {
        Some(row) => from_row(router, limits, row).await,
        None => None,
    })
}

async fn from_row(router: &Arc<Router>, limits: &MucConfig, row: StoredRoom) -> Option<Room> {
    let store = &router.storage().muc;
    let Ok(jid) = BareJid::new(&row.jid) else {
        warn!(room = %row.jid, "stored MUC room has an invalid JID; skipped");
        return None;
    };
    let config = RoomConfig::from_stored(&row.config, limits);
    let mut room = Room::new(jid, config, limits.history_messages as usize);
    room.subject = row.subject;
    room.subject_nick = row.subject_nick;
    match store.muc_affiliations(&row.jid).await {
        Ok(list) => {
            for entry in list {
                let parsed = (
                    BareJid::new(&entry.jid).ok(),
                    Affiliation::parse(&entry.affiliation),
                );
                if let (Some(jid), Some(affiliation)) = parsed {
                    room.affiliations.insert(jid, affiliation);
                }
            }
        }
        Err(e) => warn!(error = %e, room = %row.jid, "cannot load MUC affiliations"),
    }
    Some(room)
}

fn stored(room: &Room) -> StoredRoom {
    StoredRoom {
        jid: room.jid.to_string(),
        config: room.config.to_stored(),
        subject: room.subject.clone(),
        subject_nick: room.subject_nick.clone(),
    }
}

/// Writes the room's row (configuration and subject).
pub(super) async fn save_room(router: &Arc<Router>, room: &Room) {
    if let Err(e) = router.storage().muc.save_muc_room(&stored(room)).await {
        warn!(error = %e, room = %room.jid, "cannot save MUC room");
    }
}

/// Writes the room and its whole affiliation list (when it becomes persistent).
pub(super) async fn save_all(router: &Arc<Router>, room: &Room) {
    save_room(router, room).await;
    for (jid, affiliation) in &room.affiliations {
        save_affiliation(router, &room.jid, jid, *affiliation).await;
    }
}

pub(super) async fn save_affiliation(
    router: &Arc<Router>,
    room: &BareJid,
    jid: &BareJid,
    affiliation: Affiliation,
) {
    let value = (affiliation != Affiliation::None).then_some(affiliation.as_str());
    let result = router
        .storage()
        .muc
        .set_muc_affiliation(&room.to_string(), &jid.to_string(), value)
        .await;
    if let Err(e) = result {
        warn!(error = %e, room = %room, "cannot save MUC affiliation");
    }
}

pub(super) async fn delete(router: &Arc<Router>, room: &BareJid) {
    if let Err(e) = router
        .storage()
        .muc
        .delete_muc_room(&room.to_string())
        .await
    {
        warn!(error = %e, room = %room, "cannot delete MUC room");
    }
}
