//! A token bucket in integers: `burst` tokens at most, one more every `interval`, refilled
//! lazily when someone asks. The shape (`Rate`) is kept apart from the state (`Bucket`), so
//! that the many buckets of one limit, say one per room occupant, are a count and an instant
//! each. Callers pass the time in, which lets the tests drive a clock of their own.

use std::time::{Duration, Instant};

/// How fast a bucket refills and how much it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Time to earn one token.
    interval: Duration,
    /// Tokens a full bucket holds: what may be spent at once.
    burst: u32,
}

impl Rate {
    /// `count` tokens per `period` on average, `burst` at once; `None` (no limit) when
    /// `count` is 0. A burst of 0 is taken as 1, so that a rate always lets something through.
    pub fn per(count: u32, period: Duration, burst: u32) -> Option<Rate> {
        if count == 0 {
            return None;
        }
        Some(Rate {
            interval: period / count,
            burst: burst.max(1),
        })
    }

    pub fn burst(&self) -> u32 {
        self.burst
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
    tokens: u32,
    /// Up to when tokens have been credited: a partly earned token is not lost between
    /// refills, because this only moves by whole intervals.
    credited: Instant,
}

impl Bucket {
    /// A full bucket, as for someone not seen before.
    pub fn full(rate: &Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: rate.burst,
            credited: now,
        }
    }

    /// Takes one token, or says how long until there is one.
    pub fn take(&mut self, rate: &Rate, now: Instant) -> Result<(), Exhausted> {
        self.refill(rate, now);
        if self.tokens == 0 {
            let due = self.credited + rate.interval;
            return Err(Exhausted {
                retry_after: due.saturating_duration_since(now),
            });
        }
        self.tokens -= 1;
        Ok(())
    }

    /// Whether the bucket is as full as a new one: forgetting it changes nothing.
    pub fn is_full(&mut self, rate: &Rate, now: Instant) -> bool {
        self.refill(rate, now);
        self.tokens >= rate.burst
    }

    fn refill(&mut self, rate: &Rate, now: Instant) {
        if self.tokens >= rate.burst {
            // Nothing accrues in a full bucket.
            self.credited = self.credited.max(now);
            return;
        }
        let elapsed = now.saturating_duration_since(self.credited);
        let interval = rate.interval.as_nanos().max(1);
        let earned = elapsed.as_nanos() / interval;
        if earned == 0 {
            return;
        }
        let room = u128::from(rate.burst - self.tokens);
        if earned >= room {
            self.tokens = rate.burst;
            self.credited = now;
        } else {
            // `earned` < `room` <= u32::MAX, and `earned` intervals fit in `elapsed`.
            self.tokens += earned as u32;
            self.credited += rate.interval * earned as u32;
        }
    }
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
        let mut bucket = Bucket::full(&rate, start);
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
        let mut bucket = Bucket::full(&rate, start);
        bucket.take(&rate, start).unwrap();
        // Asking at 0.6 s refuses but must not throw the 0.6 s away.
        assert!(bucket.take(&rate, start + SEC * 6 / 10).is_err());
        assert!(bucket.take(&rate, start + SEC).is_ok());
    }

    #[test]
    fn a_long_pause_fills_up_to_the_burst_only() {
        let rate = Rate::per(30, Duration::from_secs(60), 3).unwrap();
        let start = Instant::now();
        let mut bucket = Bucket::full(&rate, start);
        for _ in 0..3 {
            bucket.take(&rate, start).unwrap();
        }
        let later = start + Duration::from_secs(3600);
        assert!(bucket.is_full(&rate, later));
        for _ in 0..3 {
            assert!(bucket.take(&rate, later).is_ok());
        }
        assert!(bucket.take(&rate, later).is_err());
    }

    #[test]
    fn a_full_bucket_saves_nothing_for_later() {
        let rate = Rate::per(1, SEC, 2).unwrap();
        let start = Instant::now();
        let mut bucket = Bucket::full(&rate, start);
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
        let mut bucket = Bucket::full(&rate, start);
        bucket.take(&rate, start).unwrap();
        assert!(bucket.take(&rate, start - SEC * 5).is_err());
        assert!(bucket.take(&rate, start + SEC).is_ok());
    }

    #[test]
    fn the_refusal_says_when_to_come_back() {
        let rate = Rate::per(30, Duration::from_secs(60), 1).unwrap();
        let start = Instant::now();
        let mut bucket = Bucket::full(&rate, start);
        bucket.take(&rate, start).unwrap();
        let refused = bucket.take(&rate, start).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(2));
        assert!(refused.to_string().contains("2 s"), "{refused}");
    }
}
