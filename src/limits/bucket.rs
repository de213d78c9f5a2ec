//! The token bucket every rate limit uses: connections per address, subscription requests per
//! account, groupchat messages per occupant, bytes and stanzas per connection.
//!
//! Kept as the time its debt is paid off (the "theoretical arrival time" of the generic cell
//! rate algorithm): each unit taken pushes that time on by one unit's worth at the rate, and the
//! bucket is over its burst while that time lies more than `burst` units ahead of now. One
//! `Instant` is the whole state, so the many buckets of one limit (say one per room occupant)
//! cost sixteen bytes each and need no refilling between uses. The shape (`Rate`) is kept apart
//! and shared; callers pass the time in, which lets the tests drive a clock of their own.

use std::time::{Duration, Instant};

/// The most debt one charge can add: a day, which a single read reaches only at rates of a
/// byte or so per second. Capped so that adding it to an `Instant` cannot overflow.
const MAX_DEBT: Duration = Duration::from_secs(24 * 3600);

/// How fast a bucket refills and how much it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// `count` units every `period_nanos`: kept as the fraction so no rounding accumulates.
    period_nanos: u64,
    count: u32,
    /// Units a full bucket holds: what may be spent at once.
    burst: u32,
}

impl Rate {
    /// `count` units per `period` on average, `burst` at once; `None` (no limit) when `count`
    /// is 0. A burst of 0 is taken as 1, so that a rate always lets something through.
    pub fn per(count: u32, period: Duration, burst: u32) -> Option<Rate> {
        if count == 0 {
            return None;
        }
        Some(Rate {
            period_nanos: u64::try_from(period.as_nanos()).unwrap_or(u64::MAX),
            count,
            burst: burst.max(1),
        })
    }

    /// `count` units per second, `burst` at once; `None` when `count` is 0.
    pub fn per_second(count: u32, burst: u32) -> Option<Rate> {
        Rate::per(count, Duration::from_secs(1), burst)
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// How long `units` take at this rate, at most `MAX_DEBT`.
    fn time_for(&self, units: u64) -> Duration {
        // u128: a u64 count of bytes times a period in nanoseconds does not fit in 64 bits.
        let nanos = u128::from(units) * u128::from(self.period_nanos) / u128::from(self.count);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)).min(MAX_DEBT)
    }
}

/// Refusal: the bucket is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limit reached; the next token comes in {}", humanize(*.retry_after))]
pub struct Exhausted {
    /// When the next token will be there.
    pub retry_after: Duration,
}

fn humanize(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{} s", d.as_secs_f64().ceil() as u64)
    } else {
        format!("{} ms", d.as_millis().max(1))
    }
}

/// The state of one bucket of some `Rate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// When everything taken so far is paid for at the rate; not later than now, the bucket
    /// is full.
    paid_at: Instant,
}

impl Bucket {
    /// A full bucket, as for someone not seen before.
    pub fn full(now: Instant) -> Bucket {
        Bucket { paid_at: now }
    }

    /// Takes one unit, or says how long until there is one (and takes nothing).
    pub fn take(&mut self, rate: &Rate, now: Instant) -> Result<(), Exhausted> {
        let after = self.debt_from(now) + rate.time_for(1);
        match over_burst(rate, after, now) {
            Some(ready) => Err(Exhausted {
                retry_after: ready - now,
            }),
            None => {
                self.paid_at = after;
                Ok(())
            }
        }
    }

    /// Takes `units` whether or not they are there: for what has already happened (bytes
    /// read), where the debt past the burst is paid by waiting until `ready_at`.
    pub fn charge(&mut self, rate: &Rate, units: u64, now: Instant) {
        if units > 0 {
            self.paid_at = self.debt_from(now) + rate.time_for(units);
        }
    }

    /// When the bucket is back within its burst, if that is later than `now`.
    pub fn ready_at(&self, rate: &Rate, now: Instant) -> Option<Instant> {
        over_burst(rate, self.paid_at, now)
    }

    /// Whether the bucket is as full as a new one: forgetting it changes nothing.
    pub fn is_full(&self, now: Instant) -> bool {
        self.paid_at <= now
    }

    /// Where new debt starts: idle time is not saved up beyond a full bucket, and a clock
    /// that went backwards earns nothing.
    fn debt_from(&self, now: Instant) -> Instant {
        self.paid_at.max(now)
    }
}

/// When a bucket paid off at `paid_at` is within its burst again, if later than `now`.
fn over_burst(rate: &Rate, paid_at: Instant, now: Instant) -> Option<Instant> {
    let ready = paid_at.checked_sub(rate.time_for(u64::from(rate.burst)))?;
    (ready > now).then_some(ready)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn zero_means_no_limit_and_a_zero_burst_still_lets_one_through() {
        assert_eq!(Rate::per(0, SEC, 10), None);
        assert_eq!(Rate::per(5, SEC, 0).map(|r| r.burst()), Some(1));
    }

    #[test]
    fn a_burst_then_one_token_per_interval() {
        let rate = Rate::per(5, SEC, 10).unwrap();
        let start = Instant::now();
        let mut bucket = Bucket::full(start);
        for _ in 0..10 {
            assert!(bucket.take(&rate, start).is_ok());
        }
        let refused = bucket.take(&rate, start).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_millis(200));
        // 199 ms: not yet; 200 ms: one, and only one.
        let almost = start + Duration::from_millis(199);
        assert_eq!(
            bucket.take(&rate, almost).unwrap_err().retry_after,
            Duration::from_millis(1)
        );
        let one = start + Duration::from_millis(200);
        assert!(bucket.take(&rate, one).is_ok());
        assert!(bucket.take(&rate, one).is_err());
    }

    #[test]
    fn partial_intervals_add_up_across_refills() {
        let rate = Rate::per(1, SEC, 1).unwrap();
        let start = Instant::now();
        let mut bucket = Bucket::full(start);
        bucket.take(&rate, start).unwrap();
        // Asking at 0.6 s refuses but must not throw the 0.6 s away.
        assert!(bucket.take(&rate, start + SEC * 6 / 10).is_err());
        assert!(bucket.take(&rate, start + SEC).is_ok());
    }

    #[test]
    fn a_long_pause_fills_up_to_the_burst_only() {
        let rate = Rate::per(30, Duration::from_secs(60), 3).unwrap();
        let start = Instant::now();
        let mut bucket = Bucket::full(start);
        for _ in 0..3 {
            bucket.take(&rate, start).unwrap();
        }
        let later = start + Duration::from_secs(3600);
        assert!(bucket.is_full(later));
        for _ in 0..3 {
            assert!(bucket.take(&rate, later).is_ok());
        }
        assert!(bucket.take(&rate, later).is_err());
    }

    #[test]
    fn a_full_bucket_saves_nothing_for_later() {
        let rate = Rate::per(1, SEC, 2).unwrap();
        let start = Instant::now();
        let mut bucket = Bucket::full(start);
        // Idle for a minute while full, then spend: only the burst, then one per second.
        let later = start + SEC * 60;
        bucket.take(&rate, later).unwrap();
        bucket.take(&rate, later).unwrap();
        assert!(bucket.take(&rate, later).is_err());
        assert!(bucket.take(&rate, later + SEC).is_ok());
    }

    #[test]
    fn a_clock_that_goes_backwards_earns_nothing() {
        let rate = Rate::per(1, SEC, 1).unwrap();
        let start = Instant::now() + SEC * 10;
        let mut bucket = Bucket::full(start);
        bucket.take(&rate, start).unwrap();
        assert!(bucket.take(&rate, start - SEC * 5).is_err());
        assert!(bucket.take(&rate, start + SEC).is_ok());
    }

    #[test]
    fn the_refusal_says_when_to_come_back() {
        let rate = Rate::per(30, Duration::from_secs(60), 1).unwrap();
        let start = Instant::now();
        let mut bucket = Bucket::full(start);
        bucket.take(&rate, start).unwrap();
        let refused = bucket.take(&rate, start).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(2));
        assert!(refused.to_string().contains("2 s"), "{refused}");
    }

    fn clock() -> impl Fn(u64) -> Instant {
        let start = Instant::now();
        move |millis| start + Duration::from_millis(millis)
    }

    #[test]
    fn charged_past_the_burst_means_waiting_at_the_rate() {
        let at = clock();
        let rate = Rate::per_second(1000, 500).unwrap();
        let mut bucket = Bucket::full(at(0));
        bucket.charge(&rate, 500, at(0));
        assert_eq!(bucket.ready_at(&rate, at(0)), None, "the burst is free");
        bucket.charge(&rate, 100, at(0));
        // 100 over the burst at 1000 per second: 100 ms.
        assert_eq!(bucket.ready_at(&rate, at(0)), Some(at(100)));
        assert_eq!(bucket.ready_at(&rate, at(40)), Some(at(100)));
        assert_eq!(bucket.ready_at(&rate, at(100)), None);
        bucket.charge(&rate, 10, at(100));
        assert_eq!(bucket.ready_at(&rate, at(100)), Some(at(110)));
        // Idle for an hour: full again, but holding only the burst.
        let later = 3_600_000;
        assert!(bucket.is_full(at(later)));
        bucket.charge(&rate, 500, at(later));
        assert_eq!(bucket.ready_at(&rate, at(later)), None);
        bucket.charge(&rate, 1, at(later));
        assert_eq!(bucket.ready_at(&rate, at(later)), Some(at(later + 1)));
    }

    #[test]
    fn what_goes_through_in_a_window_is_burst_plus_rate_times_window() {
        // Charging as soon as allowed: in ten seconds, the burst, ten seconds of the rate, and
        // the one charge over that made it wait.
        let at = clock();
        let (per_second, burst, unit) = (1000u64, 300u64, 7u64);
        let rate = Rate::per_second(1000, 300).unwrap();
        let mut bucket = Bucket::full(at(0));
        let mut now = at(0);
        let mut through = 0;
        while now < at(10_000) {
            bucket.charge(&rate, unit, now);
            through += unit;
            if let Some(ready) = bucket.ready_at(&rate, now) {
                now = ready;
            }
        }
        assert!(through <= burst + per_second * 10 + unit, "{through}");
        assert!(through >= per_second * 10, "{through}");
    }

    #[test]
    fn huge_charges_saturate_instead_of_overflowing() {
        let at = clock();
        let rate = Rate::per_second(1, 1).unwrap();
        let mut bucket = Bucket::full(at(0));
        bucket.charge(&rate, u64::MAX, at(0));
        bucket.charge(&rate, u64::MAX, at(0));
        assert!(bucket.ready_at(&rate, at(0)).is_some());
    }
}
