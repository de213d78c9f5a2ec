//! Multi-User Chat (XEP-0045) as an in-process component at `conference.<domain>`.
//!
//! Rooms live in memory, each behind its own `tokio::sync::Mutex`: one stanza for a room is
//! handled at a time, start to finish, so every occupant sees the room's stanzas in one order.
//! Fan-out happens under that lock through `Router::route`, which only queues to sessions and
//! never waits on a slow client. Persistent rooms keep their configuration, affiliations and
//! subject in storage and are loaded when the service first sees a stanza. On a cluster, each
//! room is served by one node at a time and loaded by the node that comes to serve it; the
//! others pass its stanzas there (`cluster`).
//!
//! Limitations (documented for clients): one occupant per full JID; a second session of the
//! same account may join under another nick but not the same one (`conflict`); only users of
//! this server may join.

mod admin;
mod cluster;
mod config;
mod departures;
mod disco;
mod forward;
mod history;
mod join;
mod messages;
mod moderation;
mod owner;
mod persist;
mod room;
mod voice;

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};

use async_trait::async_trait;
use base64::Engine;
use hmac::{Hmac, Mac};
use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use sha2::Sha256;
use tokio::sync::{Mutex, OnceCell};

use super::mam::Archiver;
use crate::config::{Config, MucConfig};
use crate::limits::bucket::Rate;
use crate::router::{
    Component, DiscoQuery, DiscoTarget, IqType, Item, ItemSource, Module, Priority, Registry,
    RemoteDomainHook, Router,
};
use crate::stanza::{self, Condition, Kind, StanzaError};
use crate::xml::ns;
use room::Room;

pub type RoomHandle = Arc<Mutex<Room>>;

pub struct Muc {
    /// Each hosted domain with its service's domain; one service state serves them all, rooms
    /// being keyed by their full JID.
    services: Vec<(String, String)>,
    limits: MucConfig,
    rooms: StdMutex<HashMap<BareJid, RoomHandle>>,
    /// Rooms each user created that still exist.
    created: StdMutex<HashMap<BareJid, u32>>,
    loaded: OnceCell<()>,
    /// Key for XEP-0421 occupant ids: generated once and kept in storage, so an occupant's
    /// id survives restarts; unguessable from outside. Read with the rooms.
    secret: OnceCell<Vec<u8>>,
    forwarder: forward::Forwarder,
    /// XEP-0313 room archives (every room's groupchat messages), when MAM is enabled.
    archive: Option<Arc<Archiver>>,
    /// Groupchat messages per occupant (`muc.occupant_messages_per_second`), when limited.
    message_rate: Option<Rate>,
    departures: Arc<departures::Departures>,
    /// Which node of a cluster serves each room (unused on a single node).
    placement: cluster::Placement,
}

impl Muc {
    /// The service for `config`, or `None` when MUC is disabled.
    pub fn new(config: &Config, archive: Option<Arc<Archiver>>) -> Option<Arc<Muc>> {
        if !config.muc.enabled {
            return None;
        }
        Some(Arc::new(Muc {
            services: config
                .hosted_domains()
                .into_iter()
                .filter_map(|host| Some((host.domain, host.muc_domain?)))
                .collect(),
            limits: config.muc.clone(),
            rooms: StdMutex::new(HashMap::new()),
            created: StdMutex::new(HashMap::new()),
            loaded: OnceCell::new(),
            secret: OnceCell::new(),
            forwarder: forward::Forwarder::default(),
            archive,
            message_rate: Rate::per(
                config.muc.occupant_messages_per_second,
                std::time::Duration::from_secs(1),
                config.muc.occupant_message_burst,
            ),
            departures: Arc::default(),
            placement: cluster::Placement::default(),
        }))
    }

    /// The rooms that exist now (persistent ones included) with their occupant counts, sorted,
    /// for administrators.
    pub async fn room_list(&self, router: &Arc<Router>) -> Vec<(BareJid, usize)> {
        self.ensure_loaded(router).await;
        let mut rooms = Vec::new();
        for handle in self.all_rooms() {
            let room = handle.lock().await;
            if !room.gone {
                rooms.push((room.jid.clone(), room.occupants.len()));
            }
        }
        rooms.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        rooms
    }

    /// Destroys a room as its owner would (XEP-0045 §10.9), on an administrator's word; false
    /// when there is no such room.
    pub async fn destroy_room(
        &self,
        router: &Arc<Router>,
        jid: &BareJid,
        reason: Option<&str>,
    ) -> bool {
        self.ensure_loaded(router).await;
        let Some(handle) = self.room(jid) else {
            return false;
        };
        let mut room = handle.lock().await;
        if room.gone {
            return false;
        }
        owner::destroy_room(self, router, &mut room, None, reason).await;
        true
    }

    /// Whether `domain` is one of this server's MUC services.
    pub(crate) fn serves(&self, domain: &str) -> bool {
        self.services.iter().any(|(_, service)| service == domain)
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<BareJid, RoomHandle>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn room(&self, jid: &BareJid) -> Option<RoomHandle> {
        self.rooms().get(jid).cloned()
    }

    fn all_rooms(&self) -> Vec<RoomHandle> {
        self.rooms().values().cloned().collect()
    }

    fn all_rooms_jids(&self) -> std::collections::HashSet<BareJid> {
        self.rooms().keys().cloned().collect()
    }

    /// The existing room, or a new locked one when `creator` may create it. `creator_is_local`:
    /// an account of this server (`muc.room_creation = "local_users"` leaves other servers'
    /// users to join rooms, not to create them).
    fn room_or_create(
        &self,
        jid: &BareJid,
        creator: &BareJid,
        creator_is_local: bool,
    ) -> Result<(RoomHandle, bool), StanzaError> {
        let mut rooms = self.rooms();
        if let Some(room) = rooms.get(jid) {
            return Ok((room.clone(), false));
        }
        if self.limits.room_creation == crate::config::RoomCreation::Nobody {
            return Err(StanzaError::not_allowed().with_text("Room creation is disabled"));
        }
        if !creator_is_local {
            return Err(
                StanzaError::not_allowed().with_text("Only users of this server create rooms here")
            );
        }
        if rooms.len() >= self.limits.max_rooms as usize {
            return Err(StanzaError::new(
                crate::stanza::ErrorType::Wait,
                Condition::ResourceConstraint,
            ));
        }
        let mut created = self.created.lock().unwrap_or_else(|e| e.into_inner());
        let count = created.entry(creator.clone()).or_insert(0);
        if *count >= self.limits.max_rooms_per_user {
            return Err(StanzaError::not_allowed().with_text("Too many rooms created"));
        }
        *count += 1;
        let mut room = Room::new(
            jid.clone(),
            config::RoomConfig::initial(&self.limits),
            self.limits.history_messages as usize,
        );
        room.locked = true;
        room.creator = Some(creator.clone());
        let handle = Arc::new(Mutex::new(room));
        rooms.insert(jid.clone(), handle.clone());
        Ok((handle, true))
    }

    /// Drops a room from memory (the caller holds its lock and has marked it gone).
    fn forget(&self, room: &mut Room) {
        room.gone = true;
        // A room that is gone takes its archive along: a new room of the same name must not
        // show the old one's messages.
        if let Some(archive) = &self.archive {
            archive.delete(room.jid.as_str());
        }
        self.rooms().remove(&room.jid);
        if let Some(creator) = room.creator.take() {
            let mut created = self.created.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(count) = created.get_mut(&creator) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    created.remove(&creator);
                }
            }
        }
    }

    /// XEP-0421: an opaque id for `user` in `room`, the same for all its sessions.
    fn occupant_id(&self, room: &BareJid, user: &BareJid) -> String {
        let Some(secret) = self.secret.get() else {
            return String::new();
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
            return String::new();
        };
        mac.update(room.to_string().as_bytes());
        mac.update(b"\0");
        mac.update(user.to_string().as_bytes());
        let digest = mac.finalize().into_bytes();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..18])
    }

    async fn ensure_loaded(&self, router: &Arc<Router>) {
        self.loaded
            .get_or_init(|| async {
                let fresh: [u8; 32] = rand::random();
                let secret = match router
                    .storage()
                    .secrets
                    .server_secret("muc-occupant-ids", &fresh)
                    .await
                {
                    Ok(secret) => secret,
                    Err(e) => {
                        // Ids then change on restart, which clients survive; refusing to
                        // serve rooms would be worse.
                        tracing::warn!(error = %e, "reading the occupant-id key failed");
                        fresh.to_vec()
                    }
                };
                let _ = self.secret.set(secret);
                if router.cluster().is_some() {
                    // Each room is loaded by the node that comes to serve it (`cluster`).
                    return;
                }
                for room in persist::load(router, &self.limits).await {
                    let jid = room.jid.clone();
                    self.rooms()
                        .entry(jid)
                        .or_insert_with(|| Arc::new(Mutex::new(room)));
                }
            })
            .await;
    }

    /// IQs to the service itself: disco and ping.
    async fn service_iq(&self, router: &Arc<Router>, service: &str, iq: Element) {
        if !matches!(stanza::stanza_type(&iq), "get" | "set") {
            return;
        }
        let Some(payload) = stanza::iq_payload(&iq) else {
            router.bounce(&iq, StanzaError::bad_request());
            return;
        };
        let is_get = stanza::stanza_type(&iq) == "get";
        let answer = if is_get && payload.is("query", ns::DISCO_INFO) {
            Ok(Some(disco::service_info(payload)))
        } else if is_get && payload.is("query", ns::DISCO_ITEMS) {
            Ok(Some(disco::service_items(self, router, service).await))
        } else if is_get && payload.is("ping", ns::PING) {
            Ok(None)
        } else {
            Err(StanzaError::service_unavailable())
        };
        reply(router, &iq, answer);
    }
}

/// Answers an IQ on behalf of whatever it was addressed to.
pub(crate) fn reply(router: &Router, iq: &Element, answer: Result<Option<Element>, StanzaError>) {
    match answer {
        Ok(payload) => router.send_reply(stanza::iq_result(iq, payload, router.domain())),
        Err(error) => router.bounce(iq, error),
    }
}

impl Module for Muc {
    fn name(&self) -> &'static str {
        "muc"
    }

    fn register(self: Arc<Self>, registry: &mut Registry) {
        crate::modules::adhoc::register_muc_commands(registry, Arc::downgrade(&self));
        for (_, service) in &self.services {
            registry.component(service.clone(), self.clone());
        }
        self.departures.register(registry);
        registry.cluster_topic(cluster::TOPIC, cluster::Inbox::new(self.clone()));
        registry.node_gone_hook(Priority::Presence, self.clone());
        registry.shutdown_hook(Priority::Presence, self.clone());
        registry.remote_domain_hook(Priority::Presence, self.clone());
        // How clients find the service: an item of the server (XEP-0045 §6.1).
        registry.disco_items(DiscoTarget::Server, self);
    }
}

#[async_trait]
impl ItemSource for Muc {
    async fn items(&self, _router: &Arc<Router>, query: &DiscoQuery<'_>) -> Vec<Item> {
        self.services
            .iter()
            .filter(|(host, _)| host == query.domain)
            .map(|(_, service)| Item::new(service.clone()))
            .collect()
    }
}

#[async_trait]
impl RemoteDomainHook for Muc {
    async fn lost(&self, router: &Arc<Router>, domain: &str) {
        departures::lost_domain(self, router, domain).await;
    }
}

#[async_trait]
impl Component for Muc {
    async fn handle(&self, router: &Arc<Router>, kind: Kind, to: Jid, stanza: Element) {
        if router.cluster().is_some() && to.node().is_some() {
            self.to_serving_node(router, kind, to, stanza, cluster::FORWARDS, false)
                .await;
            return;
        }
        self.handle_here(router, kind, to, stanza).await;
    }
}

impl Muc {
    /// A stanza for the service or for a room this node serves.
    async fn handle_here(&self, router: &Arc<Router>, kind: Kind, to: Jid, stanza: Element) {
        // This server's users and, through federation, other servers' (the s2s stream
        // checked that the sender's domain is the peer's): a room has remote occupants too.
        // The router or the s2s stream stamped `from`; without one there is nobody to answer.
        let Some(from) = stanza.attr("from").and_then(|f| Jid::new(f).ok()) else {
            return;
        };
        let is_answer =
            kind == Kind::Iq && matches!(stanza::stanza_type(&stanza), "result" | "error");
        if is_answer && to.resource().is_some() {
            // An answer to an IQ the room passed on; vCard requests went to the account,
            // which answers from its bare JID.
            self.forwarder
                .answer(router, to.to_bare().as_str(), stanza)
                .await;
            return;
        }
        let Ok(from) = from.try_into_full() else {
            return;
        };
        self.ensure_loaded(router).await;
        let Some(_) = to.node() else {
            match kind {
                Kind::Iq => self.service_iq(router, to.domain().as_str(), stanza).await,
                Kind::Message if !stanza::is_error(&stanza) => {
                    router.bounce(&stanza, StanzaError::service_unavailable())
                }
                _ => {}
            }
            return;
        };
        let room = to.to_bare();
        let nick = to.resource().map(|r| r.as_str().to_owned());
        match kind {
            Kind::Presence => join::presence(self, router, &room, nick, from, stanza).await,
            Kind::Message => messages::handle(self, router, &room, nick, from, stanza).await,
            Kind::Iq => self.room_iq(router, &room, nick, from, stanza).await,
        }
    }

    async fn room_iq(
        &self,
        router: &Arc<Router>,
        room_jid: &BareJid,
        nick: Option<String>,
        from: FullJid,
        iq: Element,
    ) {
        if !matches!(stanza::stanza_type(&iq), "get" | "set") {
            return;
        }
        let Some(payload) = stanza::iq_payload(&iq).cloned() else {
            router.bounce(&iq, StanzaError::bad_request());
            return;
        };
        let Some(handle) = self.room(room_jid) else {
            router.bounce(&iq, StanzaError::item_not_found());
            return;
        };
        let mut room = handle.lock().await;
        let owner = room.affiliation(&from.to_bare()) == room::Affiliation::Owner;
        if room.gone || (room.locked && !owner) {
            router.bounce(&iq, StanzaError::item_not_found());
            return;
        }
        let is_get = stanza::stanza_type(&iq) == "get";
        if let Some(nick) = nick {
            // XEP-0410: a ping to one's own nick is answered by the room, which is exactly
            // the question the client asks ("am I still joined?").
            let answer = match room.occupant_by_jid(&from) {
                None => Err(StanzaError::not_acceptable()),
                Some(i) if payload.is("ping", ns::PING) && room.occupants[i].nick == nick => {
                    Ok(None)
                }
                Some(i) => match room.occupant_by_nick(&nick) {
                    None => Err(StanzaError::item_not_found()),
                    Some(target) => {
                        let asker_nick = room.occupants[i].nick.clone();
                        let target_jid = room.occupants[target].jid.clone();
                        self.forwarder
                            .request(
                                router,
                                room_jid.as_str(),
                                &asker_nick,
                                &target_jid,
                                &nick,
                                iq,
                            )
                            .await;
                        return;
                    }
                },
            };
            reply(router, &iq, answer);
            return;
        }
        if let (Some(archive), true) = (&self.archive, payload.is("query", ns::MAM)) {
            // XEP-0313 §3.2 on the room: whoever may read the room, i.e. its occupants and,
            // for members-only rooms, members; never outcasts.
            let affiliation = room.affiliation(&from.to_bare());
            let allowed = affiliation != room::Affiliation::Outcast
                && (room.occupant_by_jid(&from).is_some()
                    || affiliation >= room::Affiliation::Member
                    || !room.config.members_only);
            drop(room);
            let answer = if allowed {
                let from = Jid::from(from.clone());
                let iq_type = if is_get { IqType::Get } else { IqType::Set };
                archive
                    .query(router, &payload, iq_type, &from, room_jid.as_str())
                    .await
            } else {
                Err(StanzaError::forbidden())
            };
            reply(router, &iq, answer);
            return;
        }
        let answer = if is_get && payload.is("query", ns::DISCO_INFO) {
            Ok(Some(disco::room_info(
                &room,
                &payload,
                self.archive.is_some(),
            )))
        } else if is_get && payload.is("query", ns::DISCO_ITEMS) {
            Ok(Some(Element::bare("query", ns::DISCO_ITEMS)))
        } else if is_get && payload.is("ping", ns::PING) {
            Ok(None)
        } else if payload.is("query", ns::MUC_ADMIN) {
            admin::handle(self, router, &mut room, &from, is_get, &payload).await
        } else if payload.is("query", ns::MUC_OWNER) {
            owner::handle(self, router, &mut room, &from, is_get, &payload).await
        } else if !is_get && moderation::is_request(&payload) {
            moderation::moderate(router, self.archive.as_deref(), &mut room, &from, &payload).await
        } else {
            Err(StanzaError::service_unavailable())
        };
        reply(router, &iq, answer);
    }
}
