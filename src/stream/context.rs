//! What every stream task shares, whichever listener (or, later, outbound connection) started
//! it. Listeners and the server compose it; streams only read it, so imports point one way:
//! `server` → `listen` → `stream`.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::detached_cap::DetachedCap;
use super::resumption::Resumption;
use super::throttle::AuthThrottle;
use crate::config::Config;
use crate::router::Router;
use crate::tls::TlsContext;

pub struct StreamContext {
    pub config: Arc<Config>,
    pub router: Arc<Router>,
    pub tls: Option<Arc<TlsContext>>,
    pub throttle: AuthThrottle,
    /// XEP-0198 sessions that can be resumed, live or detached.
    pub resumption: Resumption,
    /// How many of them may wait detached per account (`limits.max_detached_sessions_per_account`).
    pub detached: DetachedCap,
    /// Open registration's per-address limits (XEP-0077).
    pub registrations: crate::registration::RegistrationLimiter,
}

/// The listener's hold on a connection it admitted, as the stream sees it: kept for the
/// stream's whole life (dropping it gives the place back), told when the stream is no longer
/// unauthenticated. A trait, so that streams need not know how listeners count connections.
pub trait Admitted: Send + 'static {
    /// When the negotiation must be over: counted from the connection's accept, so a TLS
    /// handshake or an HTTP upgrade before the stream leaves it less time, not more.
    fn deadline(&self, negotiation_timeout: Duration) -> Instant;

    /// The stream has bound a resource (or resumed a session).
    fn bound(&self);
}
