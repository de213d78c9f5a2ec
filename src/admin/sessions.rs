//! Who is online on this node, and ending sessions.
//!
//! XEP-0133 leaves "active" and "idle" to the server. Here a session is idle when its client
//! is not connected (waiting for XEP-0198 resumption), has not sent available presence, or
//! says it is away or extended away (`<show/>` `away`/`xa`); every other session is active.
//! A user is active with at least one active session, idle with sessions and none active.

use std::collections::BTreeMap;

use jid::{BareJid, FullJid};

use crate::router::{Router, SessionFlag};
use crate::xml::StreamCondition;

/// The session flag the ad-hoc module keeps on sessions whose last broadcast presence was
/// away or extended away.
pub const AWAY_FLAG: &str = "admin-away";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnlineSession {
    pub jid: FullJid,
    /// Sent available presence (with any priority).
    pub available: bool,
    pub idle: bool,
}

/// Every session bound on this node, sorted by JID.
pub fn online_sessions(router: &Router) -> Vec<OnlineSession> {
    let away = router.session_flag(AWAY_FLAG);
    let mut sessions: Vec<OnlineSession> = router
        .local_sessions()
        .into_iter()
        .map(|(jid, availability, flags)| {
            let available = availability.is_available();
            let idle = !available
                || flags.contains(SessionFlag::DISCONNECTED)
                || away.is_some_and(|away| flags.contains(away));
            OnlineSession {
                jid,
                available,
                idle,
            }
        })
        .collect();
    sessions.sort_by(|a, b| a.jid.as_str().cmp(b.jid.as_str()));
    sessions
}

/// Which users are online, and whether each is active.
#[derive(Debug, Default, Clone)]
pub struct OnlineUsers {
    /// Bare JID -> active (at least one active session).
    pub users: BTreeMap<BareJid, bool>,
}

impl OnlineUsers {
    pub fn online(&self) -> impl Iterator<Item = &BareJid> {
        self.users.keys()
    }
    pub fn active(&self) -> impl Iterator<Item = &BareJid> {
        self.users.iter().filter(|(_, a)| **a).map(|(u, _)| u)
    }
    pub fn idle(&self) -> impl Iterator<Item = &BareJid> {
        self.users.iter().filter(|(_, a)| !**a).map(|(u, _)| u)
    }
}

/// Online users of the domains `visible` accepts.
pub fn online_users(router: &Router, visible: impl Fn(&str) -> bool) -> OnlineUsers {
    let mut online = OnlineUsers::default();
    for session in online_sessions(router) {
        if !visible(session.jid.domain().as_str()) {
            continue;
        }
        let active = online.users.entry(session.jid.to_bare()).or_insert(false);
        *active |= !session.idle;
    }
    online
}

/// Ends every session of `user` (or the one session when a resource is given) with the
/// stream error `condition`; returns how many were told to end.
pub fn end_sessions(
    router: &Router,
    user: &jid::Jid,
    condition: StreamCondition,
    text: &'static str,
) -> usize {
    let targets: Vec<FullJid> = match user.try_as_full() {
        Ok(full) => vec![full.clone()],
        Err(_) => router.bound_resources(&user.to_bare()),
    };
    targets
        .iter()
        .filter(|jid| router.terminate_session(jid, condition.clone(), text))
        .count()
}
