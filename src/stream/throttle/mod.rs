//! Makes password (and token) guessing slow and bounded, however many connections it comes
//! over, without letting the guesser lock the account's owner out.
//!
//! Every SASL exchange (RFC 6120 and SASL2, password and FAST token alike) is an [`Attempt`],
//! counted against the address it comes from (a [`Source`]: an IPv4 address or an IPv6 /64)
//! and, once the mechanism has named one, against the account:
//!
//! * **Per address, concurrency.** At most `max_concurrent_per_address` exchanges run at once;
//!   one more is answered `temporary-auth-failure` straight away, without looking at its
//!   credentials. The slot is held by the [`Attempt`] and given back when it is dropped, so a
//!   connection that vanishes mid-exchange frees it too.
//! * **Per address, failures per window.** Failed checks are counted in a window of
//!   `window_secs` that opens with the first failure. An address with no budget left (its
//!   failures plus its exchanges in flight reach `max_failures_per_window`) is refused like
//!   above until the window closes: parallel exchanges cannot overshoot the budget. The
//!   failure that uses the budget up restarts the window, so the refusal lasts a whole
//!   `window_secs` however late in the window it came (ejabberd's ban time). A success
//!   does not give the budget back, or an attacker with an account of his own could refill it
//!   between guesses.
//! * **Delay, the same for every answer.** From `failures_before_delay` failures on (of the
//!   address, or of the account), every verdict — success or failure — waits
//!   `throttle_delay_ms`, doubling with each further failure up to `throttle_max_delay_ms`.
//!   The wait is fixed by what was counted *before* the verdict, so the time to answer says
//!   nothing about the password.
//! * **Per account, serialised.** Verdicts for one account are given at most
//!   `max_concurrent_per_account` at a time (the delay included), so many addresses guessing
//!   one account in parallel are answered one after another. Nobody waits more than
//!   `throttle_max_delay_ms` for this turn, though: past that the exchange goes ahead without
//!   it, so a crowd of attackers queueing on an account can slow its owner's login, never
//!   stop it.
//! * **Per account, refusal only for its attackers.** Once an account has
//!   `max_failures_per_account` failures in its window (restarted then, like an address's),
//!   an address that itself failed on it in its window is refused for that account without a
//!   check. Addresses that did not fail on it
//!   — the owner at home, on the phone network — still get checked (after the account's
//!   delay): an attacker cannot lock an account from afar, and an attacking address gets at
//!   most its first guesses on an account under attack. A success on an account forgets that
//!   address's failures on it.
//!
//! Refusals and failures are counted in [`ThrottleStats`]. The three tables (addresses,
//! accounts, address-account pairs) stay below [`TRACKED_KEYS`] entries each: what remembers
//! nothing is dropped first, then what remembers least. One mutex guards them all, never
//! across an await, so a decision about an address and an account is made on one consistent
//! state.

mod source;
mod table;
mod window;

pub use source::Source;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info};

use crate::config::AuthConfig;
use crate::sasl::SaslFailure;
use table::{Table, Tracked};
use window::{delay_for, FailureWindow};

/// Entries kept per table before the idle and least remembered are dropped.
pub const TRACKED_KEYS: usize = 10_000;

/// The `[auth]` settings the throttle runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub failures_before_delay: u32,
    pub delay: Duration,
    pub max_delay: Duration,
    pub max_concurrent_per_address: u32,
    pub max_failures_per_window: u32,
    pub window: Duration,
    pub max_concurrent_per_account: u32,
    pub max_failures_per_account: u32,
}

impl From<&AuthConfig> for Limits {
    fn from(auth: &AuthConfig) -> Self {
        Limits {
            failures_before_delay: auth.failures_before_delay,
            delay: Duration::from_millis(auth.throttle_delay_ms),
            max_delay: Duration::from_millis(auth.throttle_max_delay_ms),
            max_concurrent_per_address: auth.max_concurrent_per_address,
            max_failures_per_window: auth.max_failures_per_window,
            window: Duration::from_secs(auth.window_secs),
            max_concurrent_per_account: auth.max_concurrent_per_account,
            max_failures_per_account: auth.max_failures_per_account,
        }
    }
}

/// Why an attempt was answered `temporary-auth-failure` without a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("this address has as many logins in progress as its budget allows")]
    AddressBusy,
    #[error("this address failed too often")]
    AddressFailing,
    #[error("this account is under attack and this address failed on it")]
    AccountFailing,
}

impl From<Refused> for SaslFailure {
    fn from(_: Refused) -> Self {
        // RFC 6120 §6.5.9: the client may try again later, which is exactly the case.
        SaslFailure::TemporaryAuthFailure
    }
}

/// What the throttle has done since the server started.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleStats {
    /// Exchanges admitted.
    pub attempts: u64,
    /// Failed checks counted against an address and an account.
    pub failures: u64,
    /// Attempts answered `temporary-auth-failure` without a check.
    pub refused: u64,
    /// Verdicts held back by a delay.
    pub delayed: u64,
}

#[derive(Default)]
struct Counters {
    attempts: AtomicU64,
    failures: AtomicU64,
    refused: AtomicU64,
    delayed: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

#[derive(Default)]
struct AddressEntry {
    in_flight: u32,
    failures: FailureWindow,
}

#[derive(Default)]
struct AccountEntry {
    in_flight: u32,
    failures: FailureWindow,
    /// Verdicts being given for this account; made on first use.
    gate: Option<Arc<Semaphore>>,
}

/// Failures of one address on one account.
#[derive(Default)]
struct PairEntry {
    failures: FailureWindow,
}

impl Tracked for AddressEntry {
    fn busy(&self) -> bool {
        self.in_flight > 0
    }
    fn weight(&self, now: Instant, window: Duration) -> u32 {
        self.failures.count(now, window)
    }
}

impl Tracked for AccountEntry {
    fn busy(&self) -> bool {
        self.in_flight > 0
    }
    fn weight(&self, now: Instant, window: Duration) -> u32 {
        self.failures.count(now, window)
    }
}

impl Tracked for PairEntry {
    fn busy(&self) -> bool {
        false
    }
    fn weight(&self, now: Instant, window: Duration) -> u32 {
        self.failures.count(now, window)
    }
}

struct State {
    addresses: Table<Source, AddressEntry>,
    accounts: Table<String, AccountEntry>,
    pairs: Table<(String, Source), PairEntry>,
}

struct Shared {
    limits: Limits,
    state: Mutex<State>,
    counters: Counters,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the tables consistent, so a panic elsewhere poisons nothing.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub struct AuthThrottle {
    shared: Arc<Shared>,
}

impl AuthThrottle {
    pub fn new(limits: Limits) -> Self {
        Self::with_capacity(limits, TRACKED_KEYS)
    }

    fn with_capacity(limits: Limits, cap: usize) -> Self {
        AuthThrottle {
            shared: Arc::new(Shared {
                limits,
                state: Mutex::new(State {
                    addresses: Table::new(cap),
                    accounts: Table::new(cap),
                    pairs: Table::new(cap),
                }),
                counters: Counters::default(),
            }),
        }
    }

    /// Starts an exchange from `ip`, before anything the client sent is looked at; a refusal
    /// is to be answered `temporary-auth-failure` at once.
    pub fn admit(&self, ip: IpAddr) -> Result<Attempt, Refused> {
        self.admit_at(ip, Instant::now())
    }

    fn admit_at(&self, ip: IpAddr, now: Instant) -> Result<Attempt, Refused> {
        let source = Source::of(ip);
        let limits = &self.shared.limits;
        let verdict = {
            let mut state = self.shared.lock();
            let entry = state.addresses.entry(source, now, limits.window);
            let failures = entry.failures.count(now, limits.window);
            if failures >= limits.max_failures_per_window {
                Err(Refused::AddressFailing)
            } else if entry.in_flight >= limits.max_concurrent_per_address
                // Each exchange in flight may still fail: it holds a share of the budget.
                || failures.saturating_add(entry.in_flight) >= limits.max_failures_per_window
            {
                Err(Refused::AddressBusy)
            } else {
                entry.in_flight += 1;
                Ok(())
            }
        };
        match verdict {
            Ok(()) => {
                bump(&self.shared.counters.attempts);
                Ok(Attempt {
                    shared: self.shared.clone(),
                    source,
                    account: None,
                    gate: None,
                    turn: None,
                    refused: false,
                })
            }
            Err(refused) => {
                bump(&self.shared.counters.refused);
                debug!(%source, %refused, "login refused");
                Err(refused)
            }
        }
    }

    pub fn stats(&self) -> ThrottleStats {
        let c = &self.shared.counters;
        ThrottleStats {
            attempts: c.attempts.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            delayed: c.delayed.load(Ordering::Relaxed),
        }
    }
}

/// One SASL exchange in progress: holds its address's concurrency slot (and, once the account
/// is known, its place in the account's count) until dropped, however the exchange ends.
pub struct Attempt {
    shared: Arc<Shared>,
    source: Source,
    /// The (normalised) username the mechanism named, once it did.
    account: Option<String>,
    gate: Option<Arc<Semaphore>>,
    /// This attempt's turn at giving a verdict for its account.
    turn: Option<OwnedSemaphorePermit>,
    refused: bool,
}

/// How an exchange ended, as far as counting goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Success,
    /// The credentials were checked and were wrong.
    Failure,
    /// Nothing was learnt about the credentials: the client aborted, the server could not
    /// check, the token was right but expired, or the attempt was refused.
    Uncounted,
}

impl Verdict {
    fn of<T>(result: &Result<T, SaslFailure>) -> Verdict {
        match result {
            Ok(_) => Verdict::Success,
            Err(
                SaslFailure::Aborted
                | SaslFailure::TemporaryAuthFailure
                | SaslFailure::CredentialsExpired,
            ) => Verdict::Uncounted,
            Err(_) => Verdict::Failure,
        }
    }
}

impl Attempt {
    /// The mechanism names the account (a normalised username, whether it exists or not). A
    /// refusal is to be answered `temporary-auth-failure` without checking anything.
    pub fn account(&mut self, username: &str) -> Result<(), Refused> {
        self.account_at(username, Instant::now())
    }

    fn account_at(&mut self, username: &str, now: Instant) -> Result<(), Refused> {
        if self.account.is_some() {
            // One account per exchange; no mechanism names a second.
            return Ok(());
        }
        let limits = &self.shared.limits;
        let window = limits.window;
        let gate = {
            let mut state = self.shared.lock();
            let pair = (username.to_string(), self.source);
            let failed_here = state
                .pairs
                .get(&pair)
                .is_some_and(|p| p.failures.count(now, window) > 0);
            let entry = state.accounts.entry(pair.0, now, window);
            if failed_here && entry.failures.count(now, window) >= limits.max_failures_per_account {
                None
            } else {
                entry.in_flight += 1;
                let permits = limits.max_concurrent_per_account as usize;
                Some(
                    entry
                        .gate
                        .get_or_insert_with(|| Arc::new(Semaphore::new(permits)))
                        .clone(),
                )
            }
        };
        match gate {
            Some(gate) => {
                self.account = Some(username.to_string());
                self.gate = Some(gate);
                Ok(())
            }
            None => {
                self.refused = true;
                bump(&self.shared.counters.refused);
                let refused = Refused::AccountFailing;
                debug!(source = %self.source, username, %refused, "login refused");
                Err(refused)
            }
        }
    }

    /// Waits for this account's turn to be given a verdict, just before the credentials are
    /// checked: not while the client is still to answer a challenge, which it could take its
    /// time over. The turn is kept until the attempt is dropped, after the answer went out.
    pub async fn turn(&mut self) {
        let Some(gate) = self.gate.clone() else {
            return;
        };
        if self.turn.is_some() {
            return;
        }
        let patience = self.shared.limits.max_delay;
        if let Ok(Ok(permit)) = tokio::time::timeout(patience, gate.acquire_owned()).await {
            self.turn = Some(permit);
        }
    }

    /// Counts how the exchange ended; returns how long to wait before sending the answer.
    pub fn conclude<T>(&mut self, result: &Result<T, SaslFailure>) -> Duration {
        self.conclude_at(Verdict::of(result), Instant::now())
    }

    fn conclude_at(&mut self, verdict: Verdict, now: Instant) -> Duration {
        if self.refused {
            // Nothing was checked, so there is nothing for timing to reveal.
            return Duration::ZERO;
        }
        let limits = &self.shared.limits;
        let window = limits.window;
        let counters = &self.shared.counters;
        let mut state = self.shared.lock();
        let address_failures = state
            .addresses
            .get(&self.source)
            .map_or(0, |e| e.failures.count(now, window));
        let account_failures = self
            .account
            .as_ref()
            .and_then(|a| state.accounts.get(a))
            .map_or(0, |e| e.failures.count(now, window));
        // Read before this verdict is counted: a success and a failure wait alike.
        let delay = delay_for(
            address_failures.max(account_failures),
            limits.failures_before_delay,
            limits.delay,
            limits.max_delay,
        );
        // Whether this failure used up a budget: worth a line in the log, once per window.
        let (mut address_full, mut account_full) = (false, false);
        if let Some(account) = &self.account {
            let pair = (account.clone(), self.source);
            match verdict {
                Verdict::Failure => {
                    // Both entries are busy with this attempt, so they exist.
                    if let Some(e) = state.addresses.get_mut(&self.source) {
                        e.failures.add(now, window);
                        address_full =
                            e.failures.count(now, window) == limits.max_failures_per_window;
                        if address_full {
                            e.failures.restart(now);
                        }
                    }
                    if let Some(e) = state.accounts.get_mut(account) {
                        e.failures.add(now, window);
                        account_full =
                            e.failures.count(now, window) == limits.max_failures_per_account;
                        if account_full {
                            e.failures.restart(now);
                        }
                    }
                    state
                        .pairs
                        .entry(pair, now, window)
                        .failures
                        .add(now, window);
                    bump(&counters.failures);
                }
                Verdict::Success => {
                    if let Some(p) = state.pairs.get_mut(&pair) {
                        p.failures.clear();
                    }
                    state.pairs.forget_if_idle(&pair, now, window);
                }
                Verdict::Uncounted => {}
            }
        }
        drop(state);
        if address_full {
            info!(source = %self.source, "failed logins: address refused until its window closes");
        }
        if let (true, Some(username)) = (account_full, &self.account) {
            info!(
                username,
                "failed logins: account under attack, its failing addresses refused"
            );
        }
        if !delay.is_zero() {
            bump(&counters.delayed);
        }
        delay
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        let now = Instant::now();
        let window = self.shared.limits.window;
        let mut state = self.shared.lock();
        if let Some(e) = state.addresses.get_mut(&self.source) {
            e.in_flight = e.in_flight.saturating_sub(1);
        }
        state.addresses.forget_if_idle(&self.source, now, window);
        if let Some(account) = &self.account {
            if let Some(e) = state.accounts.get_mut(account) {
                e.in_flight = e.in_flight.saturating_sub(1);
            }
            state.accounts.forget_if_idle(account, now, window);
        }
    }
}

#[cfg(test)]
mod tests;
