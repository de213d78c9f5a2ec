//! Server shutdown as routing and session tasks see it: one signal every task waits on, a
//! count of the tasks that still hold stanzas nobody has stored yet, and the messages routed
//! while those tasks wind down.
//!
//! Messages routed during the shutdown window are held back rather than stored at once: the
//! sessions still ending hold older messages for the same users (unacknowledged, queued),
//! and offline storage hands messages out in the order they were stored.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use jid::BareJid;
use minidom::Element;
use tokio::sync::{watch, Notify};

pub(super) struct Shutdown {
    signal: watch::Sender<bool>,
    tasks: Arc<Tasks>,
    /// `Some` from the start of shutdown until the held messages are taken for storing.
    late: Mutex<Option<Vec<(BareJid, Element)>>>,
}

#[derive(Default)]
struct Tasks {
    live: AtomicUsize,
    idle: Notify,
}

/// Resolves once shutdown has begun (at once if it already has).
pub struct ShutdownSignal(watch::Receiver<bool>);

impl ShutdownSignal {
    pub async fn wait(&mut self) {
        if self.0.wait_for(|begun| *begun).await.is_err() {
            // The router is gone, so nobody can begin a shutdown any more.
            std::future::pending::<()>().await;
        }
    }
}

/// Held by a task that owns a session's undelivered stanzas; shutdown waits for all of them.
pub struct TaskGuard(Arc<Tasks>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            signal: watch::Sender::new(false),
            tasks: Arc::default(),
            late: Mutex::new(None),
        }
    }
}

impl Shutdown {
    /// Tells every task; later calls change nothing.
    pub fn begin(&self) {
        let mut late = lock(&self.late);
        if !*self.signal.borrow() {
            *late = Some(Vec::new());
            self.signal.send_replace(true);
        }
    }

    pub fn has_begun(&self) -> bool {
        *self.signal.borrow()
    }

    pub fn signal(&self) -> ShutdownSignal {
        ShutdownSignal(self.signal.subscribe())
    }

    pub fn track(&self) -> TaskGuard {
        self.tasks.live.fetch_add(1, Ordering::AcqRel);
        TaskGuard(self.tasks.clone())
    }

    /// Returns once no tracked task is left.
    pub async fn tasks_done(&self) {
        loop {
            let idle = self.tasks.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.tasks.live.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Keeps a message routed during the shutdown window for `take_late`; hands it back when
    /// the window is over and it should be stored right away.
    pub fn hold(&self, user: &BareJid, message: Element) -> Option<Element> {
        match lock(&self.late).as_mut() {
            Some(late) => {
                late.push((user.clone(), message));
                None
            }
            None => Some(message),
        }
    }

    /// The held messages, oldest first; from now on nothing is held.
    pub fn take_late(&self) -> Vec<(BareJid, Element)> {
        lock(&self.late).take().unwrap_or_default()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_tracked_tasks_and_holds_only_during_the_window() {
        let shutdown = Shutdown::default();
        let user = BareJid::new("u@x").unwrap();
        let message = Element::bare("message", "jabber:client");
        assert!(shutdown.hold(&user, message.clone()).is_some());
        let guard = shutdown.track();
        let mut signal = shutdown.signal();
        shutdown.begin();
        signal.wait().await;
        assert!(shutdown.hold(&user, message.clone()).is_none());
        let done = tokio::spawn(async move {
            drop(guard);
        });
        shutdown.tasks_done().await;
        done.await.unwrap();
        assert_eq!(shutdown.take_late().len(), 1);
        assert!(shutdown.hold(&user, message).is_some());
    }
}
