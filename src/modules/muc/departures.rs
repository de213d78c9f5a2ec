//! Why sessions that are ending ended, while their end hooks run: the presence module's
//! goodbye reaches a room as an ordinary unavailable presence, and the room tells occupants
//! apart who left (closed their stream) from those gone for a technical reason (status 333).

use std::sync::Arc;

use async_trait::async_trait;
use dashmap::DashMap;
use jid::FullJid;

use crate::router::{Priority, Registry, Router, SessionEnd, SessionHook};

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
