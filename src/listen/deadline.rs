//! The negotiation deadline of an HTTP connection, which a long request (a file upload or
//! download) may hold off while it runs: a 100 MiB PUT on a slow link takes longer than any
//! sensible deadline for a host-meta fetch or a WebSocket handshake. Once no held request is
//! left, the connection gets the same time again from the moment the last one ended.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Clone, Default)]
pub struct ConnectionDeadline(Arc<Holds>);

#[derive(Default)]
struct Holds {
    active: AtomicUsize,
    last_end: Mutex<Option<Instant>>,
}

/// While alive, the connection is not closed for its deadline.
pub struct DeadlineHold(Arc<Holds>);

impl Drop for DeadlineHold {
    fn drop(&mut self) {
        *self.0.last_end.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConnectionDeadline {
    pub fn hold(&self) -> DeadlineHold {
        self.0.active.fetch_add(1, Ordering::AcqRel);
        DeadlineHold(self.0.clone())
    }

    /// Returns once `first` has passed with no hold, and `grace` has passed since the last
    /// hold ended. Wakes once per `grace` while a hold lasts, never more often.
    pub async fn passed(&self, first: Instant, grace: Duration) {
        let mut deadline = first;
        loop {
            tokio::time::sleep_until(deadline).await;
            let now = Instant::now();
            if self.0.active.load(Ordering::Acquire) > 0 {
                deadline = now + grace;
                continue;
            }
            let last_end = *self.0.last_end.lock().unwrap_or_else(|e| e.into_inner());
            match last_end.map(|end| end + grace) {
                Some(renewed) if renewed > now => deadline = renewed,
                _ => return,
            }
        }
    }
}
