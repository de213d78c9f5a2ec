//! Login times (XEP-0133 "get user last login") written in batches. One write transaction per
//! login cost about 5% of a cold STARTTLS login's CPU on the embedded SQLite default (see
//! benches/README.md, "TLS logins"), so the times are kept in memory and written together, one
//! transaction at most every `FLUSH_EVERY`. Reads see the times not written yet. A crash loses
//! at most that last stretch of login times, which only inform an administrator; a graceful
//! stop writes them (`AdminStore::flush`, from `Storage::close`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tracing::warn;

use super::{AdminStore, StorageResult};

/// How long a login time may wait in memory.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

pub struct BatchedLoginTimes {
    shared: Arc<Shared>,
}

struct Shared {
    inner: Arc<dyn AdminStore>,
    /// Account -> the latest login time not written yet.
    pending: Mutex<HashMap<String, i64>>,
    /// A write is scheduled: a login only schedules one when none is.
    scheduled: AtomicBool,
    /// One batch is written at a time, so an older batch cannot land after a newer one.
    writing: tokio::sync::Mutex<()>,
}

impl BatchedLoginTimes {
    pub fn new(inner: Arc<dyn AdminStore>) -> BatchedLoginTimes {
        BatchedLoginTimes {
            shared: Arc::new(Shared {
                inner,
                pending: Mutex::new(HashMap::new()),
                scheduled: AtomicBool::new(false),
                writing: tokio::sync::Mutex::new(()),
            }),
        }
    }
}

impl Shared {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        // Nothing panics while holding it; a poisoned map is still a consistent map.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn write_pending(&self) -> StorageResult<()> {
        let _turn = self.writing.lock().await;
        // Cleared before taking the batch: a login after this point schedules the next write.
        self.scheduled.store(false, Ordering::SeqCst);
        let batch: Vec<(String, i64)> = self.pending().drain().collect();
        self.inner.record_logins(&batch).await
    }
}

#[async_trait]
impl AdminStore for BatchedLoginTimes {
    async fn set_disabled(&self, username: &str, disabled: bool) -> StorageResult<()> {
        self.shared.inner.set_disabled(username, disabled).await
    }

    async fn is_disabled(&self, username: &str) -> StorageResult<bool> {
        self.shared.inner.is_disabled(username).await
    }

    async fn disabled_accounts(&self) -> StorageResult<Vec<String>> {
        self.shared.inner.disabled_accounts().await
    }

    async fn record_login(&self, username: &str, at_ms: i64) -> StorageResult<()> {
        {
            let mut pending = self.shared.pending();
            let at = pending.entry(username.to_owned()).or_insert(at_ms);
            *at = (*at).max(at_ms);
        }
        if !self.shared.scheduled.swap(true, Ordering::SeqCst) {
            let shared = self.shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(FLUSH_EVERY).await;
                if let Err(e) = shared.write_pending().await {
                    warn!(error = %e, "recording login times failed");
                }
            });
        }
        Ok(())
    }

    async fn record_logins(&self, logins: &[(String, i64)]) -> StorageResult<()> {
        for (username, at_ms) in logins {
            self.record_login(username, *at_ms).await?;
        }
        Ok(())
    }

    async fn last_login(&self, username: &str) -> StorageResult<Option<i64>> {
        let pending = self.shared.pending().get(username).copied();
        match pending {
            Some(at) => Ok(Some(at)),
            None => self.shared.inner.last_login(username).await,
        }
    }

    async fn setting(&self, name: &str) -> StorageResult<Option<String>> {
        self.shared.inner.setting(name).await
    }

    async fn set_setting(&self, name: &str, value: Option<&str>) -> StorageResult<()> {
        self.shared.inner.set_setting(name, value).await
    }

    async fn flush(&self) -> StorageResult<()> {
        self.shared.write_pending().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{SqliteStorage, Storage};

    async fn store() -> (Storage, BatchedLoginTimes) {
        let backend = Arc::new(SqliteStorage::open("sqlite::memory:").await.expect("open"));
        let storage = Storage::from_backend(backend);
        for user in ["a@x", "b@x"] {
            storage
                .accounts
                .create_account(user, &[])
                .await
                .expect("account");
        }
        let batched = BatchedLoginTimes::new(storage.admin.clone());
        (storage, batched)
    }

    #[tokio::test]
    async fn times_are_read_at_once_and_written_together_later() {
        let (storage, batched) = store().await;
        batched.record_login("a@x", 10).await.expect("record");
        batched.record_login("b@x", 20).await.expect("record");
        batched.record_login("a@x", 30).await.expect("record");
        batched.record_login("ghost@x", 40).await.expect("record");
        assert_eq!(batched.last_login("a@x").await.expect("read"), Some(30));
        assert_eq!(storage.admin.last_login("a@x").await.expect("read"), None);
        tokio::time::sleep(FLUSH_EVERY * 2).await;
        assert_eq!(
            storage.admin.last_login("a@x").await.expect("read"),
            Some(30)
        );
        assert_eq!(
            storage.admin.last_login("b@x").await.expect("read"),
            Some(20)
        );
        // An account that is not there (any more) is skipped, not an error for the others.
        assert_eq!(
            storage.admin.last_login("ghost@x").await.expect("read"),
            None
        );
        // A later login schedules the next write.
        batched.record_login("b@x", 50).await.expect("record");
        tokio::time::sleep(FLUSH_EVERY * 2).await;
        assert_eq!(
            storage.admin.last_login("b@x").await.expect("read"),
            Some(50)
        );
    }

    #[tokio::test]
    async fn flush_writes_what_is_pending() {
        let (storage, batched) = store().await;
        batched.record_login("a@x", 7).await.expect("record");
        batched.flush().await.expect("flush");
        assert_eq!(
            storage.admin.last_login("a@x").await.expect("read"),
            Some(7)
        );
    }
}
