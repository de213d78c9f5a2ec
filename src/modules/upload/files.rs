//! Where uploaded bytes live, behind a trait so that a shared backend (an object store for a
//! cluster) can replace the local directory without touching the HTTP side.
//!
//! Keys are the random tokens of upload URLs; the store refuses anything else, so no key can
//! name a path outside its directory.

use std::io::SeekFrom;
use std::path::PathBuf;
use std::pin::Pin;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("no such file")]
    NotFound,
    #[error("'{0}' is not a valid file key")]
    BadKey(String),
    #[error("file I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Bytes being read: the reader and how many bytes it will give.
pub struct FileRead {
    pub reader: Pin<Box<dyn AsyncRead + Send>>,
    pub len: u64,
}

/// A file being written; nothing is visible under its key until `commit`. Dropped without a
/// commit (the client went away mid-upload), it leaves nothing behind.
#[async_trait]
pub trait PendingFile: Send {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), FileError>;
    /// Makes the file visible under its key at once, complete.
    async fn commit(self: Box<Self>) -> Result<(), FileError>;
}

#[async_trait]
pub trait FileStore: Send + Sync {
    async fn create(&self, key: &str) -> Result<Box<dyn PendingFile>, FileError>;
    /// The file's size.
    async fn len(&self, key: &str) -> Result<u64, FileError>;
    /// `len` bytes from `offset` (the caller checked the range against the size).
    async fn read_range(&self, key: &str, offset: u64, len: u64) -> Result<FileRead, FileError>;
    /// Deleting a file that is not there is `NotFound`.
    async fn delete(&self, key: &str) -> Result<(), FileError>;
}

/// Files in one local directory, named by key.
pub struct LocalDirStore {
    dir: PathBuf,
}

impl LocalDirStore {
    pub fn new(dir: impl Into<PathBuf>) -> LocalDirStore {
        LocalDirStore { dir: dir.into() }
    }

    fn path(&self, key: &str) -> Result<PathBuf, FileError> {
        if valid_key(key) {
            Ok(self.dir.join(key))
        } else {
            Err(FileError::BadKey(key.to_owned()))
        }
    }
}

/// URL-safe base64 characters only, as tokens are made: no separator, no dot, no traversal.
pub fn valid_key(key: &str) -> bool {
    (1..=64).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn not_found_or_io(e: std::io::Error) -> FileError {
    if e.kind() == std::io::ErrorKind::NotFound {
        FileError::NotFound
    } else {
        FileError::Io(e)
    }
}

struct LocalPending {
    file: Option<tokio::fs::File>,
    temp: PathBuf,
    target: PathBuf,
    committed: bool,
}

#[async_trait]
impl PendingFile for LocalPending {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), FileError> {
        match &mut self.file {
            Some(file) => Ok(file.write_all(chunk).await?),
            None => Err(FileError::NotFound),
        }
    }

    async fn commit(mut self: Box<Self>) -> Result<(), FileError> {
        if let Some(mut file) = self.file.take() {
            file.flush().await?;
            // On disk before it is announced: a crash must not leave a short file behind a
            // recorded upload.
            file.sync_all().await?;
        }
        tokio::fs::rename(&self.temp, &self.target).await?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for LocalPending {
    fn drop(&mut self) {
        if !self.committed {
            self.file.take();
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

#[async_trait]
impl FileStore for LocalDirStore {
    async fn create(&self, key: &str) -> Result<Box<dyn PendingFile>, FileError> {
        let target = self.path(key)?;
        tokio::fs::create_dir_all(&self.dir).await?;
        // A dot name the key charset cannot produce, so a temporary file is never served.
        let suffix: u64 = rand::random();
        let temp = self.dir.join(format!(".{key}.{suffix:016x}.part"));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .await?;
        Ok(Box::new(LocalPending {
            file: Some(file),
            temp,
            target,
            committed: false,
        }))
    }

    async fn len(&self, key: &str) -> Result<u64, FileError> {
        let meta = tokio::fs::metadata(self.path(key)?)
            .await
            .map_err(not_found_or_io)?;
        Ok(meta.len())
    }

    async fn read_range(&self, key: &str, offset: u64, len: u64) -> Result<FileRead, FileError> {
        let mut file = tokio::fs::File::open(self.path(key)?)
            .await
            .map_err(not_found_or_io)?;
        if offset > 0 {
            file.seek(SeekFrom::Start(offset)).await?;
        }
        Ok(FileRead {
            reader: Box::pin(file.take(len)),
            len,
        })
    }

    async fn delete(&self, key: &str) -> Result<(), FileError> {
        tokio::fs::remove_file(self.path(key)?)
            .await
            .map_err(not_found_or_io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_leave_the_directory() {
        for key in [
            "",
            "..",
            "../etc",
            "a/b",
            ".hidden",
            "a\\b",
            "a.b",
            &"x".repeat(65),
        ] {
            assert!(!valid_key(key), "{key:?} accepted");
        }
        assert!(valid_key("AbC-_09"));
    }

    #[tokio::test]
    async fn an_uncommitted_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDirStore::new(dir.path());
        let mut pending = store.create("abc").await.unwrap();
        pending.write(b"partial").await.unwrap();
        drop(pending);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(matches!(store.len("abc").await, Err(FileError::NotFound)));
    }

    #[tokio::test]
    async fn a_committed_file_reads_back_by_range() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDirStore::new(dir.path());
        let mut pending = store.create("abc").await.unwrap();
        pending.write(b"hello world").await.unwrap();
        pending.commit().await.unwrap();
        assert_eq!(store.len("abc").await.unwrap(), 11);
        let mut read = store.read_range("abc", 6, 5).await.unwrap();
        let mut out = String::new();
        read.reader.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "world");
        store.delete("abc").await.unwrap();
        assert!(matches!(
            store.delete("abc").await,
            Err(FileError::NotFound)
        ));
    }
}
