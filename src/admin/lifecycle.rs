//! Stopping or restarting the whole service on an administrator's request. The request is
//! only recorded here; `corvid serve` (or a test) waits for it and runs the ordered shutdown
//! (`RunningServer::shutdown`), exactly as it does for a signal.

use tokio::sync::watch;

/// What the administrator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Shut down and stay down.
    Shutdown,
    /// Shut down and exit with `RESTART_EXIT_CODE`, so a service manager starts it again.
    Restart,
}

/// The status `corvid serve` exits with after a restart request: EX_TEMPFAIL, which
/// systemd's `Restart=on-failure` restarts on (or name it in `RestartForceExitStatus=`).
pub const RESTART_EXIT_CODE: i32 = 75;

/// Shared through `Router::service`.
pub struct Lifecycle {
    requested: watch::Sender<Option<Stop>>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            requested: watch::channel(None).0,
        }
    }
}

impl Lifecycle {
    /// Records the request; the first one wins.
    pub fn request(&self, stop: Stop) {
        self.requested.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(stop);
                true
            } else {
                false
            }
        });
    }

    /// Resolves once a stop was requested (at once if one already was).
    pub async fn requested(&self) -> Stop {
        let mut rx = self.requested.subscribe();
        loop {
            if let Some(stop) = *rx.borrow_and_update() {
                return stop;
            }
            if rx.changed().await.is_err() {
                // The sender lives as long as `self`; without it nothing can be requested.
                std::future::pending::<()>().await;
            }
        }
    }
}
