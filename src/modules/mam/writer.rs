//! The archive writer: one task that commits archive records in batches, off the routing path.
//!
//! Ordering (what makes `after-id` catch-up gap-free): ids come from one generator but are
//! taken on many session tasks at once. `Writer::archive` takes the id and puts the record on
//! the queue under one lock, so queue order is id order; the single writer task commits the
//! queue in order, so what is committed is always a prefix of the id order. A device that saw
//! id N can therefore never later find an id below N appearing.
//!
//! Visibility: `Writer::flush` puts a barrier on the same queue and waits for the writer to
//! reach it, i.e. for every record queued before the call to be committed. Queries run after
//! it, so they see every message whose stanza-id was handed out before the query arrived.
//!
//! Retention runs here too, after appends: an owner's archive is trimmed to
//! `max_messages_per_user` once per `trim_every` appends to it (not on every message), and
//! messages older than `expire_after_days` are deleted once an hour.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::config::MamConfig;
use crate::ids::{self, IdGenerator};
use crate::storage::{ArchiveStore, ArchivedMessage};

enum Job {
    Record(ArchivedMessage),
    Flush(oneshot::Sender<()>),
    /// Deletes an archive after every record queued before it (a room that is gone).
    DeleteOwner(String),
}

pub struct Writer {
    tx: mpsc::Sender<Job>,
    /// Held across "take an id" and "queue the record", so queue order is id order.
    order: Mutex<()>,
}

/// Attempts at committing one batch before it is given up (and logged).
const APPEND_ATTEMPTS: u32 = 3;
/// How often the age-based expiry runs (when configured).
const EXPIRE_EVERY: Duration = Duration::from_secs(3600);

impl Writer {
    /// Starts the writer task on the current Tokio runtime.
    pub fn spawn(store: Arc<dyn ArchiveStore>, config: &MamConfig) -> Writer {
        let (tx, rx) = mpsc::channel(config.queue_size.max(1));
        let task = Task {
            store,
            batch_size: config.batch_size.max(1),
            keep: config.max_messages_per_user,
            trim_every: trim_interval(config.max_messages_per_user),
            expire_after_ms: i64::from(config.expire_after_days) * 86_400_000,
            appended: HashMap::new(),
        };
        tokio::spawn(task.run(rx));
        Writer {
            tx,
            order: Mutex::new(()),
        }
    }

    /// Gives `record` the next id (and its timestamp) and queues it; returns the id, or `None`
    /// if the writer is gone (server shutting down). Waits only when the queue is full.
    pub async fn archive(&self, ids: &IdGenerator, mut record: ArchivedMessage) -> Option<i64> {
        // The slot is reserved before the lock, so the lock is never held across a wait.
        let permit = self.tx.reserve().await.ok()?;
        let _order = self.order.lock().unwrap_or_else(|e| e.into_inner());
        let id = ids.next_id();
        record.id = id;
        record.timestamp_ms = IdGenerator::timestamp_ms(id);
        permit.send(Job::Record(record));
        Some(id)
    }

    /// Deletes `owner`'s archive once everything queued before is committed. Does not wait
    /// (callable without a runtime context, e.g. under a room's lock).
    pub fn delete_owner(&self, owner: String) {
        match self.tx.try_send(Job::DeleteOwner(owner)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(job)) => {
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(job).await;
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Returns once every record queued before the call is committed (or given up).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Job::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// Appends to one owner between two trims: 1% of the limit (so an archive exceeds it by at
/// most 1%), at least 1.
fn trim_interval(keep: u64) -> u64 {
    (keep / 100).max(1)
}

struct Task {
    store: Arc<dyn ArchiveStore>,
    batch_size: usize,
    /// 0: no count limit.
    keep: u64,
    trim_every: u64,
    /// 0: no age limit.
    expire_after_ms: i64,
    /// Appends per owner since that owner's last trim.
    appended: HashMap<String, u64>,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut expire = tokio::time::interval(EXPIRE_EVERY);
        expire.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(self.batch_size);
        let mut waiters = Vec::new();
        loop {
            let first = tokio::select! {
                job = rx.recv() => match job {
                    Some(job) => job,
                    None => break,
                },
                _ = expire.tick() => {
                    self.expire().await;
                    continue;
                }
            };
            let mut next = Some(first);
            let mut delete = None;
            while let Some(job) = next.take() {
                match job {
                    Job::Record(record) => batch.push(record),
                    Job::Flush(done) => waiters.push(done),
                    Job::DeleteOwner(owner) => {
                        // Ends the batch: what follows must come after the deletion.
                        delete = Some(owner);
                        break;
                    }
                }
                if batch.len() < self.batch_size {
                    next = rx.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.append(&batch).await;
            }
            for done in waiters.drain(..) {
                let _ = done.send(());
            }
            self.retain(&batch).await;
            batch.clear();
            if let Some(owner) = delete {
                self.appended.remove(&owner);
                if let Err(e) = self.store.archive_delete_owner(&owner).await {
                    warn!(error = %e, owner, "deleting an archive failed");
                }
            }
        }
        debug!("archive writer stopped");
    }

    async fn append(&self, batch: &[ArchivedMessage]) {
        for attempt in 1..=APPEND_ATTEMPTS {
            match self.store.archive_append(batch).await {
                Ok(()) => return,
                Err(e) if attempt < APPEND_ATTEMPTS => {
                    warn!(error = %e, attempt, records = batch.len(), "archiving failed, retrying");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                }
                Err(e) => {
                    warn!(error = %e, records = batch.len(), "archiving failed, records lost");
                }
            }
        }
    }

    /// Count-based retention for the owners this batch touched.
    async fn retain(&mut self, batch: &[ArchivedMessage]) {
        if self.keep == 0 {
            return;
        }
        let mut due = Vec::new();
        for record in batch {
            let n = self.appended.entry(record.owner.clone()).or_insert(0);
            *n += 1;
            if *n == self.trim_every {
                due.push(record.owner.clone());
            }
        }
        for owner in due {
            self.appended.remove(&owner);
            match self.store.archive_trim(&owner, self.keep).await {
                Ok(0) => {}
                Ok(n) => debug!(owner, deleted = n, "archive trimmed"),
                Err(e) => warn!(error = %e, owner, "trimming an archive failed"),
            }
        }
    }

    async fn expire(&self) {
        if self.expire_after_ms <= 0 {
            return;
        }
        let before = ids::now_ms() as i64 - self.expire_after_ms;
        match self.store.archive_expire(before).await {
            Ok(0) => {}
            Ok(n) => debug!(deleted = n, "expired archived messages"),
            Err(e) => warn!(error = %e, "expiring archived messages failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_at_one_percent_at_least_every_append() {
        assert_eq!(trim_interval(10_000), 100);
        assert_eq!(trim_interval(5), 1);
        assert_eq!(trim_interval(0), 1);
    }
}
