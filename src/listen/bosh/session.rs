//! One BOSH session as the HTTP requests and the c2s task share it: what the client sent
//! (a bounded channel to the stream), what waits to be sent (a bounded queue for the held
//! requests), the request ids seen, and how the session ended.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::futures::Notified;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use crate::stream::transport::Incoming;

/// Frames from requests waiting for the stream to read them: a few requests' worth. A client
/// over its rates waits here, with its request, as a TCP client waits in the kernel.
pub const INBOUND_FRAMES: usize = 32;

/// How the session ended, as the next (or held) request tells the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The stream closed normally (`type='terminate'` with no condition).
    Closed,
    /// With a XEP-0124 §17 condition.
    Condition(&'static str),
}

/// Negotiated once at creation: what the client asked for, capped by the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub wait: Duration,
    pub hold: usize,
    /// Requests the client may have open at once: `hold + 1`.
    pub requests: usize,
    pub inactivity: Duration,
    pub max_pause: Duration,
    /// Bytes of answers waiting for a request at most (the stanza size limit a few times):
    /// the stream's writes wait beyond that, and its own queue then fills as on TCP.
    pub max_pending: usize,
}

pub struct Session {
    pub sid: String,
    /// The hosted domain the session is for (`from` in the creation answer).
    pub domain: String,
    pub params: Params,
    pub inbound: mpsc::Sender<Incoming>,
    state: Mutex<State>,
    /// Woken when something changes that a waiting request or the stream looks at.
    changed: Notify,
    /// Request bytes received, for the stream's traffic shaper.
    bytes_read: AtomicU64,
}

#[derive(Default)]
pub struct State {
    /// Serialized elements for the client, in order.
    pub pending: VecDeque<Vec<u8>>,
    pub pending_bytes: usize,
    /// The stream id (`authid`), known once the stream sent its header.
    pub authid: Option<String>,
    /// The highest `rid` taken in (requests are taken in order).
    pub last_rid: u64,
    /// The latest answers by `rid`, so a request the client repeats gets the same (§14.3).
    pub answered: VecDeque<(u64, Arc<str>)>,
    /// `rid`s of the requests held waiting, oldest first.
    pub held: VecDeque<u64>,
    /// Requests being served now (held or not).
    pub active: usize,
    /// Their `rid`s: one sent again while its first copy is still served waits for its answer.
    pub in_progress: Vec<u64>,
    /// Of those, the ones sent again before they were held: they answer at once.
    pub resent: Vec<u64>,
    /// When the last request was answered, if none is active: where inactivity counts from.
    pub idle_since: Option<Instant>,
    /// Inactivity allowed this time, `pause` replacing `inactivity` until the next request.
    pub idle_allowance: Duration,
    pub ended: Option<Ended>,
    /// The stream sent a `<stream:error/>`: the termination is `remote-stream-error`.
    pub stream_error_sent: bool,
}

impl Session {
    pub fn new(
        sid: String,
        domain: String,
        params: Params,
    ) -> (Arc<Session>, mpsc::Receiver<Incoming>) {
        let (tx, rx) = mpsc::channel(INBOUND_FRAMES);
        let state = State {
            idle_since: Some(Instant::now()),
            idle_allowance: params.inactivity,
            ..State::default()
        };
        let session = Session {
            sid,
            domain,
            params,
            inbound: tx,
            state: Mutex::new(state),
            changed: Notify::new(),
            bytes_read: AtomicU64::new(0),
        };
        (Arc::new(session), rx)
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves plain data behind: keep using it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes every request and stream waiting on this session.
    pub fn notify(&self) {
        self.changed.notify_waiters();
    }

    /// A future that completes at the next `notify`, registered now, so a change between a
    /// check and the wait is not missed.
    pub fn changed(&self) -> Pin<Box<Notified<'_>>> {
        let mut notified = Box::pin(self.changed.notified());
        notified.as_mut().enable();
        notified
    }

    pub fn add_bytes_read(&self, n: usize) {
        self.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// Ends the session as `ended` says, unless it has ended already, and wakes everyone.
    pub fn end(&self, ended: Ended) {
        {
            let mut state = self.state();
            if state.ended.is_none() {
                state.ended = Some(ended);
            }
        }
        self.notify();
    }

    /// When the stream should look again whether the client has gone: at the end of the
    /// allowed idleness, or, while requests are in progress, no sooner than they could end.
    pub fn inactivity_check_at(&self) -> Instant {
        let state = self.state();
        match state.idle_since {
            Some(since) => since + state.idle_allowance,
            None => Instant::now() + self.params.wait + self.params.inactivity,
        }
    }

    /// No request for longer than allowed.
    pub fn is_inactive(&self, now: Instant) -> bool {
        let state = self.state();
        state
            .idle_since
            .is_some_and(|since| now >= since + state.idle_allowance)
    }
}

/// Every live session by `sid`.
#[derive(Default)]
pub struct Sessions {
    by_sid: Mutex<HashMap<String, Arc<Session>>>,
}

impl Sessions {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.by_sid.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn insert(&self, session: Arc<Session>) {
        self.map().insert(session.sid.clone(), session);
    }

    pub fn get(&self, sid: &str) -> Option<Arc<Session>> {
        self.map().get(sid).cloned()
    }

    pub fn remove(&self, sid: &str) {
        self.map().remove(sid);
    }
}
