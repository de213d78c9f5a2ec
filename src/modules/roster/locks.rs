//! One relationship (a user's roster item for one contact, plus the contact's pending
//! request) is read, changed and written by whichever session's task handles a stanza: the
//! user's own (outbound subscription stanzas, roster sets) or the contact's (inbound ones).
//! Without a lock two tasks can read the same state and the later write loses the earlier
//! change, leaving the two sides of a subscription disagreeing. Locks are per relationship
//! and only held between reading and writing, never while routing, since routing can come
//! back to the same relationship (an auto-reply) and would deadlock.

use std::sync::{Arc, LazyLock};

use dashmap::DashMap;
use tokio::sync::{Mutex, OwnedMutexGuard};

static LOCKS: LazyLock<DashMap<String, Arc<Mutex<()>>>> = LazyLock::new(DashMap::new);

pub struct RelationGuard {
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

/// Waits until nobody else is changing `username`'s relationship with `contact`.
pub async fn lock(username: &str, contact: &str) -> RelationGuard {
    let key = format!("{username}\u{0}{contact}");
    let mutex = LOCKS.entry(key.clone()).or_default().clone();
    let guard = mutex.lock_owned().await;
    RelationGuard {
        key,
        guard: Some(guard),
    }
}

impl Drop for RelationGuard {
    fn drop(&mut self) {
        drop(self.guard.take());
        // Forget the lock once nobody holds or awaits it, so the map only ever holds the
        // relationships being changed right now.
        LOCKS.remove_if(&self.key, |_, mutex| Arc::strong_count(mutex) == 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_same_relationship_is_serialised_and_forgotten_after() {
        let first = lock("alice", "bob@x").await;
        let waiting = tokio::spawn(async { lock("alice", "bob@x").await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        // Another relationship is not held up.
        drop(lock("alice", "carol@x").await);
        drop(first);
        drop(waiting.await.expect("second lock"));
        assert!(!LOCKS.contains_key("alice\u{0}bob@x"));
    }
}
