//! Why sessions that are ending ended, while their end hooks run: the presence module's
//! goodbye reaches a room as an ordinary unavailable presence, and the room tells occupants
//! apart who left (closed their stream) from those gone for a technical reason (status 333).
//! Occupants of another server whose connection with us was lost are gone for a technical
//! reason too, and leave the same way (`lost_domain`).

use std::sync::Arc;

use async_trait::async_trait;
use dashmap::DashMap;
use jid::FullJid;

use minidom::Element;

use super::join::{remove_occupant, GONE_WITHOUT_LEAVING};
use super::room::ItemExtra;
use super::Muc;
use crate::router::{Priority, Registry, Router, SessionEnd, SessionHook};
use crate::xml::ns;

#[derive(Default)]
pub struct Departures {
    ending: DashMap<FullJid, SessionEnd>,
}

impl Departures {
    /// Notes the reason before the presence module says goodbye, and forgets it once every
    /// other end hook ran.
    pub fn register(self: &Arc<Self>, registry: &mut Registry) {
        registry.session_hook(Priority::Prelude, Arc::new(Note(self.clone())));
        registry.session_hook(Priority::Notify, Arc::new(Forget(self.clone())));
    }

    /// `None` for a session that is not ending.
    pub fn why(&self, session: &FullJid) -> Option<SessionEnd> {
        self.ending.get(session).map(|why| *why)
    }

    /// Whether the session's goodbye is that of a session lost (status 333).
    pub fn is_lost(&self, session: &FullJid) -> bool {
        matches!(
            self.why(session),
            Some(SessionEnd::ConnectionLost | SessionEnd::ByServer)
        )
    }

    /// On a node of a cluster serving a room: a session that ended on another node, whose
    /// goodbye that node passed here, ended for `why` while the goodbye is handled.
    pub fn note_elsewhere(&self, session: &FullJid, why: SessionEnd) {
        self.ending.insert(session.clone(), why);
    }

    pub fn forget(&self, session: &FullJid) {
        self.ending.remove(session);
    }
}

struct Note(Arc<Departures>);

#[async_trait]
impl SessionHook for Note {
    async fn ended(&self, _: &Arc<Router>, session: &FullJid, _: bool, why: SessionEnd) {
        self.0.ending.insert(session.clone(), why);
    }
}

struct Forget(Arc<Departures>);

#[async_trait]
impl SessionHook for Forget {
    async fn ended(&self, _: &Arc<Router>, session: &FullJid, _: bool, _: SessionEnd) {
        self.0.ending.remove(session);
    }
}

/// XEP-0045 §7.14 for another server's users: the connection to `domain` was lost, so its
/// occupants' sessions may have ended with nobody able to tell the rooms. Each leaves every
/// room as a local occupant whose session ended does, with status 333 (its own copy goes to
/// it too: if its server is still there, its client learns it is out). An occupant whose
/// server comes back joins again like anyone else.
pub(super) async fn lost_domain(muc: &Muc, router: &Arc<Router>, domain: &str) {
    lose_occupants(muc, router, |jid| jid.domain().as_str() == domain).await;
}

/// Every occupant whose session `lost` names leaves every room this node serves, gone for a
/// technical reason (status 333): sessions nobody can ask any more, on a server we lost or
/// on a node of the cluster that died.
pub(super) async fn lose_occupants(
    muc: &Muc,
    router: &Arc<Router>,
    lost: impl Fn(&FullJid) -> bool,
) {
    for handle in muc.all_rooms() {
        let mut room = handle.lock().await;
        // A room emptied by the last removal is gone: nothing more to do in it.
        while !room.gone {
            let Some(index) = room.occupants.iter().position(|o| lost(&o.jid)) else {
                break;
            };
            // What it last said (its status) is not what it says on leaving: it said nothing.
            room.occupants[index].presence = Element::bare("presence", ns::CLIENT);
            remove_occupant(
                muc,
                router,
                &mut room,
                index,
                &[GONE_WITHOUT_LEAVING],
                ItemExtra::default(),
            )
            .await;
        }
    }
}
