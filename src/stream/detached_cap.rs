//! The cap on detached sessions per account (`limits.max_detached_sessions_per_account`).
//! Each detached session holds a `Parked` ticket while it waits; when one more of the same
//! account parks beyond the cap, the ticket parked first is told to end, and its session ends
//! the way a resumption timeout ends it. Resuming or ending drops the ticket, which frees its
//! place.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use jid::BareJid;
use tokio::sync::oneshot;

type Accounts = Arc<Mutex<HashMap<BareJid, VecDeque<Waiting>>>>;

/// One parked session as the cap sees it: its ticket number and how to tell it to end.
struct Waiting {
    ticket: u64,
    end: oneshot::Sender<()>,
}

#[derive(Default)]
pub struct DetachedCap {
    max: usize,
    accounts: Accounts,
    tickets: AtomicU64,
}

impl DetachedCap {
    /// A cap of `max` detached sessions per account; 0 = none.
    pub fn new(max: usize) -> DetachedCap {
        DetachedCap {
            max,
            ..DetachedCap::default()
        }
    }

    /// Parks a session of `user`; ends the account's oldest parked sessions beyond the cap.
    pub fn park(&self, user: &BareJid) -> Parked {
        if self.max == 0 {
            return Parked::default();
        }
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        let (end, ended) = oneshot::channel();
        let mut accounts = lock(&self.accounts);
        let waiting = accounts.entry(user.clone()).or_default();
        waiting.push_back(Waiting { ticket, end });
        while waiting.len() > self.max {
            if let Some(oldest) = waiting.pop_front() {
                // Its session may be ending anyway (resumed a moment ago): nothing to tell.
                let _ = oldest.end.send(());
            }
        }
        Parked {
            place: Some(Place {
                accounts: self.accounts.clone(),
                user: user.clone(),
                ticket,
            }),
            ended: Some(ended),
            fired: false,
        }
    }

    /// Sessions of `user` parked now.
    #[cfg(test)]
    fn parked(&self, user: &BareJid) -> usize {
        lock(&self.accounts).get(user).map_or(0, VecDeque::len)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Place {
    accounts: Accounts,
    user: BareJid,
    ticket: u64,
}

/// A parked session's place under the cap; dropping it (resumed, ended) gives the place up.
#[derive(Default)]
#[must_use = "the place is given up when the ticket is dropped"]
pub struct Parked {
    place: Option<Place>,
    /// Fires when the cap ends this session; None when there is no cap, or once it fired.
    ended: Option<oneshot::Receiver<()>>,
    fired: bool,
}

impl Parked {
    /// Resolves when the session must end to make room for a newer one; never without a cap.
    pub async fn evicted(&mut self) {
        if self.fired {
            return;
        }
        let Some(ended) = self.ended.as_mut() else {
            return std::future::pending().await;
        };
        // Awaiting a `&mut` receiver is cancel-safe: `select!` may drop this at any point.
        let told = ended.await.is_ok();
        self.ended = None;
        if told {
            self.fired = true;
        } else {
            // The sender went without a word, which only dropping this ticket's own place
            // does: nothing to end.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        let Some(place) = self.place.take() else {
            return;
        };
        let mut accounts = lock(&place.accounts);
        if let Some(waiting) = accounts.get_mut(&place.user) {
            waiting.retain(|w| w.ticket != place.ticket);
            if waiting.is_empty() {
                accounts.remove(&place.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    fn evicted(parked: &mut Parked) -> bool {
        parked.evicted().now_or_never().is_some()
    }

    #[test]
    fn the_oldest_goes_when_one_too_many_parks() {
        let cap = DetachedCap::new(2);
        let alice = BareJid::new("alice@d.test").unwrap();
        let bob = BareJid::new("bob@d.test").unwrap();
        let mut first = cap.park(&alice);
        let mut second = cap.park(&alice);
        let mut bobs = cap.park(&bob);
        assert!(!evicted(&mut first));
        let mut third = cap.park(&alice);
        assert!(evicted(&mut first));
        assert!(!evicted(&mut second));
        assert!(!evicted(&mut third));
        assert!(!evicted(&mut bobs), "other accounts are not touched");
        assert_eq!(cap.parked(&alice), 2);
        drop(first);
        assert_eq!(cap.parked(&alice), 2, "an evicted ticket had no place left");
    }

    #[test]
    fn a_resumed_session_gives_its_place_back() {
        let cap = DetachedCap::new(1);
        let alice = BareJid::new("alice@d.test").unwrap();
        let first = cap.park(&alice);
        drop(first);
        assert_eq!(cap.parked(&alice), 0);
        assert!(lock(&cap.accounts).is_empty(), "nothing left behind");
        let mut second = cap.park(&alice);
        assert!(!evicted(&mut second));
    }

    #[test]
    fn no_cap_never_evicts_and_counts_nothing() {
        let cap = DetachedCap::new(0);
        let alice = BareJid::new("alice@d.test").unwrap();
        let mut all: Vec<Parked> = (0..10).map(|_| cap.park(&alice)).collect();
        assert!(all.iter_mut().all(|p| !evicted(p)));
        assert_eq!(cap.parked(&alice), 0);
    }
}
