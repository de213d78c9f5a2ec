//! Files uploaded through XEP-0363 (the bytes live in a `FileStore`, not here): who uploaded
//! what and when, for quotas, expiry and account deletion.

use async_trait::async_trait;

use super::StorageResult;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUpload {
    /// `<token>/<file name>`, the URL path under `/upload/`.
    pub path: String,
    /// The uploader's bare JID.
    pub owner: String,
    pub size: u64,
    pub content_type: String,
    pub created_at_ms: i64,
}

/// What one user uploaded since a moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadUsage {
    pub bytes: u64,
    /// When the oldest of those uploads was made: the window frees its bytes a day later.
    pub oldest_ms: Option<i64>,
}

#[async_trait]
pub trait UploadStore: Send + Sync {
    /// Records a completed upload; `Conflict` when the path is already taken.
    async fn record_upload(&self, upload: &StoredUpload) -> StorageResult<()>;
    async fn upload(&self, path: &str) -> StorageResult<Option<StoredUpload>>;
    /// What `owner` uploaded at or after `since_ms`.
    async fn upload_usage(&self, owner: &str, since_ms: i64) -> StorageResult<UploadUsage>;
    /// Bytes of every stored upload, and when the oldest was made.
    async fn upload_total(&self) -> StorageResult<UploadUsage>;
    /// Deletes one upload record (whose file could not be stored).
    async fn delete_upload(&self, path: &str) -> StorageResult<()>;
    /// Deletes the uploads made before `before_ms`; returns their paths.
    async fn delete_uploads_before(&self, before_ms: i64) -> StorageResult<Vec<String>>;
    /// Deletes `owner`'s uploads; returns their paths.
    async fn delete_uploads_of(&self, owner: &str) -> StorageResult<Vec<String>>;
}
