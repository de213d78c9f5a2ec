//! The server's end of the control socket: one request per connection, answered by the
//! `Operator`, from the server's own user (or root) only.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;
use tracing::{debug, info, info_span, warn, Instrument};

use super::protocol::{Outcome, Request, Response};
use super::ControlError;

/// Longest request line read: commands carry a few fields, an announcement at most.
const MAX_REQUEST_BYTES: u64 = 64 * 1024;
/// A client that connects and says nothing is not kept around.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Carries out what `corvid ctl` asks.
#[async_trait]
pub trait Operator: Send + Sync {
    async fn handle(&self, request: Request) -> Result<Outcome, String>;
}

/// The bound socket; `close` removes its file.
pub struct ControlSocket {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl ControlSocket {
    /// Binds `path` (creating its folder), readable and writable by the server's user only.
    /// A stale socket left by a server that crashed is replaced; one that a running server
    /// answers on is not.
    pub async fn bind(path: &Path, operator: Arc<dyn Operator>) -> Result<Self, ControlError> {
        let fail = |source| ControlError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir).await.map_err(fail)?;
        }
        remove_stale(path).await?;
        let listener = UnixListener::bind(path).map_err(fail)?;
        tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .await
            .map_err(fail)?;
        // The file is ours: its owner is the uid this process runs as.
        let owner = tokio::fs::metadata(path).await.map_err(fail)?.uid();
        info!(path = %path.display(), "control socket listening");
        let task = tokio::spawn(accept_loop(listener, owner, operator));
        Ok(ControlSocket {
            path: path.to_owned(),
            task,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops answering and removes the socket file.
    pub fn close(&self) {
        self.task.abort();
        if let Err(e) = std::fs::remove_file(&self.path) {
            debug!(error = %e, "control socket already gone");
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn remove_stale(path: &Path) -> Result<(), ControlError> {
    let Ok(meta) = tokio::fs::symlink_metadata(path).await else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(ControlError::NotASocket(path.to_owned()));
    }
    if UnixStream::connect(path).await.is_ok() {
        return Err(ControlError::InUse(path.to_owned()));
    }
    tokio::fs::remove_file(path)
        .await
        .map_err(|source| ControlError::Io {
            path: path.to_owned(),
            source,
        })
}

async fn accept_loop(listener: UnixListener, owner: u32, operator: Arc<dyn Operator>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(error = %e, "control socket: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let uid = stream.peer_cred().map(|cred| cred.uid()).ok();
        let span = info_span!("control", uid);
        let operator = operator.clone();
        tokio::spawn(
            async move {
                // The file's mode already keeps others out; the peer's uid is checked too in
                // case the folder or the mode was changed by hand.
                let allowed = uid.is_some_and(|uid| uid == owner || uid == 0);
                serve(stream, allowed, operator.as_ref()).await;
            }
            .instrument(span),
        );
    }
}

async fn serve(stream: UnixStream, allowed: bool, operator: &dyn Operator) {
    let (read, mut write) = stream.into_split();
    let response = if allowed {
        match tokio::time::timeout(REQUEST_TIMEOUT, read_request(read)).await {
            Ok(Ok(request)) => {
                debug!(?request, "control request");
                match operator.handle(request).await {
                    Ok(ok) => Response::Ok { ok },
                    Err(error) => Response::Error { error },
                }
            }
            Ok(Err(error)) => Response::Error { error },
            Err(_) => Response::Error {
                error: "no request within 30 s".into(),
            },
        }
    } else {
        warn!("control connection from another user refused");
        Response::Error {
            error: "permission denied: only the server's user may use the control socket".into(),
        }
    };
    let mut line = serde_json::to_vec(&response).unwrap_or_else(|_| b"{}".to_vec());
    line.push(b'\n');
    if let Err(e) = write.write_all(&line).await {
        debug!(error = %e, "control client left before the answer");
    }
}

async fn read_request(read: tokio::net::unix::OwnedReadHalf) -> Result<Request, String> {
    let mut line = String::new();
    BufReader::new(read.take(MAX_REQUEST_BYTES))
        .read_line(&mut line)
        .await
        .map_err(|e| format!("cannot read the request: {e}"))?;
    if !line.ends_with('\n') && line.len() as u64 >= MAX_REQUEST_BYTES {
        return Err(format!("request longer than {MAX_REQUEST_BYTES} bytes"));
    }
    serde_json::from_str(line.trim_end()).map_err(|e| format!("not a request: {e}"))
}
