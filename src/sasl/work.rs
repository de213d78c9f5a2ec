//! Where password hashing runs. PBKDF2 costs a millisecond or more of CPU per check, so it
//! cannot run on the threads that move stanzas; but handing each check to its own blocking
//! thread is no better under a burst of logins: a hundred logins in flight become a hundred
//! threads hashing at once, and the scheduler then gives the runtime's threads (which do the
//! TLS handshakes and everything else) a hundredth of the CPU each, so the logins behind them
//! stall. Checks therefore run on blocking threads, but no more of them at once than there are
//! CPUs; the others wait their turn without holding a thread.

use std::sync::OnceLock;

use tokio::sync::Semaphore;

/// Runs `work` off the runtime, at most one per CPU at a time. `None` if the work panicked.
pub async fn run<T, F>(work: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    // The semaphore is never closed, so acquiring fails only if it were: give up then.
    let _slot = slots().acquire().await.ok()?;
    tokio::task::spawn_blocking(work).await.ok()
}

fn slots() -> &'static Semaphore {
    static SLOTS: OnceLock<Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        Semaphore::new(cpus)
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_more_checks_at_once_than_cpus() {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..cpus * 4)
            .map(|_| {
                let (running, most) = (running.clone(), most.clone());
                tokio::spawn(run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                }))
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.expect("task"), Some(()));
        }
        assert!(most.load(Ordering::SeqCst) <= cpus, "{most:?} > {cpus}");
    }
}
