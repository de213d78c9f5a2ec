//! Traffic shaping of what a client sends (issue 15): bytes per second and stanzas per
//! second, each a token bucket with a burst. A client over its rate is slowed, not
//! disconnected: the session stops reading from it until the buckets allow, so its data waits
//! in the kernel and TCP's window pushes back on the client, while the other connections on
//! the same thread are read as before.
//!
//! The buckets are refilled lazily, from the time elapsed when they are next charged or asked:
//! an idle session holds no timer and no task, only these few words.

use std::time::Instant;

use crate::config::LimitsConfig;
use crate::limits::bucket::{Bucket, Rate};

/// A limit of one connection: its rate and where its bucket stands.
#[derive(Debug, Clone, Copy)]
struct Limited {
    rate: Rate,
    bucket: Bucket,
}

impl Limited {
    /// A full bucket, or None when `rate` is 0 (no limit).
    fn new(rate: u32, burst: u32, now: Instant) -> Option<Limited> {
        Rate::per_second(rate, burst).map(|rate| Limited {
            rate,
            bucket: Bucket::full(now),
        })
    }

    fn charge(&mut self, units: u64, now: Instant) {
        self.bucket.charge(&self.rate, units, now);
    }

    fn ready_at(&self, now: Instant) -> Option<Instant> {
        self.bucket.ready_at(&self.rate, now)
    }
}

/// The buckets of one connection: bytes from the start (at the lower rate until the session
/// binds), stanzas once bound. Bytes are counted by the transport as it reads them, after TLS
/// and before parsing (for WebSocket, the payload of every message); the shaper charges the
/// difference since it last looked.
#[derive(Debug, Default)]
pub struct Shaper {
    bytes: Option<Limited>,
    stanzas: Option<Limited>,
    /// The transport's byte count when it was last charged.
    charged: u64,
}

impl Shaper {
    /// The shaper of a connection that has not bound a resource yet.
    pub fn before_bind(limits: &LimitsConfig, now: Instant) -> Shaper {
        Shaper {
            bytes: Limited::new(
                limits.bytes_rate_before_bind,
                limits.bytes_burst_before_bind,
                now,
            ),
            stanzas: None,
            charged: 0,
        }
    }

    /// The session is bound (or resumed): its own rates from now on, with full buckets, the way
    /// `limits.max_unauthenticated_connections` stops counting it at the same moment.
    pub fn bound(&mut self, limits: &LimitsConfig, now: Instant) {
        self.bytes = Limited::new(
            limits.bytes_rate_per_session,
            limits.bytes_burst_per_session,
            now,
        );
        self.stanzas = Limited::new(
            limits.stanza_rate_per_session,
            limits.stanza_burst_per_session,
            now,
        );
    }

    /// Charges what the transport read since the last call (`bytes_read` is its running
    /// total), and one stanza when `stanza` is set.
    pub fn charge(&mut self, bytes_read: u64, stanza: bool, now: Instant) {
        let read = bytes_read.saturating_sub(self.charged);
        self.charged = bytes_read.max(self.charged);
        if let Some(bytes) = self.bytes.as_mut() {
            bytes.charge(read, now);
        }
        if let (true, Some(stanzas)) = (stanza, self.stanzas.as_mut()) {
            stanzas.charge(1, now);
        }
    }

    /// When the connection may be read again, if it is over a rate now.
    pub fn ready_at(&self, now: Instant) -> Option<Instant> {
        let bytes = self.bytes.as_ref().and_then(|b| b.ready_at(now));
        let stanzas = self.stanzas.as_ref().and_then(|s| s.ready_at(now));
        bytes.max(stanzas)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The clock is whatever instant a test passes: a start and offsets from it.
    fn clock() -> impl Fn(u64) -> Instant {
        let start = Instant::now();
        move |millis| start + Duration::from_millis(millis)
    }

    #[test]
    fn a_shaper_is_a_few_words() {
        // Every connection carries one for its whole life (issue 16 counts per-session bytes).
        assert!(
            std::mem::size_of::<Shaper>() <= 72,
            "{}",
            std::mem::size_of::<Shaper>()
        );
    }

    #[test]
    fn zero_rate_is_no_limit() {
        let at = clock();
        let mut shaper = Shaper::default();
        shaper.charge(u64::MAX, true, at(0));
        assert_eq!(shaper.ready_at(at(0)), None);
        let off = LimitsConfig {
            bytes_rate_before_bind: 0,
            ..LimitsConfig::default()
        };
        let mut shaper = Shaper::before_bind(&off, at(0));
        shaper.charge(u64::MAX, false, at(0));
        assert_eq!(shaper.ready_at(at(0)), None);
    }

    #[test]
    fn the_shaper_charges_what_was_read_since_last_time() {
        let at = clock();
        let limits = LimitsConfig {
            bytes_rate_before_bind: 100,
            bytes_burst_before_bind: 100,
            bytes_rate_per_session: 1000,
            bytes_burst_per_session: 1000,
            stanza_rate_per_session: 10,
            stanza_burst_per_session: 2,
            ..LimitsConfig::default()
        };
        let mut shaper = Shaper::before_bind(&limits, at(0));
        shaper.charge(100, false, at(0));
        assert_eq!(shaper.ready_at(at(0)), None);
        // The running total is 150: 50 more, half a second at 100 bytes per second.
        shaper.charge(150, false, at(0));
        assert_eq!(shaper.ready_at(at(0)), Some(at(500)));

        // Bound: the session's own rates, buckets full.
        shaper.bound(&limits, at(0));
        assert_eq!(shaper.ready_at(at(0)), None);
        shaper.charge(1150, true, at(0));
        shaper.charge(1150, true, at(0));
        assert_eq!(shaper.ready_at(at(0)), None, "within both bursts");
        shaper.charge(1150, true, at(0));
        // The third stanza is one over a burst of two at ten per second.
        assert_eq!(shaper.ready_at(at(0)), Some(at(100)));
        // Bytes over their burst too, by 200: the later of the two counts.
        shaper.charge(1350, false, at(0));
        assert_eq!(shaper.ready_at(at(0)), Some(at(200)));
    }
}
