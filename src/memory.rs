//! Giving freed heap back to the operating system after bursts of connections.
//!
//! A login needs far more memory while it runs (TLS handshake buffers, SASL, parser state,
//! storage rows) than the session keeps once bound. glibc's allocator keeps the freed memory of
//! a burst of logins: the long-lived allocations of the sessions that stay are scattered over
//! the pages the burst used, so the heap cannot shrink from its top, and the free pages in its
//! middle stay resident. Measured with 5,000 idle sessions logged in 100 at a time: 63 MB of the
//! main arena in use, 100 MB held, and `malloc_trim` returned 20 MB of it (4 kB per session).
//!
//! `malloc_trim(0)` hands every whole free page of every arena back (`MADV_DONTNEED`). It walks
//! the free lists with each arena locked in turn, so it runs on a blocking thread, and only
//! when connections came or went since the last time: an idle server does not pay for it, a
//! busy one at most once per `TRIM_EVERY`.
//!
//! jemalloc and mimalloc (tried through `LD_PRELOAD`) held as much or more after the same
//! burst; see benches/README.md, "Memory per idle session".

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How often, at most, freed memory is handed back.
pub const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Client connections opened or closed since the process started.
static CHURN: AtomicU64 = AtomicU64::new(0);

/// Held by a client connection for its life: its opening and its closing both count as churn,
/// after which freed memory may be waiting to be returned.
pub struct Churn(());

impl Churn {
    pub fn begin() -> Churn {
        CHURN.fetch_add(1, Ordering::Relaxed);
        Churn(())
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        CHURN.fetch_add(1, Ordering::Relaxed);
    }
}

/// Decides when a trim is worth its walk of the heap: after churn, not while idle.
struct TrimSchedule {
    seen: u64,
}

impl TrimSchedule {
    fn new() -> TrimSchedule {
        TrimSchedule {
            seen: CHURN.load(Ordering::Relaxed),
        }
    }

    /// True when connections came or went since the last time it said so.
    fn due(&mut self) -> bool {
        let now = CHURN.load(Ordering::Relaxed);
        let due = now != self.seen;
        self.seen = now;
        due
    }
}

/// Starts the trimmer on the current runtime, where the allocator supports it (glibc).
pub fn spawn_trimmer() -> Option<tokio::task::JoinHandle<()>> {
    if !imp::SUPPORTED {
        return None;
    }
    Some(tokio::spawn(async {
        let mut tick = tokio::time::interval(TRIM_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut schedule = TrimSchedule::new();
        loop {
            tick.tick().await;
            if schedule.due() {
                let released = tokio::task::spawn_blocking(imp::trim).await;
                tracing::debug!(released = matches!(released, Ok(true)), "heap trimmed");
            }
        }
    }))
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    pub(super) const SUPPORTED: bool = true;

    /// True when memory was handed back.
    pub(super) fn trim() -> bool {
        // SAFETY: malloc_trim takes no pointers and is thread-safe (it locks each arena it
        // walks).
        unsafe { libc::malloc_trim(0) == 1 }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub(super) const SUPPORTED: bool = false;

    pub(super) fn trim() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trim_is_due_after_connections_come_or_go_and_not_while_idle() {
        let mut schedule = TrimSchedule::new();
        assert!(!schedule.due(), "nothing happened");
        let connection = Churn::begin();
        assert!(schedule.due(), "a connection opened");
        assert!(!schedule.due(), "already trimmed for it");
        drop(connection);
        assert!(schedule.due(), "a connection closed");
        assert!(!schedule.due());
    }

    #[test]
    fn trimming_runs_where_supported() {
        // Only that the call is sound here; whether pages came back depends on the heap.
        let _ = imp::trim();
    }
}
