//! The goodbye: a stream error and the footer, the footer alone, or nothing, as the way the
//! stream ended calls for.

use tracing::debug;

use super::C2s;
use crate::stream::end::End;
use crate::stream::transport::Transport;
use crate::xml::{self, stream_error};

/// How long the closing stream error and footer may take to write.
pub(super) const FAREWELL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl<T: Transport> C2s<T> {
    /// Ends the stream as `end` says: a stream error and footer, a footer, or nothing.
    /// Says goodbye the way `end` calls for. Bounded in time: a client that does not read
    /// cannot keep the connection (and its task) alive by not taking the last bytes.
    pub(super) async fn finish(&mut self, end: End) {
        let _ = tokio::time::timeout(FAREWELL_TIMEOUT, self.say_goodbye(end)).await;
    }

    async fn say_goodbye(&mut self, end: End) {
        let (end, app) = match end {
            End::ErrorWith(condition, app) => (End::Error(condition, None), Some(app)),
            end => (end, None),
        };
        match end {
            End::Error(condition, text) => {
                debug!(%condition, ?text, "closing stream with error");
                if self.open_stream().await.is_err() {
                    return;
                }
                let error = stream_error::element(condition, text, app.map(|app| *app));
                let bytes = xml::stream_element_to_bytes(&error, self.declares_stream_prefix());
                if self.transport.send(&[&bytes]).await.is_ok() {
                    let _ = self.transport.close_stream().await;
                }
            }
            End::PeerClosed => {
                let _ = self.open_stream().await;
                let _ = self.transport.close_stream().await;
            }
            End::Disconnected | End::ErrorWith(..) | End::TakenOver(_) => {}
            End::Stalled => {
                debug!("closing the connection of a client that stopped reading");
            }
        }
    }
}
