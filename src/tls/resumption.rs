//! TLS session resumption for returning clients: a client that kept a session from an earlier
//! connection skips the certificate and its signature (the handshake's most expensive step with
//! an RSA key) and proves itself with the shared secret instead.
//!
//! TLS 1.3 clients get stateless tickets: the session is sealed under a key only this process
//! holds, so the server keeps nothing per client. The key is replaced every
//! [`TICKET_KEY_LIFETIME_SECS`] and the one before it still opens tickets for as long again, so
//! no ticket opens for more than twice that, and a key leaked from memory uncovers at most that
//! window's resumed sessions. TLS 1.2 clients get tickets too, or, if they ask for none, a
//! session id remembered in a bounded cache.
//!
//! Every configuration gets its own ticket key and cache: a session is only resumed where it
//! was made, with the certificate it was made with. A certificate reload starts them afresh
//! (returning clients pay one full handshake).

use std::sync::Arc;

use rustls::server::{ProducesTickets, ServerSessionMemoryCache};
use rustls::ServerConfig;

use super::TlsError;

/// How long one ticket key seals new tickets (fixed by rustls' ticketer).
pub const TICKET_KEY_LIFETIME_SECS: u32 = 6 * 60 * 60;

/// TLS 1.2 sessions remembered by id, per configuration. Entries are a few hundred bytes; when
/// full, the oldest go first.
pub const TLS12_SESSION_CACHE: usize = 4096;

/// Tickets sent after each handshake: one for the next connection, one spare for a client
/// that opens two at once (a second device profile, a reconnect racing the old socket).
pub const TLS13_TICKETS: usize = 2;

/// Switches resumption on in `config`.
pub(super) fn enable(config: &mut ServerConfig) -> Result<(), TlsError> {
    config.ticketer = ticketer()?;
    config.session_storage = ServerSessionMemoryCache::new(TLS12_SESSION_CACHE);
    config.send_tls13_tickets = TLS13_TICKETS;
    Ok(())
}

/// rustls' aws-lc-rs ticketer: RFC 5077's recommended construction (AES-256-CBC and
/// HMAC-SHA256) under random keys that it replaces every six hours itself, keeping the
/// previous key for decryption only.
fn ticketer() -> Result<Arc<dyn ProducesTickets>, TlsError> {
    Ok(rustls::crypto::aws_lc_rs::Ticketer::new()?)
}
