//! A BOSH session as the c2s stream sees it: frames come from the requests through a bounded
//! channel, elements go to a bounded queue that held requests take from. The stream header is
//! the session creation (or an `xmpp:restart`), the footer the session's termination.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::debug;

use super::session::{Ended, Session, Sessions};
use crate::stream::transport::{Incoming, Read, Transport, TransportError};

pub struct BoshTransport {
    session: Arc<Session>,
    sessions: Arc<Sessions>,
    inbound: mpsc::Receiver<Incoming>,
    peer: SocketAddr,
    secure: bool,
}

impl BoshTransport {
    pub fn new(
        session: Arc<Session>,
        sessions: Arc<Sessions>,
        inbound: mpsc::Receiver<Incoming>,
        peer: SocketAddr,
        secure: bool,
    ) -> Self {
        BoshTransport {
            session,
            sessions,
            inbound,
            peer,
            secure,
        }
    }
}

const STREAM_ERROR_START: &[u8] = b"<stream:error";

impl Transport for BoshTransport {
    /// Also where an idle session ends: the one timer a session has is the inactivity
    /// deadline, armed only while this waits for the client.
    async fn next_frame(&mut self) -> Result<Read, TransportError> {
        loop {
            if self.session.state().ended.is_some() {
                return Err(TransportError::Disconnected);
            }
            let changed = self.session.changed();
            let check_at = self.session.inactivity_check_at();
            tokio::select! {
                frame = self.inbound.recv() => {
                    return match frame {
                        Some(frame) => Ok(Read::Frame(frame)),
                        None => Err(TransportError::Disconnected),
                    };
                }
                _ = changed => {}
                _ = tokio::time::sleep_until(check_at) => {
                    if self.session.is_inactive(Instant::now()) {
                        debug!("BOSH session inactive: ending it");
                        self.session.end(Ended::Closed);
                        return Err(TransportError::Disconnected);
                    }
                }
            }
        }
    }

    /// The header's attributes travel in the creation response: only the stream id is kept.
    async fn open_stream(&mut self, id: &str, _from: &str) -> io::Result<()> {
        self.session.state().authid = Some(id.to_owned());
        Ok(())
    }

    /// Queues the elements for the next request; beyond the queue's bound, waits for a
    /// request to take them, as long as a client that still polls would take to come.
    async fn send(&mut self, elements: &[&[u8]]) -> io::Result<()> {
        let params = self.session.params;
        let give_up = Instant::now() + params.wait + params.inactivity;
        loop {
            let changed = self.session.changed();
            {
                let mut state = self.session.state();
                if state.ended.is_some() {
                    return Err(io::ErrorKind::BrokenPipe.into());
                }
                if state.pending.is_empty() || state.pending_bytes < params.max_pending {
                    for el in elements {
                        state.stream_error_sent |= el.starts_with(STREAM_ERROR_START);
                        state.pending_bytes += el.len();
                        state.pending.push_back(el.to_vec());
                    }
                    drop(state);
                    self.session.notify();
                    return Ok(());
                }
            }
            if tokio::time::timeout_at(give_up, changed).await.is_err() {
                return Err(io::ErrorKind::TimedOut.into());
            }
        }
    }

    async fn close_stream(&mut self) -> io::Result<()> {
        let ended = if self.session.state().stream_error_sent {
            Ended::Condition("remote-stream-error")
        } else {
            Ended::Closed
        };
        self.session.end(ended);
        Ok(())
    }

    /// Every element of the stream namespace declares the prefix: the wrapper binds it too,
    /// but an element must not depend on which body it travels in.
    fn stream_prefix_declaration(&self) -> &'static str {
        " xmlns:stream='http://etherx.jabber.org/streams'"
    }

    fn is_secure(&self) -> bool {
        self.secure
    }

    fn metrics_kind(&self) -> crate::metrics::Transport {
        crate::metrics::Transport::Bosh
    }

    /// The wrapper is parsed per request: no parser state outlives one.
    fn restart(&mut self) {}

    fn peer(&self) -> SocketAddr {
        self.peer
    }

    fn bytes_read(&self) -> u64 {
        self.session.bytes_read()
    }
}

impl Drop for BoshTransport {
    /// The stream is over. A request held now answers with the termination; otherwise the
    /// session stays known for one inactivity period, so the client's next request learns how
    /// it ended (a stream error, say) instead of finding it unknown.
    fn drop(&mut self) {
        self.session.end(Ended::Closed);
        let sid = self.session.sid.clone();
        let active = self.session.state().active > 0;
        let grace = self.session.params.inactivity;
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) if !active => {
                let sessions = self.sessions.clone();
                runtime.spawn(async move {
                    tokio::time::sleep(grace).await;
                    sessions.remove(&sid);
                });
            }
            _ => self.sessions.remove(&sid),
        }
    }
}
