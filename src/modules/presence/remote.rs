//! Which sessions of other servers' users local users were told are available, so that when
//! the connection to such a server is lost (`RemoteDomainHook`) they can be told those sessions
//! are gone: the unavailable presence the remote server would have sent, had it been able to.
//!
//! One entry per (remote session, local account) that available presence was delivered to,
//! dropped on that session's unavailable. Kept by the remote session's domain, so a loss takes
//! its domain's entries in one step. Bounded (`MAX_PER_DOMAIN`, `MAX_TOTAL`): past the bounds
//! new sessions are not remembered, and a lost connection leaves them looking available, as
//! before this existed; a remote server cannot grow this without limit by sending presence
//! from sessions it makes up.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;
use jid::{BareJid, FullJid};
use tracing::debug;

/// Entries one remote domain may hold: its users' sessions times the local accounts each one
/// is available to. A large server with many contacts here stays well below.
pub const MAX_PER_DOMAIN: usize = 20_000;
/// Entries all remote domains together may hold (a few megabytes at most).
pub const MAX_TOTAL: usize = 100_000;

#[derive(Default)]
struct Domain {
    sessions: HashMap<FullJid, HashSet<BareJid>>,
    entries: usize,
}

#[derive(Default)]
pub struct RemoteAvailable {
    domains: DashMap<String, Domain>,
    total: AtomicUsize,
}

impl RemoteAvailable {
    /// Available presence from `session` reached `user`.
    pub fn available(&self, session: &FullJid, user: &BareJid) {
        let domain = session.domain().as_str();
        let mut entry = self.domains.entry(domain.to_owned()).or_default();
        let known = entry
            .sessions
            .get(session)
            .is_some_and(|users| users.contains(user));
        if known {
            return;
        }
        if entry.entries >= MAX_PER_DOMAIN || !self.reserve() {
            debug!(%session, %user, "remote presence not remembered: bound reached");
            return;
        }
        entry
            .sessions
            .entry(session.clone())
            .or_default()
            .insert(user.clone());
        entry.entries += 1;
    }

    /// Unavailable presence from `session` reached `user`.
    pub fn unavailable(&self, session: &FullJid, user: &BareJid) {
        let domain = session.domain().as_str();
        let Some(mut entry) = self.domains.get_mut(domain) else {
            return;
        };
        let removed = match entry.sessions.get_mut(session) {
            Some(users) => {
                let removed = users.remove(user);
                if users.is_empty() {
                    entry.sessions.remove(session);
                }
                removed
            }
            None => false,
        };
        if removed {
            entry.entries -= 1;
            self.total.fetch_sub(1, Ordering::AcqRel);
        }
        let empty = entry.sessions.is_empty();
        drop(entry);
        if empty {
            self.domains.remove_if(domain, |_, d| d.sessions.is_empty());
        }
    }

    /// Forgets every session of `domain`, returning each with the local accounts it was
    /// available to.
    pub fn take_domain(&self, domain: &str) -> Vec<(FullJid, Vec<BareJid>)> {
        let Some((_, taken)) = self.domains.remove(domain) else {
            return Vec::new();
        };
        self.total.fetch_sub(taken.entries, Ordering::AcqRel);
        taken
            .sessions
            .into_iter()
            .map(|(session, users)| (session, users.into_iter().collect()))
            .collect()
    }

    /// Entries held now, all domains.
    #[cfg(test)]
    fn entries(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// Counts one more entry within `MAX_TOTAL`; false (not counted) past it.
    fn reserve(&self) -> bool {
        self.total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_TOTAL).then_some(n + 1)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(s: &str) -> FullJid {
        FullJid::new(s).expect("full jid")
    }

    fn bare(s: &str) -> BareJid {
        BareJid::new(s).expect("bare jid")
    }

    #[test]
    fn unavailable_forgets_and_a_loss_takes_only_its_domain() {
        let remote = RemoteAvailable::default();
        let bob = full("bob@b.test/phone");
        let carol = full("carol@c.test/pc");
        remote.available(&bob, &bare("alice@a.test"));
        remote.available(&bob, &bare("dave@a.test"));
        remote.available(&bob, &bare("dave@a.test"));
        remote.available(&carol, &bare("alice@a.test"));
        assert_eq!(remote.entries(), 3);
        remote.unavailable(&bob, &bare("dave@a.test"));
        assert_eq!(remote.entries(), 2);
        let taken = remote.take_domain("b.test");
        assert_eq!(taken, vec![(bob.clone(), vec![bare("alice@a.test")])]);
        assert_eq!(remote.entries(), 1);
        assert!(
            remote.take_domain("b.test").is_empty(),
            "a second loss finds nothing"
        );
        remote.unavailable(&carol, &bare("alice@a.test"));
        assert_eq!(remote.entries(), 0);
        assert!(remote.domains.is_empty());
    }

    #[test]
    fn one_domain_cannot_take_more_than_its_share() {
        let remote = RemoteAvailable::default();
        let alice = bare("alice@a.test");
        for i in 0..MAX_PER_DOMAIN + 10 {
            remote.available(&full(&format!("u{i}@evil.test/r")), &alice);
        }
        assert_eq!(remote.entries(), MAX_PER_DOMAIN);
        remote.available(&full("bob@b.test/phone"), &alice);
        assert_eq!(
            remote.entries(),
            MAX_PER_DOMAIN + 1,
            "other domains still count"
        );
        assert_eq!(remote.take_domain("evil.test").len(), MAX_PER_DOMAIN);
        assert_eq!(remote.entries(), 1);
    }
}
