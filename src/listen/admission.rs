//! Admission: whether a new connection is served at all, decided once at accept by every
//! listener (TCP, direct TLS, HTTP, HTTPS), before any TLS or parsing is spent on it. An admitted
//! connection holds a [`Permit`] for its whole life; dropping the permit gives its place back.
//!
//! Three limits (see `limits.*` in `corvid.toml`): connections held at once per address (an IPv4
//! address or an IPv6 /64, as the login throttle counts them), new connections per second per
//! address (a token bucket), and connections that have not bound a resource yet, from everyone.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::LimitsConfig;
use crate::limits::bucket::{Bucket, Rate};
use crate::stream::context::Admitted;
use crate::stream::throttle::Source;
use crate::xml::{self, ns, stream_error, StreamCondition};

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0} holds {1} connections already")]
    TooManyFromAddress(Source, u32),
    #[error("{0} opens connections faster than {1} a second")]
    TooFast(Source, u32),
    #[error("{0} connections are not logged in yet")]
    TooManyUnauthenticated(u32),
}

impl Refusal {
    /// What an HTTP client is told: this client is asking too much (429), or the server is
    /// busy with others (503).
    fn http_status_line(&self) -> &'static str {
        match self {
            Refusal::TooManyFromAddress(..) | Refusal::TooFast(..) => "429 Too Many Requests",
            Refusal::TooManyUnauthenticated(_) => "503 Service Unavailable",
        }
    }
}

/// The limits, each 0 for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_address: u32,
    pub rate_per_address: u32,
    pub burst_per_address: u32,
    pub unauthenticated: u32,
}

impl From<&LimitsConfig> for Limits {
    fn from(c: &LimitsConfig) -> Self {
        Limits {
            per_address: c.max_connections_per_address,
            rate_per_address: c.connection_rate_per_address,
            burst_per_address: c.connection_burst_per_address,
            unauthenticated: c.max_unauthenticated_connections,
        }
    }
}

/// The server's admission state, shared by every listener.
pub struct Admission {
    shared: Arc<Shared>,
}

struct Shared {
    limits: Limits,
    state: Mutex<State>,
}

struct State {
    addresses: HashMap<Source, Address>,
    unauthenticated: u32,
    /// Table size at which addresses that no longer matter are swept out. Doubles with what
    /// survives a sweep, so sweeping costs O(1) per admission however large the table is.
    sweep_at: usize,
}

const MIN_SWEEP: usize = 1024;

/// What is known of one address.
struct Address {
    open: u32,
    /// New connections it may open (see `limits::bucket`).
    bucket: Bucket,
}

impl Address {
    /// Nothing to remember: no connection open and a full bucket, as for a new address.
    fn forgettable(&self, now: Instant) -> bool {
        self.open == 0 && self.bucket.is_full(now.into_std())
    }
}

impl Limits {
    fn connection_rate(&self) -> Option<Rate> {
        Rate::per_second(self.rate_per_address, self.burst_per_address)
    }
}

impl Admission {
    pub fn new(limits: Limits) -> Admission {
        Admission {
            shared: Arc::new(Shared {
                limits,
                state: Mutex::new(State {
                    addresses: HashMap::new(),
                    unauthenticated: 0,
                    sweep_at: MIN_SWEEP,
                }),
            }),
        }
    }

    /// Admits a connection from `ip`, or says why not. An admitted connection counts as
    /// unauthenticated until [`Permit::bound`].
    pub fn admit(&self, ip: IpAddr) -> Result<Permit, Refusal> {
        self.admit_at(ip, Instant::now())
    }

    fn admit_at(&self, ip: IpAddr, now: Instant) -> Result<Permit, Refusal> {
        let limits = self.shared.limits;
        let source = Source::of(ip);
        let mut state = self.shared.lock();
        if limits.unauthenticated > 0 && state.unauthenticated >= limits.unauthenticated {
            return Err(Refusal::TooManyUnauthenticated(limits.unauthenticated));
        }
        state.sweep(now);
        let address = state.addresses.entry(source).or_insert(Address {
            open: 0,
            bucket: Bucket::full(now.into_std()),
        });
        if limits.per_address > 0 && address.open >= limits.per_address {
            return Err(Refusal::TooManyFromAddress(source, address.open));
        }
        if let Some(rate) = limits.connection_rate() {
            if address.bucket.take(&rate, now.into_std()).is_err() {
                return Err(Refusal::TooFast(source, limits.rate_per_address));
            }
        }
        address.open += 1;
        state.unauthenticated += 1;
        Ok(Permit(Arc::new(Held {
            shared: self.shared.clone(),
            source,
            unauthenticated: AtomicBool::new(true),
            accepted_at: now,
        })))
    }
}

impl Shared {
    /// The counts stay consistent even if a holder panicked: every update is a whole one.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn sweep(&mut self, now: Instant) {
        if self.addresses.len() < self.sweep_at {
            return;
        }
        self.addresses.retain(|_, a| !a.forgettable(now));
        self.sweep_at = (self.addresses.len() * 2).max(MIN_SWEEP);
    }
}

/// An admitted connection's place, given back when the last clone is dropped. Cloned where one
/// connection is served by more than one task (an HTTP connection and its WebSocket).
#[derive(Clone)]
pub struct Permit(Arc<Held>);

struct Held {
    shared: Arc<Shared>,
    source: Source,
    unauthenticated: AtomicBool,
    accepted_at: Instant,
}

impl Permit {
    /// The connection has bound a resource (or resumed a session): it no longer counts
    /// against the unauthenticated total. Its place per address is kept.
    pub fn bound(&self) {
        if self.0.unauthenticated.swap(false, Ordering::AcqRel) {
            let mut state = self.0.shared.lock();
            state.unauthenticated = state.unauthenticated.saturating_sub(1);
        }
    }

    /// When a connection accepted with this permit must have bound a resource: one deadline
    /// for the TLS handshake, an HTTP upgrade and the XMPP negotiation together.
    pub fn deadline(&self, negotiation_timeout: Duration) -> Instant {
        self.0.accepted_at + negotiation_timeout
    }
}

impl Admitted for Permit {
    fn deadline(&self, negotiation_timeout: Duration) -> Instant {
        Permit::deadline(self, negotiation_timeout)
    }

    fn bound(&self) {
        Permit::bound(self)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if *self.unauthenticated.get_mut() {
            state.unauthenticated = state.unauthenticated.saturating_sub(1);
        }
        let now = Instant::now();
        if let Some(address) = state.addresses.get_mut(&self.source) {
            address.open = address.open.saturating_sub(1);
            if address.forgettable(now) {
                state.addresses.remove(&self.source);
            }
        }
    }
}

/// What a refused connection is told before it is closed.
#[derive(Debug, Clone, Copy)]
pub enum Answer<'a> {
    /// An XMPP stream (port 5222): our stream header, `<policy-violation/>` (RFC 6120
    /// §4.9.3.13) and the footer, without waiting for the client's header.
    Xmpp { domain: &'a str },
    /// A status line with no body (port 5280), without reading the request.
    Http,
    /// Nothing: before TLS (5223, 5281) no byte could be understood, and a handshake only to
    /// say no would be the very work the limit is there to save.
    Nothing,
}

/// Answers a refused connection and closes it, from the accept loop: no task, no waiting.
pub fn turn_away(socket: TcpStream, refusal: &Refusal, answer: Answer<'_>) {
    let bytes = match answer {
        Answer::Xmpp { domain } => xmpp_refusal(domain, refusal),
        Answer::Http => format!(
            "HTTP/1.1 {}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            refusal.http_status_line()
        )
        .into_bytes(),
        Answer::Nothing => Vec::new(),
    };
    // Blocking mode is never set: the std socket stays non-blocking, so nothing below waits.
    let Ok(mut socket) = socket.into_std() else {
        return;
    };
    if !bytes.is_empty() {
        // A new connection's send buffer is empty: a few hundred bytes always fit.
        let _ = socket.write(&bytes);
        let _ = socket.shutdown(Shutdown::Write);
    }
    // Bytes left unread at close make the kernel reset the connection, and a reset can
    // destroy our answer before the client reads it: take what has already arrived.
    let mut sink = [0u8; 1024];
    for _ in 0..4 {
        match socket.read(&mut sink) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
}

fn xmpp_refusal(domain: &str, refusal: &Refusal) -> Vec<u8> {
    let error = stream_error::element(
        StreamCondition::PolicyViolation,
        Some(refusal.to_string()),
        None,
    );
    let mut answer = stream_error::header(ns::CLIENT, &stream_id(), domain).into_bytes();
    answer.extend_from_slice(&xml::stream_element_to_bytes(&error, false));
    answer.extend_from_slice(b"</stream:stream>");
    answer
}

fn stream_id() -> String {
    use rand::Rng;
    let bytes: [u8; 8] = rand::thread_rng().gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_address: u32, rate: u32, burst: u32, unauthenticated: u32) -> Admission {
        Admission::new(Limits {
            per_address,
            rate_per_address: rate,
            burst_per_address: burst,
            unauthenticated,
        })
    }

    fn v4(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn places_per_address_come_back_when_permits_drop() {
        let admission = limits(2, 0, 0, 0);
        let a = admission.admit(v4(1)).expect("first");
        let _b = admission.admit(v4(1)).expect("second");
        assert!(matches!(
            admission.admit(v4(1)),
            Err(Refusal::TooManyFromAddress(_, 2))
        ));
        admission.admit(v4(2)).expect("another address");
        let a2 = a.clone();
        drop(a);
        assert!(admission.admit(v4(1)).is_err(), "a clone still holds it");
        drop(a2);
        admission.admit(v4(1)).expect("given back");
    }

    #[test]
    fn an_ipv6_64_and_a_mapped_ipv4_count_as_one_address() {
        let admission = limits(1, 0, 0, 0);
        let _v6 = admission
            .admit("2001:db8:1:2::1".parse().expect("ip"))
            .expect("first");
        assert!(admission
            .admit("2001:db8:1:2:ffff::9".parse().expect("ip"))
            .is_err());
        let _v4 = admission.admit(v4(7)).expect("v4");
        assert!(admission
            .admit("::ffff:192.0.2.7".parse().expect("ip"))
            .is_err());
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let admission = limits(0, 2, 3, 0);
        let start = Instant::now();
        for _ in 0..3 {
            drop(admission.admit_at(v4(1), start).expect("burst"));
        }
        assert!(matches!(
            admission.admit_at(v4(1), start),
            Err(Refusal::TooFast(..))
        ));
        let later = start + Duration::from_millis(500);
        drop(admission.admit_at(v4(1), later).expect("refilled by one"));
        assert!(admission.admit_at(v4(1), later).is_err());
        let much_later = start + Duration::from_secs(60);
        for _ in 0..3 {
            drop(
                admission
                    .admit_at(v4(1), much_later)
                    .expect("no more than the burst"),
            );
        }
        assert!(admission.admit_at(v4(1), much_later).is_err());
    }

    #[test]
    fn binding_leaves_the_unauthenticated_count_once() {
        let admission = limits(0, 0, 0, 2);
        let a = admission.admit(v4(1)).expect("a");
        let _b = admission.admit(v4(2)).expect("b");
        assert!(matches!(
            admission.admit(v4(3)),
            Err(Refusal::TooManyUnauthenticated(2))
        ));
        a.bound();
        a.bound();
        let _c = admission.admit(v4(3)).expect("a bound");
        assert!(admission.admit(v4(4)).is_err(), "bound counted once");
        drop(a);
        assert!(
            admission.admit(v4(4)).is_err(),
            "a bound one leaving frees nothing"
        );
    }

    #[test]
    fn forgotten_addresses_leave_the_table() {
        let admission = limits(4, 0, 0, 0);
        for i in 0..=255u8 {
            drop(admission.admit(v4(i)).expect("admitted"));
        }
        assert!(admission.shared.lock().addresses.is_empty());
    }
}
