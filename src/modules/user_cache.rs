//! A per-account value kept in memory in front of storage, for data that hot paths (stanza
//! filters, presence decoration) read on every stanza but that changes rarely: blocklists,
//! vCard photo hashes.
//!
//! Coherence: writers hold `write_lock()`, commit to storage, then `publish` the new value.
//! A reader that misses loads from storage and inserts only if no publish happened since it
//! started; otherwise it loads again. So a slow load can never put back a value older than one
//! a writer already published, even if the entry was evicted in between.
//!
//! Nodes of a cluster each keep their own cache of data they share in storage: a cache with a
//! topic announces each publish, and the other nodes drop their entry (`Invalidation`).
//!
//! Size: entries of users with a bound session stay; the others are evicted when the map grows
//! past a threshold that doubles with the number kept, so sweeps cost O(1) amortized.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;
use jid::{BareJid, Jid};
use tokio::sync::{Mutex, MutexGuard};

use crate::router::Router;

/// Entries for offline users kept before the first sweep.
const SWEEP_AT_LEAST: usize = 4096;

/// Loads that raced with a write and were retried before giving up on caching.
const MAX_LOAD_ATTEMPTS: usize = 4;

pub struct UserCache<V> {
    /// Keyed by the bare JID as a string, so a lookup can borrow it from a full JID.
    map: DashMap<String, V>,
    /// Bumped by every publish; a load that saw it change retries.
    generation: AtomicU64,
    /// Map size at which the next sweep runs.
    sweep_at: AtomicUsize,
    /// Serialises writers: they are rare, and one lock makes "commit, then publish" ordered.
    writes: Mutex<()>,
    /// The cluster topic on which publishes are announced to other nodes.
    topic: Option<&'static str>,
}

impl<V: Clone> Default for UserCache<V> {
    fn default() -> Self {
        UserCache {
            map: DashMap::new(),
            generation: AtomicU64::new(0),
            sweep_at: AtomicUsize::new(SWEEP_AT_LEAST),
            writes: Mutex::new(()),
            topic: None,
        }
    }
}

impl<V: Clone> UserCache<V> {
    /// A cache whose publishes the other nodes of a cluster hear of on `topic` (register
    /// `Invalidation` for it).
    pub fn shared(topic: &'static str) -> Self {
        UserCache {
            topic: Some(topic),
            ..UserCache::default()
        }
    }

    /// The cached value, or `load`'s (cached unless a write raced with it).
    pub async fn get_or_load<F, Fut, E>(&self, router: &Router, user: &str, load: F) -> Result<V, E>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let mut attempts = 0;
        loop {
            if let Some(value) = self.map.get(user) {
                return Ok(value.clone());
            }
            let seen = self.generation.load(Ordering::SeqCst);
            let value = load().await?;
            attempts += 1;
            // Checked under the entry's shard lock, which `publish` also takes: either we
            // insert before the racing publish (which then overwrites us) or we see it.
            let cached = {
                let entry = self.map.entry(user.to_owned());
                (self.generation.load(Ordering::SeqCst) == seen)
                    .then(|| entry.or_insert(value.clone()).clone())
            };
            if let Some(value) = cached {
                // After the shard lock is released: `retain` takes every shard.
                self.sweep_if_large(router);
                return Ok(value);
            }
            if attempts >= MAX_LOAD_ATTEMPTS {
                return Ok(value);
            }
        }
    }

    /// Held across a write to storage and the `publish` that follows it.
    pub async fn write_lock(&self) -> MutexGuard<'_, ()> {
        self.writes.lock().await
    }

    /// Replaces the cached value after a committed write; call with `write_lock` held.
    /// On a cluster, returns once the other nodes were told (their copies are dropped before
    /// the writer's client hears that the write is done).
    pub async fn publish(
        &self,
        _guard: &MutexGuard<'_, ()>,
        router: &Router,
        user: &str,
        value: V,
    ) {
        {
            let entry = self.map.entry(user.to_owned());
            self.generation.fetch_add(1, Ordering::SeqCst);
            entry.insert(value);
        }
        if let (Some(topic), Some(cluster)) = (self.topic, router.cluster()) {
            cluster
                .broadcast_and_wait(topic, user.as_bytes().to_vec())
                .await;
        }
    }

    /// Drops the entry (e.g. when the user's last session ended).
    pub fn forget(&self, user: &str) {
        self.map.remove(user);
    }

    /// Evicts users without a bound session once the map reaches the threshold, then sets the
    /// next threshold to twice what is left.
    fn sweep_if_large(&self, router: &Router) {
        let threshold = self.sweep_at.load(Ordering::Relaxed);
        if self.map.len() < threshold {
            return;
        }
        self.map
            .retain(|user, _| BareJid::new(user).is_ok_and(|user| router.has_sessions(&user)));
        let next = (self.map.len() * 2).max(SWEEP_AT_LEAST);
        self.sweep_at.store(next, Ordering::Relaxed);
    }
}

/// The receiving side of a shared cache's topic: another node wrote a user's value.
pub struct Invalidation(pub Box<dyn Fn(&str) + Send + Sync>);

#[async_trait::async_trait]
impl crate::router::ClusterTopic for Invalidation {
    async fn received(
        &self,
        _router: &std::sync::Arc<Router>,
        _from: crate::router::NodeId,
        payload: Vec<u8>,
    ) {
        if let Ok(user) = std::str::from_utf8(&payload) {
            (self.0)(user);
        }
    }
}

/// The bare part of a JID, borrowed: everything before the first `/` (node and domain cannot
/// contain one).
pub fn bare_str(jid: &Jid) -> &str {
    let s = jid.as_str();
    match jid.resource() {
        Some(resource) => &s[..s.len() - resource.as_str().len() - 1],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_str_cuts_at_the_first_slash() {
        let full = Jid::new("a@b.example/res/with/slashes").unwrap();
        assert_eq!(bare_str(&full), "a@b.example");
        let bare = Jid::new("a@b.example").unwrap();
        assert_eq!(bare_str(&bare), "a@b.example");
        let domain_resource = Jid::new("b.example/r").unwrap();
        assert_eq!(bare_str(&domain_resource), "b.example");
    }
}
