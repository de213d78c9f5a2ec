//! Traffic shaping of what a client sends (issue 15): bytes per second and stanzas per
//! second, each a token bucket with a burst. A client over its rate is slowed, not
//! disconnected: the session stops reading from it until the buckets allow, so its data waits
//! in the kernel and TCP's window pushes back on the client, while the other connections on
//! the same thread are read as before.
//!
//! The buckets are refilled lazily, from the time elapsed when they are next charged or asked:
//! an idle session holds no timer and no task, only these few words.

use std::time::{Duration, Instant};

use crate::config::LimitsConfig;

/// The longest one charge makes a client wait: a day, which a single read reaches only at
/// rates of a byte or so per second.
const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// A token bucket kept as the time its debt is paid off (the "theoretical arrival time" of the
/// generic cell rate algorithm): charging `n` units pushes that time `n / rate` seconds on,
/// and the bucket is over its rate while that time lies more than `burst / rate` ahead of now.
/// One `Instant` holds the level, so nothing needs refilling between uses.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Units per second.
    rate: u32,
    /// Units the bucket holds when full.
    burst: u32,
    /// When everything charged so far is paid for at `rate`; in the past, the bucket is full.
    paid_at: Instant,
}

impl TokenBucket {
    /// A full bucket, or None when `rate` is 0 (no limit).
    pub fn new(rate: u32, burst: u32, now: Instant) -> Option<TokenBucket> {
        (rate > 0).then_some(TokenBucket {
            rate,
            burst: burst.max(1),
            paid_at: now,
        })
    }

    /// Takes `units` out of the bucket, whether or not they were there: they have already been
    /// read, and what goes past the burst is a debt the next `ready_at` makes the client wait
    /// for.
    pub fn charge(&mut self, units: u64, now: Instant) {
        if units == 0 {
            return;
        }
        // A full bucket does not keep filling: idle time is not saved up beyond the burst.
        let from = self.paid_at.max(now);
        // Capped, so that adding it to an `Instant` cannot overflow (a day from now always
        // fits) and the fallback is never taken.
        let owed = self.time_for(units).min(MAX_WAIT);
        self.paid_at = from.checked_add(owed).unwrap_or(from);
    }

    /// When the bucket is back within its burst, if that is later than `now`.
    pub fn ready_at(&self, now: Instant) -> Option<Instant> {
        let allowed = self.time_for(u64::from(self.burst));
        let ready = self.paid_at.checked_sub(allowed).unwrap_or(now);
        (ready > now).then_some(ready)
    }

    /// How long `units` take at the bucket's rate.
    fn time_for(&self, units: u64) -> Duration {
        // In nanoseconds as u128: a u64 count of bytes times 10^9 does not fit in 64 bits.
        let nanos = u128::from(units) * 1_000_000_000 / u128::from(self.rate);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// The buckets of one connection: bytes from the start (at the lower rate until the session
/// binds), stanzas once bound. Bytes are counted by the transport as it reads them, after TLS
/// and before parsing (for WebSocket, the payload of every message); the shaper charges the
/// difference since it last looked.
#[derive(Debug, Default)]
pub struct Shaper {
    bytes: Option<TokenBucket>,
    stanzas: Option<TokenBucket>,
    /// The transport's byte count when it was last charged.
    charged: u64,
}

impl Shaper {
    /// The shaper of a connection that has not bound a resource yet.
    pub fn before_bind(limits: &LimitsConfig, now: Instant) -> Shaper {
        Shaper {
            bytes: TokenBucket::new(
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
        self.bytes = TokenBucket::new(
            limits.bytes_rate_per_session,
            limits.bytes_burst_per_session,
            now,
        );
        self.stanzas = TokenBucket::new(
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
            std::mem::size_of::<Shaper>() <= 56,
            "{}",
            std::mem::size_of::<Shaper>()
        );
    }

    #[test]
    fn zero_rate_is_no_limit() {
        let at = clock();
        assert!(TokenBucket::new(0, 100, at(0)).is_none());
        let mut shaper = Shaper::default();
        shaper.charge(u64::MAX, true, at(0));
        assert_eq!(shaper.ready_at(at(0)), None);
    }

    #[test]
    fn the_burst_goes_through_at_once_and_the_rest_at_the_rate() {
        let at = clock();
        let mut bucket = TokenBucket::new(1000, 500, at(0)).expect("a bucket");
        bucket.charge(500, at(0));
        assert_eq!(bucket.ready_at(at(0)), None, "the burst is free");
        bucket.charge(100, at(0));
        // 100 over the burst at 1000 per second: 100 ms.
        assert_eq!(bucket.ready_at(at(0)), Some(at(100)));
        assert_eq!(bucket.ready_at(at(40)), Some(at(100)));
        assert_eq!(bucket.ready_at(at(100)), None);
        // From then on every unit is paid for as it comes, at the rate.
        bucket.charge(10, at(100));
        assert_eq!(bucket.ready_at(at(100)), Some(at(110)));
    }

    #[test]
    fn idle_time_refills_up_to_the_burst_and_no_further() {
        let at = clock();
        let mut bucket = TokenBucket::new(1000, 500, at(0)).expect("a bucket");
        bucket.charge(1000, at(0));
        assert_eq!(bucket.ready_at(at(0)), Some(at(500)));
        // Idle for an hour: the bucket is full again, but holds only the burst.
        let later = 3_600_000;
        assert_eq!(bucket.ready_at(at(later)), None);
        bucket.charge(500, at(later));
        assert_eq!(bucket.ready_at(at(later)), None);
        bucket.charge(1, at(later));
        assert_eq!(bucket.ready_at(at(later)), Some(at(later + 1)));
    }

    #[test]
    fn what_goes_through_in_a_window_is_burst_plus_rate_times_window() {
        // A client charging as soon as it may: in ten seconds it gets the burst, ten seconds
        // of the rate, and one charge over (the one that made it wait).
        let at = clock();
        let (rate, burst, unit) = (1000u64, 300u64, 7u64);
        let mut bucket = TokenBucket::new(1000, 300, at(0)).expect("a bucket");
        let mut now = at(0);
        let mut through = 0;
        while now < at(10_000) {
            bucket.charge(unit, now);
            through += unit;
            if let Some(ready) = bucket.ready_at(now) {
                now = ready;
            }
        }
        assert!(through <= burst + rate * 10 + unit, "{through}");
        assert!(through >= rate * 10, "{through}");
    }

    #[test]
    fn huge_charges_saturate_instead_of_overflowing() {
        let at = clock();
        let mut bucket = TokenBucket::new(1, 1, at(0)).expect("a bucket");
        bucket.charge(u64::MAX / 2, at(0));
        assert!(bucket.ready_at(at(0)).is_some());
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
