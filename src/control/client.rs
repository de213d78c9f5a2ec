//! The command line's end of the control socket.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::protocol::{Outcome, Request, Response};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers there: the server is not running (or uses another socket).
    #[error("no running server answers on {}: {source}", path.display())]
    NotRunning {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the control socket connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server's answer is not understood: {0}")]
    Protocol(String),
    /// The server carried the request out and said no.
    #[error("{0}")]
    Refused(String),
}

/// Sends one request and waits for the answer.
pub async fn request(socket: &Path, request: &Request) -> Result<Outcome, ClientError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ClientError::NotRunning {
            path: socket.to_owned(),
            source,
        })?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
    line.push(b'\n');
    write.write_all(&line).await?;
    write.shutdown().await?;
    let mut answer = String::new();
    BufReader::new(read).read_line(&mut answer).await?;
    match serde_json::from_str(answer.trim_end()) {
        Ok(Response::Ok { ok }) => Ok(ok),
        Ok(Response::Error { error }) => Err(ClientError::Refused(error)),
        Err(e) => Err(ClientError::Protocol(format!("{e}: {answer:?}"))),
    }
}
