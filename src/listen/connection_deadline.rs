//! When an HTTP connection is closed: at the negotiation deadline, unless a request that may
//! legitimately take long (a held BOSH request) pushes it further.

use std::sync::{Arc, Mutex};

use tokio::time::Instant;

/// Shared between the connection's task and its requests (as a request extension).
#[derive(Clone, Debug)]
pub struct ConnectionDeadline(Arc<Mutex<Instant>>);

impl ConnectionDeadline {
    pub fn new(at: Instant) -> Self {
        ConnectionDeadline(Arc::new(Mutex::new(at)))
    }

    pub fn get(&self) -> Instant {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves the deadline to `at`, if that is later.
    pub fn extend_to(&self, at: Instant) {
        let mut deadline = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if at > *deadline {
            *deadline = at;
        }
    }

    /// Completes once the deadline has passed, following any extension made meanwhile.
    pub async fn passed(&self) {
        loop {
            let at = self.get();
            if Instant::now() >= at {
                return;
            }
            tokio::time::sleep_until(at).await;
        }
    }
}
