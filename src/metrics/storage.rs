//! Storage wrapped to be measured: the archive and offline stores counted and timed where
//! every caller (the MAM writer's batches, the router's offline path) goes through them, so
//! none of those callers carries metrics code.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Metrics, StorageOp};
use crate::storage::{
    ArchiveBound, ArchiveFilter, ArchivePage, ArchivePrefs, ArchiveQuery, ArchiveStore,
    ArchivedMessage, OfflineMessage, OfflinePush, OfflineStore, Storage, StorageResult,
};

/// `storage` with its archive and offline stores measured by `metrics`.
pub fn measured(mut storage: Storage, metrics: &Arc<Metrics>) -> Storage {
    storage.archive = Arc::new(MeasuredArchive {
        inner: storage.archive,
        metrics: metrics.clone(),
    });
    storage.offline = Arc::new(MeasuredOffline {
        inner: storage.offline,
        metrics: metrics.clone(),
    });
    storage
}

struct MeasuredArchive {
    inner: Arc<dyn ArchiveStore>,
    metrics: Arc<Metrics>,
}

#[async_trait]
impl ArchiveStore for MeasuredArchive {
    async fn archive_append(&self, batch: &[ArchivedMessage]) -> StorageResult<()> {
        let result = {
            let _timer = self.metrics.storage_timer(StorageOp::ArchiveAppend);
            self.inner.archive_append(batch).await
        };
        // A batch retried after a lost answer is counted again: this counts writes done,
        // which is what the database's load follows.
        if result.is_ok() {
            self.metrics.archive_written(batch.len());
        }
        result
    }

    async fn archive_query(&self, owner: &str, query: &ArchiveQuery) -> StorageResult<ArchivePage> {
        let _timer = self.metrics.storage_timer(StorageOp::ArchiveQuery);
        self.inner.archive_query(owner, query).await
    }

    async fn archive_count(&self, owner: &str, filter: &ArchiveFilter) -> StorageResult<u64> {
        self.inner.archive_count(owner, filter).await
    }

    async fn archive_contains(&self, owner: &str, id: i64) -> StorageResult<bool> {
        self.inner.archive_contains(owner, id).await
    }

    async fn archive_bounds(
        &self,
        owner: &str,
    ) -> StorageResult<Option<(ArchiveBound, ArchiveBound)>> {
        self.inner.archive_bounds(owner).await
    }

    async fn archive_trim(&self, owner: &str, keep: u64) -> StorageResult<u64> {
        self.inner.archive_trim(owner, keep).await
    }

    async fn archive_expire(&self, before_ms: i64) -> StorageResult<u64> {
        self.inner.archive_expire(before_ms).await
    }

    async fn archive_delete_owner(&self, owner: &str) -> StorageResult<u64> {
        self.inner.archive_delete_owner(owner).await
    }

    async fn archive_prefs(&self, owner: &str) -> StorageResult<Option<ArchivePrefs>> {
        self.inner.archive_prefs(owner).await
    }

    async fn set_archive_prefs(&self, owner: &str, prefs: &ArchivePrefs) -> StorageResult<()> {
        self.inner.set_archive_prefs(owner, prefs).await
    }
}

struct MeasuredOffline {
    inner: Arc<dyn OfflineStore>,
    metrics: Arc<Metrics>,
}

#[async_trait]
impl OfflineStore for MeasuredOffline {
    async fn push(
        &self,
        username: &str,
        msg: &OfflineMessage,
        cap: u32,
    ) -> StorageResult<OfflinePush> {
        let result = {
            let _timer = self.metrics.storage_timer(StorageOp::OfflinePush);
            self.inner.push(username, msg, cap).await
        };
        match result {
            Ok(OfflinePush::Stored) => self.metrics.offline_written(),
            Ok(OfflinePush::Full) => self.metrics.offline_refused(),
            Err(_) => {}
        }
        result
    }

    async fn peek(&self, username: &str) -> StorageResult<Vec<OfflineMessage>> {
        let _timer = self.metrics.storage_timer(StorageOp::OfflinePeek);
        self.inner.peek(username).await
    }

    async fn remove_up_to(&self, username: &str, up_to_id: i64) -> StorageResult<u64> {
        let _timer = self.metrics.storage_timer(StorageOp::OfflineRemove);
        self.inner.remove_up_to(username, up_to_id).await
    }

    async fn count(&self, username: &str) -> StorageResult<u64> {
        self.inner.count(username).await
    }
}
