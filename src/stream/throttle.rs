//! Slows down repeated failed logins from one address, so password guessing gets expensive
//! while a user who mistyped once notices nothing.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;

const FORGET_AFTER: Duration = Duration::from_secs(600);
const BASE_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(8);
/// Beyond this many tracked addresses, stale ones are swept so the table stays bounded.
const SWEEP_ABOVE: usize = 10_000;

pub struct AuthThrottle {
    free_failures: u32,
    failures: DashMap<IpAddr, (u32, Instant)>,
}

impl AuthThrottle {
    pub fn new(free_failures: u32) -> Self {
        AuthThrottle {
            free_failures,
            failures: DashMap::new(),
        }
    }

    /// How long to wait before answering a failed attempt from `ip` (the failure included).
    pub fn record_failure(&self, ip: IpAddr) -> Duration {
        self.record_failure_at(ip, Instant::now())
    }

    fn record_failure_at(&self, ip: IpAddr, now: Instant) -> Duration {
        if self.failures.len() > SWEEP_ABOVE {
            self.failures
                .retain(|_, (_, last)| now.duration_since(*last) < FORGET_AFTER);
        }
        let mut entry = self.failures.entry(ip).or_insert((0, now));
        let (count, last) = *entry;
        let count = if now.duration_since(last) >= FORGET_AFTER {
            1
        } else {
            count + 1
        };
        *entry = (count, now);
        delay_for(count, self.free_failures)
    }

    pub fn record_success(&self, ip: IpAddr) {
        self.failures.remove(&ip);
    }
}

fn delay_for(failures: u32, free: u32) -> Duration {
    if failures <= free {
        return Duration::ZERO;
    }
    let doublings = (failures - free - 1).min(8);
    (BASE_DELAY * 2u32.pow(doublings)).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_grows_after_free_failures_and_resets() {
        let throttle = AuthThrottle::new(3);
        let ip: IpAddr = [127, 0, 0, 9].into();
        let other: IpAddr = [127, 0, 0, 10].into();
        let t0 = Instant::now();
        let delays: Vec<_> = (0..8).map(|_| throttle.record_failure_at(ip, t0)).collect();
        assert_eq!(&delays[..3], &[Duration::ZERO; 3]);
        assert_eq!(delays[3], BASE_DELAY);
        assert_eq!(delays[4], BASE_DELAY * 2);
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(throttle.record_failure_at(other, t0), Duration::ZERO);
        throttle.record_success(ip);
        assert_eq!(throttle.record_failure_at(ip, t0), Duration::ZERO);
        let later = t0 + FORGET_AFTER * 2;
        for _ in 0..5 {
            throttle.record_failure_at(other, t0);
        }
        assert_eq!(throttle.record_failure_at(other, later), Duration::ZERO);
        assert_eq!(delay_for(100, 3), MAX_DELAY);
    }
}
