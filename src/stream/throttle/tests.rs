use super::*;

fn limits() -> Limits {
    Limits {
        failures_before_delay: 2,
        delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(400),
        max_concurrent_per_address: 2,
        max_failures_per_window: 5,
        window: Duration::from_secs(60),
        max_concurrent_per_account: 1,
        max_failures_per_account: 3,
    }
}

fn ip(last: u8) -> IpAddr {
    [127, 0, 0, last].into()
}

const FAILED: Result<(), SaslFailure> = Err(SaslFailure::NotAuthorized);
const OK: Result<(), SaslFailure> = Ok(());

/// One whole exchange at `now`: admitted, naming `user`, ending in `result`. Returns the delay
/// or the refusal.
fn exchange(
    throttle: &AuthThrottle,
    from: IpAddr,
    user: &str,
    result: Result<(), SaslFailure>,
    now: Instant,
) -> Result<Duration, Refused> {
    let mut attempt = throttle.admit_at(from, now)?;
    attempt.account_at(user, now)?;
    Ok(attempt.conclude_at(Verdict::of(&result), now))
}

#[test]
fn concurrent_attempts_are_limited_and_dropping_frees_the_slot() {
    let throttle = AuthThrottle::new(limits());
    let t0 = Instant::now();
    let first = throttle.admit_at(ip(1), t0).unwrap();
    let _second = throttle.admit_at(ip(1), t0).unwrap();
    assert_eq!(
        throttle.admit_at(ip(1), t0).err(),
        Some(Refused::AddressBusy)
    );
    // Another address is not concerned.
    assert!(throttle.admit_at(ip(2), t0).is_ok());
    // A connection lost mid-exchange drops its attempt, and with it the slot.
    drop(first);
    assert!(throttle.admit_at(ip(1), t0).is_ok());
    assert_eq!(throttle.stats().refused, 1);
}

#[test]
fn an_ipv6_64_shares_one_budget() {
    let throttle = AuthThrottle::new(limits());
    let t0 = Instant::now();
    let a: IpAddr = "2001:db8::1".parse().unwrap();
    let b: IpAddr = "2001:db8::2:3".parse().unwrap();
    let _x = throttle.admit_at(a, t0).unwrap();
    let _y = throttle.admit_at(b, t0).unwrap();
    assert_eq!(throttle.admit_at(a, t0).err(), Some(Refused::AddressBusy));
    assert!(throttle
        .admit_at("2001:db8:0:1::1".parse().unwrap(), t0)
        .is_ok());
}

#[test]
fn failures_per_window_are_a_hard_limit_until_the_window_closes() {
    let throttle = AuthThrottle::new(limits());
    let t0 = Instant::now();
    // Different accounts, so only the address's own limit is in play.
    for n in 0..5 {
        assert!(exchange(&throttle, ip(1), &format!("u{n}"), FAILED, t0).is_ok());
    }
    assert_eq!(
        exchange(&throttle, ip(1), "u9", OK, t0),
        Err(Refused::AddressFailing)
    );
    assert_eq!(throttle.stats().failures, 5);
    let later = t0 + limits().window;
    assert_eq!(
        exchange(&throttle, ip(1), "u9", OK, later),
        Ok(Duration::ZERO)
    );
}

#[test]
fn a_budget_used_up_late_in_a_window_stays_used_up_for_a_whole_window() {
    let l = limits();
    let throttle = AuthThrottle::new(l.clone());
    let t0 = Instant::now();
    exchange(&throttle, ip(1), "u0", FAILED, t0).unwrap();
    let late = t0 + l.window - Duration::from_secs(1);
    for n in 1..5 {
        exchange(&throttle, ip(1), &format!("u{n}"), FAILED, late).unwrap();
    }
    let after_first_window = t0 + l.window + Duration::from_secs(1);
    assert_eq!(
        throttle.admit_at(ip(1), after_first_window).err(),
        Some(Refused::AddressFailing)
    );
    assert!(throttle.admit_at(ip(1), late + l.window).is_ok());
}

#[test]
fn parallel_attempts_cannot_overshoot_the_budget() {
    let throttle = AuthThrottle::new(limits());
    let t0 = Instant::now();
    for n in 0..4 {
        exchange(&throttle, ip(1), &format!("u{n}"), FAILED, t0).unwrap();
    }
    // One failure left: one exchange in flight takes it.
    let _last = throttle.admit_at(ip(1), t0).unwrap();
    assert_eq!(
        throttle.admit_at(ip(1), t0).err(),
        Some(Refused::AddressBusy)
    );
}

#[test]
fn success_and_failure_wait_alike_and_the_wait_grows() {
    let l = limits();
    let t0 = Instant::now();
    let with_history = |failures: u32| {
        let throttle = AuthThrottle::new(l.clone());
        for n in 0..failures {
            exchange(&throttle, ip(1), &format!("u{n}"), FAILED, t0).unwrap();
        }
        throttle
    };
    for failures in 0..4 {
        let on_success = exchange(&with_history(failures), ip(1), "v", OK, t0).unwrap();
        let on_failure = exchange(&with_history(failures), ip(1), "v", FAILED, t0).unwrap();
        assert_eq!(on_success, on_failure, "after {failures} failures");
    }
    let delays: Vec<_> = (0..5)
        .map(|f| exchange(&with_history(f), ip(1), "v", OK, t0).unwrap())
        .collect();
    assert_eq!(&delays[..2], &[Duration::ZERO; 2]);
    assert_eq!(delays[2], l.delay);
    assert_eq!(delays[3], l.delay * 2);
    assert_eq!(delays[4], l.max_delay);
}

#[test]
fn a_success_does_not_refill_the_address_budget() {
    let throttle = AuthThrottle::new(limits());
    let t0 = Instant::now();
    for n in 0..4 {
        exchange(&throttle, ip(1), &format!("victim{n}"), FAILED, t0).unwrap();
    }
    // The attacker logs into an account of his own: the address keeps its count.
    let delay = exchange(&throttle, ip(1), "mine", OK, t0).unwrap();
    assert!(!delay.is_zero());
    exchange(&throttle, ip(1), "victim4", FAILED, t0).unwrap();
    assert_eq!(
        throttle.admit_at(ip(1), t0).err(),
        Some(Refused::AddressFailing)
    );
}

#[test]
fn an_account_under_attack_refuses_only_addresses_that_failed_on_it() {
    let throttle = AuthThrottle::new(limits());
    let t0 = Instant::now();
    // Three attackers, one failure each: the account reaches its limit of 3.
    for a in 1..=3 {
        assert!(exchange(&throttle, ip(a), "alice", FAILED, t0).is_ok());
    }
    for a in 1..=3 {
        assert_eq!(
            exchange(&throttle, ip(a), "alice", OK, t0),
            Err(Refused::AccountFailing),
            "attacker {a}, even with the right password"
        );
        // Their own budget is untouched for other accounts.
        assert!(exchange(&throttle, ip(a), "bob", OK, t0).is_ok());
    }
    // The owner, from an address that never failed on her, is checked (after the account's
    // delay for 3 failures, which any address gets).
    let delay = exchange(&throttle, ip(9), "alice", OK, t0).unwrap();
    assert_eq!(delay, limits().delay * 2);
    // A new attacker gets a first guess, no second.
    assert!(exchange(&throttle, ip(10), "alice", FAILED, t0).is_ok());
    assert_eq!(
        exchange(&throttle, ip(10), "alice", FAILED, t0),
        Err(Refused::AccountFailing)
    );
    // The window closes and everyone is welcome again.
    let later = t0 + limits().window;
    assert!(exchange(&throttle, ip(1), "alice", OK, later).is_ok());
}

#[test]
fn a_success_forgets_the_address_failures_on_that_account() {
    let l = Limits {
        max_failures_per_window: 100,
        ..limits()
    };
    let throttle = AuthThrottle::new(l);
    let t0 = Instant::now();
    exchange(&throttle, ip(1), "alice", FAILED, t0).unwrap();
    exchange(&throttle, ip(1), "alice", OK, t0).unwrap();
    // Others push alice over her limit; ip(1) no longer counts as one of her attackers.
    for a in 2..=4 {
        exchange(&throttle, ip(a), "alice", FAILED, t0).unwrap();
    }
    assert!(exchange(&throttle, ip(1), "alice", OK, t0).is_ok());
    assert_eq!(
        exchange(&throttle, ip(2), "alice", OK, t0),
        Err(Refused::AccountFailing)
    );
}

#[test]
fn uncounted_endings_leave_no_failure() {
    let throttle = AuthThrottle::new(limits());
    let t0 = Instant::now();
    for failure in [
        SaslFailure::Aborted,
        SaslFailure::TemporaryAuthFailure,
        SaslFailure::CredentialsExpired,
    ] {
        for _ in 0..6 {
            exchange(&throttle, ip(1), "alice", Err(failure), t0).unwrap();
        }
    }
    // Failures before an account was named tested no password either.
    for _ in 0..6 {
        let mut attempt = throttle.admit_at(ip(1), t0).unwrap();
        attempt.conclude_at(Verdict::of(&FAILED), t0);
    }
    assert_eq!(throttle.stats().failures, 0);
    assert_eq!(
        exchange(&throttle, ip(1), "alice", OK, t0),
        Ok(Duration::ZERO)
    );
}

#[test]
fn tables_stay_bounded_under_many_addresses_and_accounts() {
    let cap = 500;
    let l = Limits {
        max_failures_per_account: 1,
        ..limits()
    };
    let throttle = AuthThrottle::with_capacity(l, cap);
    let t0 = Instant::now();
    for n in 0..5_000u32 {
        let from = IpAddr::from(n.to_be_bytes());
        exchange(&throttle, from, &format!("user{n}"), FAILED, t0).ok();
    }
    let state = throttle.shared.lock();
    assert!(state.addresses.len() <= cap);
    assert!(state.accounts.len() <= cap);
    assert!(state.pairs.len() <= cap);
}

#[test]
fn finished_attempts_leave_nothing_behind() {
    let throttle = AuthThrottle::new(limits());
    let t0 = Instant::now();
    exchange(&throttle, ip(1), "alice", OK, t0).unwrap();
    let state = throttle.shared.lock();
    assert_eq!(
        (
            state.addresses.len(),
            state.accounts.len(),
            state.pairs.len()
        ),
        (0, 0, 0)
    );
}

#[tokio::test]
async fn verdicts_for_one_account_take_turns_but_nobody_waits_forever() {
    let l = Limits {
        max_delay: Duration::from_millis(20),
        ..limits()
    };
    let throttle = AuthThrottle::new(l);
    let mut first = throttle.admit(ip(1)).unwrap();
    first.account("alice").unwrap();
    first.turn().await;
    assert!(first.turn.is_some());
    // The one turn is taken: the second gives up waiting after max_delay and goes ahead.
    let mut second = throttle.admit(ip(2)).unwrap();
    second.account("alice").unwrap();
    second.turn().await;
    assert!(second.turn.is_none());
    drop(first);
    let mut third = throttle.admit(ip(3)).unwrap();
    third.account("alice").unwrap();
    third.turn().await;
    assert!(third.turn.is_some());
}
