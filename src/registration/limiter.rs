//! The limits on open registration per source address: so many accounts an hour and a day,
//! and a minimum time between two. Kept in memory: a restart forgets them, which only ever
//! lets someone register sooner, never locks anyone out.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::RegistrationLimits;
use crate::stream::throttle::Source;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// Why an address may not register now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("too many accounts registered from this address in the last hour")]
    Hourly,
    #[error("too many accounts registered from this address in the last day")]
    Daily,
    #[error("registrations from one address must be {0} seconds apart")]
    TooSoon(u64),
}

#[derive(Debug)]
pub struct RegistrationLimiter {
    limits: RegistrationLimits,
    /// When each address registered in the last day, oldest first.
    seen: Mutex<HashMap<Source, VecDeque<Instant>>>,
}

impl RegistrationLimiter {
    pub fn new(limits: &RegistrationLimits) -> RegistrationLimiter {
        RegistrationLimiter {
            limits: limits.clone(),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `ip` may register now. Checked before the account is created and counted
    /// only once it was (`record`), so a refused or failed attempt costs nothing.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        let mut seen = self.lock();
        let Some(times) = seen.get_mut(&Source::of(ip)) else {
            return Ok(());
        };
        forget_before(times, now);
        let l = &self.limits;
        if let Some(last) = times.back() {
            if l.min_interval_secs > 0
                && now.saturating_duration_since(*last) < Duration::from_secs(l.min_interval_secs)
            {
                return Err(Refusal::TooSoon(l.min_interval_secs));
            }
        }
        let in_hour = times
            .iter()
            .filter(|t| now.saturating_duration_since(**t) < HOUR)
            .count();
        if l.per_address_per_hour > 0 && in_hour >= l.per_address_per_hour as usize {
            return Err(Refusal::Hourly);
        }
        if l.per_address_per_day > 0 && times.len() >= l.per_address_per_day as usize {
            return Err(Refusal::Daily);
        }
        Ok(())
    }

    /// Counts an account created from `ip`.
    pub fn record(&self, ip: IpAddr, now: Instant) {
        let mut seen = self.lock();
        // Addresses that have not registered for a day are dropped as others come, so the
        // map holds at most a day's worth of registering addresses.
        seen.retain(|_, times| {
            forget_before(times, now);
            !times.is_empty()
        });
        seen.entry(Source::of(ip)).or_default().push_back(now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Source, VecDeque<Instant>>> {
        // The map holds no invariant a panic could break half-way.
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn forget_before(times: &mut VecDeque<Instant>, now: Instant) {
    while times
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= DAY)
    {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(hour: u32, day: u32, interval: u64) -> RegistrationLimiter {
        RegistrationLimiter::new(&RegistrationLimits {
            per_address_per_hour: hour,
            per_address_per_day: day,
            min_interval_secs: interval,
        })
    }

    #[test]
    fn hourly_daily_and_interval_limits() {
        let ip: IpAddr = [192, 0, 2, 1].into();
        let other: IpAddr = [192, 0, 2, 2].into();
        let t0 = Instant::now();
        let l = limiter(2, 3, 60);
        assert_eq!(l.check(ip, t0), Ok(()));
        l.record(ip, t0);
        assert_eq!(
            l.check(ip, t0 + Duration::from_secs(30)),
            Err(Refusal::TooSoon(60))
        );
        assert_eq!(l.check(other, t0), Ok(()));
        l.record(ip, t0 + Duration::from_secs(61));
        assert_eq!(
            l.check(ip, t0 + Duration::from_secs(200)),
            Err(Refusal::Hourly)
        );
        l.record(ip, t0 + HOUR + Duration::from_secs(62));
        assert_eq!(l.check(ip, t0 + HOUR * 2), Err(Refusal::Daily));
        assert_eq!(l.check(ip, t0 + DAY + HOUR * 2), Ok(()));
    }

    #[test]
    fn an_ipv6_64_is_one_address() {
        let l = limiter(1, 0, 0);
        let t0 = Instant::now();
        l.record("2001:db8::1".parse().unwrap(), t0);
        assert_eq!(
            l.check("2001:db8::2".parse().unwrap(), t0),
            Err(Refusal::Hourly)
        );
        assert_eq!(l.check("2001:db8:0:1::2".parse().unwrap(), t0), Ok(()));
    }
}
