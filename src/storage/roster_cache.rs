//! Rosters kept in memory in front of the database. Presence makes rosters hot: a login reads
//! the user's roster once to broadcast and probe, and every probe it sends makes the contact's
//! side look up one item. Clients fetch their roster at login, so the rosters of online users
//! are what gets cached.
//!
//! Every write goes through this wrapper and drops the user's entry, so within one process the
//! cache cannot serve stale data. Nodes of a cluster share one database: each write is also
//! announced (`on_write`), and the other nodes drop their entry (`forget_written_elsewhere`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use dashmap::DashMap;

use super::{RosterItem, RosterStore, RosterWrite, StorageResult};

struct CachedRoster {
    version: i64,
    items: Vec<RosterItem>,
    by_contact: HashMap<String, usize>,
}

/// Told the name of a user whose roster was written.
pub type Announce = Box<dyn Fn(&str) + Send + Sync>;

pub struct CachedRosterStore {
    inner: Arc<dyn RosterStore>,
    rosters: DashMap<String, Arc<CachedRoster>>,
    max_users: usize,
    /// Bumped after every write, before the user's entry is dropped: a read that overlapped
    /// a write sees it changed and does not cache what it read, which may predate the write.
    writes: AtomicU64,
    /// Told of each user whose roster this process wrote.
    on_write: std::sync::OnceLock<Announce>,
}

impl CachedRosterStore {
    pub fn new(inner: Arc<dyn RosterStore>, max_users: usize) -> CachedRosterStore {
        CachedRosterStore {
            inner,
            rosters: DashMap::new(),
            max_users,
            writes: AtomicU64::new(0),
            on_write: std::sync::OnceLock::new(),
        }
    }

    /// Calls `announce` with each user whose roster is written through this cache (once).
    pub fn on_write(&self, announce: Announce) {
        let _ = self.on_write.set(announce);
    }

    /// Every entry may be stale (a node of a cluster missed the others' announcements).
    pub fn forget_all(&self) {
        self.writes.fetch_add(1, Ordering::AcqRel);
        self.rosters.clear();
    }

    /// Another process wrote `username`'s roster.
    pub fn forget_written_elsewhere(&self, username: &str) {
        self.writes.fetch_add(1, Ordering::AcqRel);
        self.rosters.remove(username);
    }

    async fn cached(&self, username: &str) -> StorageResult<Arc<CachedRoster>> {
        if let Some(roster) = self.rosters.get(username) {
            return Ok(roster.clone());
        }
        let writes_before = self.writes.load(Ordering::Acquire);
        let (version, items) = self.inner.roster(username).await?;
        let by_contact = items
            .iter()
            .enumerate()
            .map(|(i, item)| (item.contact.clone(), i))
            .collect();
        let roster = Arc::new(CachedRoster {
            version,
            items,
            by_contact,
        });
        if self.writes.load(Ordering::Acquire) != writes_before {
            return Ok(roster);
        }
        if self.rosters.len() >= self.max_users {
            // Any victim will do: the next read reloads it.
            let victim = self.rosters.iter().next().map(|e| e.key().clone());
            if let Some(victim) = victim {
                self.rosters.remove(&victim);
            }
        }
        self.rosters.insert(username.to_owned(), roster.clone());
        Ok(roster)
    }

    fn forget(&self, username: &str) {
        self.forget_written_elsewhere(username);
        if let Some(announce) = self.on_write.get() {
            announce(username);
        }
    }
}

#[async_trait]
impl RosterStore for CachedRosterStore {
    async fn roster(&self, username: &str) -> StorageResult<(i64, Vec<RosterItem>)> {
        let roster = self.cached(username).await?;
        Ok((roster.version, roster.items.clone()))
    }

    async fn roster_version(&self, username: &str) -> StorageResult<i64> {
        Ok(self.cached(username).await?.version)
    }

    async fn roster_item(
        &self,
        username: &str,
        contact: &str,
    ) -> StorageResult<Option<RosterItem>> {
        let roster = self.cached(username).await?;
        Ok(roster
            .by_contact
            .get(contact)
            .and_then(|&i| roster.items.get(i))
            .cloned())
    }

    async fn put_roster_item(
        &self,
        username: &str,
        item: &RosterItem,
        max_items: u32,
    ) -> StorageResult<RosterWrite> {
        let result = self.inner.put_roster_item(username, item, max_items).await;
        self.forget(username);
        result
    }

    async fn delete_roster_item(
        &self,
        username: &str,
        contact: &str,
    ) -> StorageResult<Option<i64>> {
        let result = self.inner.delete_roster_item(username, contact).await;
        self.forget(username);
        result
    }

    async fn put_pending_in(
        &self,
        username: &str,
        contact: &str,
        stanza: &str,
    ) -> StorageResult<()> {
        self.inner.put_pending_in(username, contact, stanza).await
    }

    async fn delete_pending_in(&self, username: &str, contact: &str) -> StorageResult<bool> {
        self.inner.delete_pending_in(username, contact).await
    }

    async fn has_pending_in(&self, username: &str, contact: &str) -> StorageResult<bool> {
        self.inner.has_pending_in(username, contact).await
    }

    async fn pending_in(&self, username: &str) -> StorageResult<Vec<(String, String)>> {
        self.inner.pending_in(username).await
    }
}
