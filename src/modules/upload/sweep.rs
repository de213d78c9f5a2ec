//! Deletes uploads older than `upload.expire_after_secs`, records and files, at start and
//! then every `sweep_interval_secs`, until the server shuts down.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tracing::{info, warn};

use super::{delete_files, Upload};
use crate::router::Router;

pub(super) async fn run(router: Arc<Router>, upload: Arc<Upload>) {
    let mut shutdown = router.shutdown_signal();
    let interval = Duration::from_secs(upload.config.sweep_interval_secs);
    loop {
        sweep_once(&router, &upload).await;
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait() => return,
        }
    }
}

async fn sweep_once(router: &Router, upload: &Upload) {
    let expiry = i64::try_from(upload.config.expire_after_secs)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000);
    let before = Utc::now().timestamp_millis().saturating_sub(expiry);
    match router.storage().uploads.delete_uploads_before(before).await {
        Ok(paths) => {
            delete_files(upload.files.as_ref(), &paths).await;
            if !paths.is_empty() {
                info!(files = paths.len(), "expired uploads deleted");
            }
        }
        Err(e) => warn!(error = %e, "sweeping expired uploads failed"),
    }
}
