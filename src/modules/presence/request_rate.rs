//! Outbound subscription requests per account (`limits.subscription_requests_per_minute`):
//! a token bucket per account that sent some recently. Requests are the spam vector of
//! presence (each one lands in a stranger's roster prompt), so they alone are counted.
//!
//! The table is keyed by account, not by session, so reconnecting does not refill it; a
//! bucket that has refilled completely is the same as no bucket and is swept away once the
//! table has doubled since the last sweep, which keeps the cost of sweeping constant per
//! request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jid::BareJid;

use crate::config::LimitsConfig;
use crate::limits::bucket::{Bucket, Exhausted, Rate};

/// Sweeps never start below this many accounts: small tables are not worth it.
const MIN_SWEEP: usize = 1024;

pub struct RequestRate {
    rate: Option<Rate>,
    table: Mutex<Table>,
}

struct Table {
    buckets: HashMap<BareJid, Bucket>,
    sweep_at: usize,
}

impl RequestRate {
    pub fn new(limits: &LimitsConfig) -> RequestRate {
        RequestRate {
            rate: Rate::per(
                limits.subscription_requests_per_minute,
                Duration::from_secs(60),
                limits.subscription_request_burst,
            ),
            table: Mutex::new(Table {
                buckets: HashMap::new(),
                sweep_at: MIN_SWEEP,
            }),
        }
    }

    /// Counts one request of `user`, or refuses it.
    pub fn request(&self, user: &BareJid) -> Result<(), Exhausted> {
        self.request_at(user, Instant::now())
    }

    fn request_at(&self, user: &BareJid, now: Instant) -> Result<(), Exhausted> {
        let Some(rate) = &self.rate else {
            return Ok(());
        };
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if table.buckets.len() >= table.sweep_at {
            table.buckets.retain(|_, bucket| !bucket.is_full(now));
            table.sweep_at = (table.buckets.len() * 2).max(MIN_SWEEP);
        }
        table
            .buckets
            .entry(user.clone())
            .or_insert_with(|| Bucket::full(now))
            .take(rate, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_minute: u32, burst: u32) -> LimitsConfig {
        LimitsConfig {
            subscription_requests_per_minute: per_minute,
            subscription_request_burst: burst,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn each_account_has_its_own_budget() {
        let rate = RequestRate::new(&limits(30, 2));
        let alice = BareJid::new("alice@d.test").unwrap();
        let bob = BareJid::new("bob@d.test").unwrap();
        let now = Instant::now();
        assert!(rate.request_at(&alice, now).is_ok());
        assert!(rate.request_at(&alice, now).is_ok());
        assert!(rate.request_at(&alice, now).is_err());
        assert!(rate.request_at(&bob, now).is_ok());
        // One every two seconds.
        assert!(rate
            .request_at(&alice, now + Duration::from_secs(2))
            .is_ok());
    }

    #[test]
    fn zero_is_no_limit() {
        let rate = RequestRate::new(&limits(0, 0));
        let alice = BareJid::new("alice@d.test").unwrap();
        for _ in 0..1000 {
            assert!(rate.request(&alice).is_ok());
        }
        assert!(rate.table.lock().unwrap().buckets.is_empty());
    }

    #[test]
    fn refilled_buckets_are_swept_and_busy_ones_kept() {
        let rate = RequestRate::new(&limits(60, 1));
        let now = Instant::now();
        for i in 0..MIN_SWEEP {
            let user = BareJid::new(&format!("u{i}@d.test")).unwrap();
            rate.request_at(&user, now).unwrap();
        }
        let busy = BareJid::new("busy@d.test").unwrap();
        let later = now + Duration::from_secs(1);
        rate.request_at(&busy, later).unwrap();
        // The sweep ran before `busy` was counted, while everyone else had refilled...
        let table = rate.table.lock().unwrap();
        assert_eq!(table.buckets.len(), 1);
        drop(table);
        // ...and `busy` is still empty.
        assert!(rate.request_at(&busy, later).is_err());
    }
}
