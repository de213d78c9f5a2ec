//! Failures counted over a window of time, and the delay a count earns.

use std::time::{Duration, Instant};

/// Failures since the first one, forgotten `len` after that first one: a fixed window that
/// opens with a failure. Two numbers per tracked key, whatever the limits, so the tables'
/// memory does not grow with `max_failures_per_window`.
#[derive(Debug, Clone, Copy, Default)]
pub struct FailureWindow {
    opened: Option<Instant>,
    count: u32,
}

impl FailureWindow {
    /// Failures in the window still open at `now`.
    pub fn count(&self, now: Instant, len: Duration) -> u32 {
        match self.opened {
            Some(opened) if now.saturating_duration_since(opened) < len => self.count,
            _ => 0,
        }
    }

    pub fn add(&mut self, now: Instant, len: Duration) {
        if self.count(now, len) == 0 {
            *self = FailureWindow {
                opened: Some(now),
                count: 1,
            };
        } else {
            self.count = self.count.saturating_add(1);
        }
    }

    /// Restarts the window at `now`, keeping the count: a budget used up late in a window
    /// stays used up for a whole window, not just for what was left of it.
    pub fn restart(&mut self, now: Instant) {
        if self.opened.is_some() {
            self.opened = Some(now);
        }
    }

    pub fn clear(&mut self) {
        *self = FailureWindow::default();
    }
}

/// The wait before answering once `failures` have been counted: nothing for the first `free`,
/// then `base` doubling with each further failure, at most `max`.
pub fn delay_for(failures: u32, free: u32, base: Duration, max: Duration) -> Duration {
    if failures < free {
        return Duration::ZERO;
    }
    // 2^16 × any sensible base is far above any sensible max; the cap keeps the shift sane.
    let doublings = (failures - free).min(16);
    base.saturating_mul(1 << doublings).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEN: Duration = Duration::from_secs(60);

    #[test]
    fn a_window_opens_with_its_first_failure_and_closes_len_later() {
        let t0 = Instant::now();
        let mut w = FailureWindow::default();
        assert_eq!(w.count(t0, LEN), 0);
        w.add(t0, LEN);
        w.add(t0 + LEN / 2, LEN);
        assert_eq!(w.count(t0 + LEN / 2, LEN), 2);
        // Later failures do not keep the window open: it is anchored at the first.
        assert_eq!(w.count(t0 + LEN, LEN), 0);
        w.add(t0 + LEN, LEN);
        assert_eq!(w.count(t0 + LEN, LEN), 1);
        w.clear();
        assert_eq!(w.count(t0 + LEN, LEN), 0);
    }

    #[test]
    fn a_restarted_window_keeps_its_count_for_a_whole_window() {
        let t0 = Instant::now();
        let mut w = FailureWindow::default();
        w.restart(t0);
        assert_eq!(w.count(t0, LEN), 0, "nothing to restart");
        w.add(t0, LEN);
        w.add(t0, LEN);
        let late = t0 + LEN - Duration::from_secs(1);
        w.restart(late);
        assert_eq!(w.count(t0 + LEN, LEN), 2);
        assert_eq!(w.count(late + LEN, LEN), 0);
    }

    #[test]
    fn delay_doubles_after_the_free_failures_up_to_max() {
        let base = Duration::from_millis(250);
        let max = Duration::from_secs(8);
        let delays: Vec<_> = (0..10).map(|n| delay_for(n, 3, base, max)).collect();
        assert_eq!(&delays[..3], &[Duration::ZERO; 3]);
        assert_eq!(delays[3], base);
        assert_eq!(delays[4], base * 2);
        assert_eq!(delays[8], max);
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(delay_for(u32::MAX, 0, base, max), max);
        assert_eq!(delay_for(5, 0, Duration::ZERO, max), Duration::ZERO);
    }
}
