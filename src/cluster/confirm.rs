//! Broadcasts the sender waits on until every node that heard them has applied them.
//!
//! Redis answers a PUBLISH with the number of subscribers it handed the message to, not with
//! whether they acted on it: a node whose subscriber task runs late still holds its old view
//! for a while. A write whose answer the user waits for (a block list, say) must be in force
//! on every node before that answer goes out, or the user's next stanza may meet the old
//! view elsewhere. So each such broadcast carries a number; every node that handles it
//! answers `Applied` with that number (the sender's own subscription counts on sight), and
//! the sender waits until as many answers came as PUBLISH said it reached.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::oneshot;

/// The broadcasts this node waits on, by number.
pub struct Confirmations {
    next: AtomicU64,
    pending: Mutex<HashMap<u64, Pending>>,
}

struct Pending {
    done: oneshot::Sender<()>,
    applied: usize,
    /// How many subscribers Redis handed it to; unknown until the writer read the reply.
    reached: Option<usize>,
}

impl Default for Confirmations {
    fn default() -> Self {
        // From the clock: an answer meant for an earlier process with this node's number
        // must not confirm one of this process's broadcasts.
        let start = crate::ids::now_ms().saturating_mul(1_000_000);
        Confirmations {
            next: AtomicU64::new(start),
            pending: Mutex::new(HashMap::new()),
        }
    }
}

impl Confirmations {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new broadcast to wait on: its number, and what is told once all applied it. The
    /// receiver sees an error when the broadcast failed (`abandon`).
    pub fn open(&self) -> (u64, oneshot::Receiver<()>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (done, applied) = oneshot::channel();
        self.pending().insert(
            id,
            Pending {
                done,
                applied: 0,
                reached: None,
            },
        );
        (id, applied)
    }

    /// Redis handed broadcast `id` to `reached` subscribers. Answers may already have come:
    /// the reply and the subscription are separate connections.
    pub fn reached(&self, id: u64, reached: usize) {
        let mut pending = self.pending();
        if let Some(entry) = pending.get_mut(&id) {
            entry.reached = Some(reached);
        }
        finish_if_complete(&mut pending, id);
    }

    /// One node (this one included) applied broadcast `id`.
    pub fn applied(&self, id: u64) {
        let mut pending = self.pending();
        if let Some(entry) = pending.get_mut(&id) {
            entry.applied += 1;
        }
        finish_if_complete(&mut pending, id);
    }

    /// Broadcast `id` failed or is no longer waited on.
    pub fn abandon(&self, id: u64) {
        self.pending().remove(&id);
    }
}

fn finish_if_complete(pending: &mut HashMap<u64, Pending>, id: u64) {
    let complete = pending.get(&id).is_some_and(|entry| {
        entry
            .reached
            .is_some_and(|reached| entry.applied >= reached)
    });
    if complete {
        if let Some(entry) = pending.remove(&id) {
            let _ = entry.done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot::error::TryRecvError;

    #[test]
    fn done_once_every_subscriber_reached_has_applied() {
        let confirmations = Confirmations::default();
        let (id, mut done) = confirmations.open();
        confirmations.applied(id);
        confirmations.reached(id, 3);
        assert_eq!(done.try_recv(), Err(TryRecvError::Empty));
        confirmations.applied(id);
        assert_eq!(done.try_recv(), Err(TryRecvError::Empty));
        confirmations.applied(id);
        assert_eq!(done.try_recv(), Ok(()));
        assert!(confirmations.pending().is_empty());
    }

    #[test]
    fn answers_before_the_reply_count() {
        let confirmations = Confirmations::default();
        let (id, mut done) = confirmations.open();
        confirmations.applied(id);
        confirmations.applied(id);
        assert_eq!(done.try_recv(), Err(TryRecvError::Empty));
        confirmations.reached(id, 2);
        assert_eq!(done.try_recv(), Ok(()));
    }

    #[test]
    fn nobody_reached_is_done_at_once() {
        let confirmations = Confirmations::default();
        let (id, mut done) = confirmations.open();
        confirmations.reached(id, 0);
        assert_eq!(done.try_recv(), Ok(()));
    }

    #[test]
    fn abandoned_and_unknown_numbers() {
        let confirmations = Confirmations::default();
        let (id, mut done) = confirmations.open();
        confirmations.abandon(id);
        assert_eq!(done.try_recv(), Err(TryRecvError::Closed));
        // Late or stray answers change nothing.
        confirmations.applied(id);
        confirmations.reached(id, 1);
        confirmations.applied(id + 1000);
        let (other, mut other_done) = confirmations.open();
        assert_ne!(other, id);
        confirmations.reached(other, 1);
        assert_eq!(other_done.try_recv(), Err(TryRecvError::Empty));
        confirmations.applied(other);
        assert_eq!(other_done.try_recv(), Ok(()));
    }
}
