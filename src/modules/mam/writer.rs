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
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

use crate::config::MamConfig;
use crate::ids::{self, IdGenerator};
use crate::storage::{ArchiveStore, ArchivedMessage, StorageResult};

enum Job {
    Record(ArchivedMessage),
    Flush(oneshot::Sender<()>),
    /// Deletes an archive after every record queued before it (a room that is gone).
    DeleteOwner(String),
}

/// Why a record was not queued, or a flush did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The writer has stopped: the server is shutting down.
    #[error("the archive writer has stopped")]
    Stopped,
    /// Storage is failing and the record cannot be committed (or queued) now.
    #[error("the message archive's storage is unavailable")]
    Unavailable,
}

/// Failure policy (storage down, locked or read-only):
///
/// - A batch that fails to commit is retried, with backoff, until it commits: nothing queued
///   is dropped because storage was away for a while. Inserts ignore ids already stored, so
///   a retry after a commit whose answer was lost adds no duplicate.
/// - While a batch is failing, the writer reports itself as failing. A full queue then does
///   not make senders wait for a slot (which would hold every archiving session's routing
///   until storage returns): `archive` refuses at once and the caller bounces the message
///   with `resource-constraint` (type `wait`). The message is then neither delivered nor
///   archived, and its sender knows to send it again; a delivered message always has its
///   archive record. While storage keeps up, a full queue is ordinary backpressure.
/// - `flush` (queries) gives up as soon as the writer is failing, so a query never waits for
///   storage to come back; the client gets an error of type `wait`.
/// - At shutdown, `flush_before_shutdown` waits a bounded time, then the writer stops
///   retrying and logs, at error level, how many records were not committed.
pub struct Writer {
    tx: mpsc::Sender<Job>,
    /// Held across "take an id" and "queue the record", so queue order is id order.
    order: Mutex<()>,
    /// True while the writer holds a batch it could not commit.
    failing: watch::Receiver<bool>,
    /// Records queued and not yet committed.
    pending: Arc<AtomicUsize>,
    /// Set at shutdown: a failing batch is given up (and logged) instead of retried.
    stop: Arc<AtomicBool>,
}

/// First pause after a failed commit; doubled after each failure up to `RETRY_MAX`.
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// Longest pause between two attempts: also how late, at most, the writer notices that
/// storage is back.
const RETRY_MAX: Duration = Duration::from_secs(2);
/// How long a small batch waits for more records before it is committed (see `Task::collect`).
const LINGER: Duration = Duration::from_millis(5);
/// A batch this large is committed without lingering: the commit's fixed cost is already
/// shared by enough records.
const LINGER_BELOW: usize = 64;
/// How often the age-based expiry runs (when configured).
const EXPIRE_EVERY: Duration = Duration::from_secs(3600);

impl Writer {
    /// Starts the writer task on the current Tokio runtime.
    pub fn spawn(store: Arc<dyn ArchiveStore>, config: &MamConfig) -> Writer {
        let (tx, rx) = mpsc::channel(config.queue_size.max(1));
        let (failing_tx, failing) = watch::channel(false);
        let pending = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let task = Task {
            store,
            batch_size: config.batch_size.max(1),
            keep: config.max_messages_per_user,
            trim_every: trim_interval(config.max_messages_per_user),
            expire_after_ms: i64::from(config.expire_after_days) * 86_400_000,
            appended: HashMap::new(),
            failing: failing_tx,
            pending: pending.clone(),
            stop: stop.clone(),
        };
        tokio::spawn(task.run(rx));
        Writer {
            tx,
            order: Mutex::new(()),
            failing,
            pending,
            stop,
        }
    }

    /// Gives `record` the next id (and its timestamp) and queues it; returns the id. Waits
    /// only when the queue is full and storage is keeping up (see the policy above).
    pub async fn archive(
        &self,
        ids: &IdGenerator,
        mut record: ArchivedMessage,
    ) -> Result<i64, Refused> {
        // The slot is reserved before the lock, so the lock is never held across a wait.
        let permit = self.slot().await?;
        let _order = self.order.lock().unwrap_or_else(|e| e.into_inner());
        let id = ids.next_id();
        record.id = id;
        record.timestamp_ms = IdGenerator::timestamp_ms(id);
        self.pending.fetch_add(1, Ordering::Relaxed);
        permit.send(Job::Record(record));
        Ok(id)
    }

    /// A queue slot: at once if one is free, else once one frees up, unless the writer is (or
    /// becomes) failing meanwhile.
    async fn slot(&self) -> Result<mpsc::Permit<'_, Job>, Refused> {
        match self.tx.try_reserve() {
            Ok(permit) => Ok(permit),
            Err(mpsc::error::TrySendError::Closed(())) => Err(Refused::Stopped),
            Err(mpsc::error::TrySendError::Full(())) => {
                let mut failing = self.failing.clone();
                tokio::select! {
                    biased;
                    permit = self.tx.reserve() => permit.map_err(|_| Refused::Stopped),
                    _ = failing.wait_for(|f| *f) => Err(Refused::Unavailable),
                }
            }
        }
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

    /// Returns once every record queued before the call is committed; `Unavailable` as soon
    /// as the writer is failing (storage down), rather than waiting for storage to return.
    pub async fn flush(&self) -> Result<(), Refused> {
        let (done, wait) = oneshot::channel();
        self.slot().await?.send(Job::Flush(done));
        let mut failing = self.failing.clone();
        tokio::select! {
            biased;
            result = wait => result.map_err(|_| Refused::Stopped),
            _ = failing.wait_for(|f| *f) => Err(Refused::Unavailable),
        }
    }

    /// At shutdown: waits up to `grace` for every queued record to be committed; if storage
    /// is still failing then, the writer gives up and logs how many records were lost.
    pub async fn flush_before_shutdown(&self, grace: Duration) {
        let (done, wait) = oneshot::channel();
        let flushed = async {
            if self.tx.send(Job::Flush(done)).await.is_ok() {
                let _ = wait.await;
            }
        };
        if tokio::time::timeout(grace, flushed).await.is_err() {
            self.stop.store(true, Ordering::Relaxed);
            error!(
                records = self.pending.load(Ordering::Relaxed),
                "archive storage still failing at shutdown: queued archive records are lost"
            );
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
    failing: watch::Sender<bool>,
    pending: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
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
            let delete = self.collect(&mut rx, first, &mut batch, &mut waiters).await;
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
                let store = &self.store;
                let owner = owner.as_str();
                let deleted = self
                    .until_done("deleting an archive", 0, || async move {
                        store.archive_delete_owner(owner).await.map(|_| ())
                    })
                    .await;
                if !deleted {
                    error!(owner, "archive not deleted: storage failing at shutdown");
                }
            }
        }
        debug!("archive writer stopped");
    }

    /// Gathers the next batch, starting with `first`: whatever is queued, and then, while the
    /// batch is small and nobody waits for it, what arrives within `LINGER`. Returns the owner
    /// of a deletion, which ends the batch (what follows it must come after the deletion).
    ///
    /// Why linger: at a few thousand messages a second, records arrive one message (two
    /// records) at a time, and committing each pair alone costs several round trips to the
    /// database's thread (or server) per message, more CPU than routing the message itself.
    /// A few milliseconds more before a record is committed change nothing a client sees: a
    /// query's flush ends the wait at once, and delivery never waits for the archive.
    async fn collect(
        &self,
        rx: &mut mpsc::Receiver<Job>,
        first: Job,
        batch: &mut Vec<ArchivedMessage>,
        waiters: &mut Vec<oneshot::Sender<()>>,
    ) -> Option<String> {
        let deadline = tokio::time::Instant::now() + LINGER;
        let mut next = Some(first);
        loop {
            while let Some(job) = next.take() {
                match job {
                    Job::Record(record) => batch.push(record),
                    Job::Flush(done) => waiters.push(done),
                    Job::DeleteOwner(owner) => return Some(owner),
                }
                if batch.len() < self.batch_size {
                    next = rx.try_recv().ok();
                }
            }
            let small = batch.len() < LINGER_BELOW.min(self.batch_size);
            if !small || !waiters.is_empty() || batch.is_empty() {
                return None;
            }
            let arrived = tokio::select! {
                job = rx.recv() => job,
                _ = tokio::time::sleep_until(deadline) => None,
            };
            match arrived {
                Some(job) => next = Some(job),
                // The linger is over, or the server is stopping.
                None => return None,
            }
        }
    }

    async fn append(&self, batch: &[ArchivedMessage]) {
        let committed = self
            .until_done("archiving", batch.len(), || {
                self.store.archive_append(batch)
            })
            .await;
        if !committed {
            error!(
                records = batch.len(),
                "archive records lost: storage failing at shutdown"
            );
        }
        self.pending.fetch_sub(batch.len(), Ordering::Relaxed);
    }

    /// Runs `op` until it succeeds, pausing between attempts (see the policy on `Writer`);
    /// false only if the server stopped it meanwhile.
    async fn until_done<F, Fut>(&self, what: &str, records: usize, op: F) -> bool
    where
        F: Fn() -> Fut,
        Fut: Future<Output = StorageResult<()>>,
    {
        let mut pause = RETRY_FIRST;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            match op().await {
                Ok(()) => {
                    if attempt > 1 {
                        info!(attempts = attempt, records, "{what} works again");
                        self.failing.send_replace(false);
                    }
                    return true;
                }
                Err(e) => {
                    if self.stop.load(Ordering::Relaxed) {
                        warn!(error = %e, records, "{what} failed at shutdown; giving up");
                        self.failing.send_replace(false);
                        return false;
                    }
                    if attempt == 1 {
                        self.failing.send_replace(true);
                    }
                    warn!(error = %e, attempt, records, "{what} failed; retrying until storage is back");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RETRY_MAX);
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
            let owner = record.owner.as_str();
            // Looked up by `&str` first: the owner is copied only the first time it appears,
            // not once per record (`entry` would want an owned key every time).
            let n = match self.appended.get_mut(owner) {
                Some(n) => {
                    *n += 1;
                    *n
                }
                None => {
                    self.appended.insert(owner.to_owned(), 1);
                    1
                }
            };
            if n == self.trim_every {
                due.push(owner.to_owned());
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
    use crate::storage::{
        ArchiveBound, ArchiveFilter, ArchivePage, ArchivePrefs, ArchiveQuery, SqliteStorage,
        StorageError,
    };
    use async_trait::async_trait;
    use std::sync::atomic::AtomicU32;

    /// A real (in-memory) archive that can be made to fail: `down` fails every append before
    /// it reaches the database; `lose_answer` commits the next append, then reports failure
    /// (a commit whose answer was lost).
    struct Flaky {
        inner: SqliteStorage,
        down: AtomicBool,
        lose_answer: AtomicBool,
        attempts: AtomicU32,
    }

    fn gone() -> StorageError {
        StorageError::Io(std::io::Error::other("storage is down"))
    }

    #[async_trait]
    impl ArchiveStore for Flaky {
        async fn archive_append(&self, batch: &[ArchivedMessage]) -> StorageResult<()> {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err(gone());
            }
            self.inner.archive_append(batch).await?;
            if self.lose_answer.swap(false, Ordering::SeqCst) {
                return Err(gone());
            }
            Ok(())
        }
        async fn archive_query(&self, o: &str, q: &ArchiveQuery) -> StorageResult<ArchivePage> {
            self.inner.archive_query(o, q).await
        }
        async fn archive_count(&self, o: &str, f: &ArchiveFilter) -> StorageResult<u64> {
            self.inner.archive_count(o, f).await
        }
        async fn archive_contains(&self, o: &str, id: i64) -> StorageResult<bool> {
            self.inner.archive_contains(o, id).await
        }
        async fn archive_bounds(
            &self,
            o: &str,
        ) -> StorageResult<Option<(ArchiveBound, ArchiveBound)>> {
            self.inner.archive_bounds(o).await
        }
        async fn archive_trim(&self, o: &str, keep: u64) -> StorageResult<u64> {
            self.inner.archive_trim(o, keep).await
        }
        async fn archive_expire(&self, before_ms: i64) -> StorageResult<u64> {
            self.inner.archive_expire(before_ms).await
        }
        async fn archive_delete_owner(&self, o: &str) -> StorageResult<u64> {
            self.inner.archive_delete_owner(o).await
        }
        async fn archive_prefs(&self, o: &str) -> StorageResult<Option<ArchivePrefs>> {
            self.inner.archive_prefs(o).await
        }
        async fn set_archive_prefs(&self, o: &str, p: &ArchivePrefs) -> StorageResult<()> {
            self.inner.set_archive_prefs(o, p).await
        }
    }

    const OWNER: &str = "alice@example.org";
    /// A hang guard only: every wait below ends on an event, not on this.
    const WAIT: Duration = Duration::from_secs(20);

    async fn flaky() -> Arc<Flaky> {
        Arc::new(Flaky {
            inner: SqliteStorage::open("sqlite::memory:")
                .await
                .expect("sqlite"),
            down: AtomicBool::new(false),
            lose_answer: AtomicBool::new(false),
            attempts: AtomicU32::new(0),
        })
    }

    fn config(queue_size: usize, batch_size: usize) -> MamConfig {
        MamConfig {
            queue_size,
            batch_size,
            max_messages_per_user: 0,
            ..MamConfig::default()
        }
    }

    fn record(n: usize) -> ArchivedMessage {
        ArchivedMessage {
            owner: OWNER.into(),
            id: 0,
            timestamp_ms: 0,
            with: "bob@example.org".into(),
            outgoing: true,
            stanza: format!("<message xmlns='jabber:client'><body>{n}</body></message>"),
        }
    }

    async fn stored_ids(store: &Flaky) -> Vec<i64> {
        let query = ArchiveQuery {
            filter: ArchiveFilter::default(),
            limit: 1000,
            backward: false,
        };
        let page = store.archive_query(OWNER, &query).await.expect("query");
        page.rows.iter().map(|r| r.id).collect()
    }

    /// Waits (without asserting anything about time) until `cond` holds.
    async fn until(what: &str, cond: impl Fn() -> bool) {
        let waited = tokio::time::timeout(WAIT, async {
            while !cond() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "never happened: {what}");
    }

    /// Flushes until the writer has committed everything (storage being back).
    async fn flushed(writer: &Writer) {
        let done = tokio::time::timeout(WAIT, async {
            while writer.flush().await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(done.is_ok(), "the writer never caught up");
    }

    #[tokio::test]
    async fn a_batch_is_retried_until_storage_is_back_nothing_lost() {
        let store = flaky().await;
        store.down.store(true, Ordering::SeqCst);
        let writer = Writer::spawn(store.clone(), &config(100, 2));
        let ids = IdGenerator::new(1);
        let mut queued = Vec::new();
        for n in 0..5 {
            queued.push(writer.archive(&ids, record(n)).await.expect("queued"));
        }
        // Well past the three attempts after which the writer used to drop the batch.
        until("six failed attempts", || {
            store.attempts.load(Ordering::SeqCst) >= 6
        })
        .await;
        assert_eq!(writer.flush().await, Err(Refused::Unavailable));
        store.down.store(false, Ordering::SeqCst);
        flushed(&writer).await;
        assert_eq!(
            stored_ids(&store).await,
            queued,
            "all of them, once, in order"
        );
    }

    #[tokio::test]
    async fn a_commit_whose_answer_was_lost_is_not_stored_twice() {
        let store = flaky().await;
        store.lose_answer.store(true, Ordering::SeqCst);
        let writer = Writer::spawn(store.clone(), &config(100, 100));
        let ids = IdGenerator::new(1);
        let mut queued = Vec::new();
        for n in 0..3 {
            queued.push(writer.archive(&ids, record(n)).await.expect("queued"));
        }
        flushed(&writer).await;
        assert!(store.attempts.load(Ordering::SeqCst) >= 2, "retried");
        assert_eq!(stored_ids(&store).await, queued);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_while_storage_fails() {
        let store = flaky().await;
        store.down.store(true, Ordering::SeqCst);
        let writer = Writer::spawn(store.clone(), &config(2, 1));
        let ids = IdGenerator::new(1);
        let first = writer.archive(&ids, record(0)).await.expect("queued");
        // The writer holds the first record and fails on it; two more fill the queue.
        until("a failed attempt", || {
            store.attempts.load(Ordering::SeqCst) >= 1
        })
        .await;
        let mut queued = vec![first];
        for n in 1..3 {
            queued.push(writer.archive(&ids, record(n)).await.expect("queued"));
        }
        let refused = tokio::time::timeout(WAIT, writer.archive(&ids, record(3)))
            .await
            .expect("refused rather than waiting for storage");
        assert_eq!(refused, Err(Refused::Unavailable));
        store.down.store(false, Ordering::SeqCst);
        flushed(&writer).await;
        assert_eq!(
            stored_ids(&store).await,
            queued,
            "the refused one was never queued"
        );
        // Storage keeps up again: a record is queued as usual.
        let later = writer.archive(&ids, record(4)).await.expect("queued");
        flushed(&writer).await;
        assert_eq!(stored_ids(&store).await.last(), Some(&later));
    }

    /// Keeps only the size of each committed batch, without leaving the runtime: under paused
    /// time, the clock then moves only when every task waits for a timer.
    #[derive(Default)]
    struct BatchSizes(Mutex<Vec<usize>>);

    impl BatchSizes {
        fn seen(&self) -> Vec<usize> {
            self.0.lock().expect("lock").clone()
        }
    }

    #[async_trait]
    impl ArchiveStore for BatchSizes {
        async fn archive_append(&self, batch: &[ArchivedMessage]) -> StorageResult<()> {
            self.0.lock().expect("lock").push(batch.len());
            Ok(())
        }
        async fn archive_query(&self, _: &str, _: &ArchiveQuery) -> StorageResult<ArchivePage> {
            Ok(ArchivePage {
                rows: Vec::new(),
                complete: true,
            })
        }
        async fn archive_count(&self, _: &str, _: &ArchiveFilter) -> StorageResult<u64> {
            Ok(0)
        }
        async fn archive_contains(&self, _: &str, _: i64) -> StorageResult<bool> {
            Ok(false)
        }
        async fn archive_bounds(
            &self,
            _: &str,
        ) -> StorageResult<Option<(ArchiveBound, ArchiveBound)>> {
            Ok(None)
        }
        async fn archive_trim(&self, _: &str, _: u64) -> StorageResult<u64> {
            Ok(0)
        }
        async fn archive_expire(&self, _: i64) -> StorageResult<u64> {
            Ok(0)
        }
        async fn archive_delete_owner(&self, _: &str) -> StorageResult<u64> {
            Ok(0)
        }
        async fn archive_prefs(&self, _: &str) -> StorageResult<Option<ArchivePrefs>> {
            Ok(None)
        }
        async fn set_archive_prefs(&self, _: &str, _: &ArchivePrefs) -> StorageResult<()> {
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn records_arriving_one_by_one_share_one_commit() {
        let store = Arc::new(BatchSizes::default());
        let writer = Writer::spawn(store.clone(), &config(100, 100));
        let ids = IdGenerator::new(1);
        // One record at a time, each after the writer has taken the one before: without the
        // linger, each would be a commit of its own.
        for n in 0..4 {
            writer.archive(&ids, record(n)).await.expect("queued");
            tokio::time::sleep(LINGER / 5).await;
        }
        tokio::time::sleep(LINGER * 2).await;
        assert_eq!(store.seen(), vec![4], "one commit, without any flush");
    }

    #[tokio::test(start_paused = true)]
    async fn a_query_does_not_wait_for_the_linger() {
        let store = Arc::new(BatchSizes::default());
        let writer = Writer::spawn(store.clone(), &config(100, 100));
        let ids = IdGenerator::new(1);
        let start = tokio::time::Instant::now();
        writer.archive(&ids, record(0)).await.expect("queued");
        writer.flush().await.expect("flushed");
        assert_eq!(store.seen(), vec![1]);
        // The paused clock moves only when every task waits on a timer: a flush that waited
        // for the linger would have moved it.
        assert_eq!(tokio::time::Instant::now(), start, "committed at once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_batch_does_not_linger() {
        let store = Arc::new(BatchSizes::default());
        let writer = Writer::spawn(store.clone(), &config(1000, 1000));
        let ids = IdGenerator::new(1);
        for n in 0..LINGER_BELOW {
            writer.archive(&ids, record(n)).await.expect("queued");
        }
        let start = tokio::time::Instant::now();
        // Yielding (not sleeping) keeps the paused clock where it is.
        for _ in 0..1000 {
            if !store.seen().is_empty() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(
            store.seen(),
            vec![LINGER_BELOW],
            "committed without waiting for more"
        );
        assert_eq!(tokio::time::Instant::now(), start);
    }

    #[test]
    fn trims_at_one_percent_at_least_every_append() {
        assert_eq!(trim_interval(10_000), 100);
        assert_eq!(trim_interval(5), 1);
        assert_eq!(trim_interval(0), 1);
    }
}
