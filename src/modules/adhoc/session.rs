//! Open command sessions (XEP-0050 §3.3): which command, at which stage, with what answers,
//! for whom. A session is bound to the full JID that started it, and forgotten after it sat
//! idle for the configured time or when its owner opened too many newer ones.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jid::Jid;

use super::command::Values;

#[derive(Debug, Clone)]
pub struct Session {
    pub node: String,
    pub owner: Jid,
    /// The stage whose form the client has been sent.
    pub stage: usize,
    pub values: Values,
    touched: Instant,
    started: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRefused {
    /// Never issued, expired, finished or canceled.
    Unknown,
    /// Another entity's session.
    NotOwner,
}

pub struct Sessions {
    open: Mutex<HashMap<String, Session>>,
    idle_timeout: Duration,
    per_owner: usize,
    /// Orders sessions by age, to find an owner's oldest.
    counter: AtomicU64,
}

impl Sessions {
    pub fn new(idle_timeout: Duration, per_owner: usize) -> Sessions {
        Sessions {
            open: Mutex::new(HashMap::new()),
            idle_timeout,
            per_owner: per_owner.max(1),
            counter: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the map cannot leave it half-changed: every change is one
        // insert or remove.
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Opens a session at stage 0; returns its id.
    pub fn start(&self, owner: Jid, node: &str) -> String {
        let id = new_id();
        let now = Instant::now();
        let mut open = self.lock();
        open.retain(|_, s| now.duration_since(s.touched) < self.idle_timeout);
        let mut owned: Vec<(u64, String)> = open
            .iter()
            .filter(|(_, s)| s.owner == owner)
            .map(|(id, s)| (s.started, id.clone()))
            .collect();
        if owned.len() >= self.per_owner {
            owned.sort();
            for (_, oldest) in owned.iter().take(owned.len() + 1 - self.per_owner) {
                open.remove(oldest);
            }
        }
        let started = self.counter.fetch_add(1, Ordering::Relaxed);
        open.insert(
            id.clone(),
            Session {
                node: node.to_owned(),
                owner,
                stage: 0,
                values: Values::default(),
                touched: now,
                started,
            },
        );
        id
    }

    /// Takes the session out while a request works on it (`put_back` returns it). Another
    /// entity's id is refused and left as it is, so its owner can go on.
    pub fn take(&self, id: &str, requester: &Jid, node: &str) -> Result<Session, SessionRefused> {
        let mut open = self.lock();
        let Some(session) = open.get(id) else {
            return Err(SessionRefused::Unknown);
        };
        if session.touched.elapsed() >= self.idle_timeout {
            open.remove(id);
            return Err(SessionRefused::Unknown);
        }
        if &session.owner != requester || session.node != node {
            return Err(SessionRefused::NotOwner);
        }
        open.remove(id).ok_or(SessionRefused::Unknown)
    }

    pub fn put_back(&self, id: String, mut session: Session) {
        session.touched = Instant::now();
        self.lock().insert(id, session);
    }
}

/// Unguessable: a session id is all that ties a request to a session besides its owner.
fn new_id() -> String {
    let bytes: [u8; 12] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
