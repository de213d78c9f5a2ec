//! The failed-login throttle over real sockets (issue 17, part 4): parallel guesses from one
//! address must not each get a password check, a throttled address gets the same answer
//! whether its password is right or wrong, and the account's owner, from an address that has
//! not been failing, still logs in.
//!
//! Clients take different loopback addresses (127.0.0.0/8 is all local on Linux) to be
//! different addresses for the server.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use common::*;
use hmac::{Hmac, Mac};
use minidom::Element;
use sha2::Sha256;

const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const SASL2: &str = "urn:xmpp:sasl:2";

/// Failed checks one address gets per window in these tests.
const ADDRESS_LIMIT: u32 = 6;
/// Failed checks on one account (from anywhere) before the addresses that failed on it are
/// refused.
const ACCOUNT_LIMIT: u32 = 3;
/// The first delay, once an address or account has `failures_before_delay` failures.
const DELAY: Duration = Duration::from_millis(300);

async fn server() -> TestServer {
    let t = TestServer::start_with(|c| {
        c.auth.failures_before_delay = 2;
        c.auth.throttle_delay_ms = DELAY.as_millis() as u64;
        c.auth.throttle_max_delay_ms = DELAY.as_millis() as u64;
        c.auth.max_concurrent_per_address = 2;
        c.auth.max_failures_per_window = ADDRESS_LIMIT;
        c.auth.max_failures_per_account = ACCOUNT_LIMIT;
        c.auth.window_secs = 600;
    })
    .await;
    t.add_user("alice").await;
    t.add_user("bob").await;
    t
}

fn ip(last: u8) -> IpAddr {
    [127, 0, 0, last].into()
}

/// A STARTTLS stream from `from`, up to the pre-authentication features.
async fn stream_from(t: &TestServer, from: IpAddr) -> Raw {
    let mut raw = Raw::connect_from(t.c2s(), from)
        .await
        .starttls(t.tls_config())
        .await;
    raw.write(OPEN).await;
    let features = raw.element().await;
    assert_eq!(features.name(), "features");
    raw
}

/// The answer's condition: `success`, or the child of `<failure/>` (in the SASL namespace for
/// RFC 6120 and SASL2 alike).
fn outcome(answer: &Element) -> String {
    if answer.name() == "success" {
        return "success".into();
    }
    assert_eq!(answer.name(), "failure", "{answer:?}");
    answer
        .children()
        .find(|c| c.ns() == SASL)
        .map(|c| c.name().to_string())
        .unwrap_or_else(|| panic!("a SASL condition in {answer:?}"))
}

/// One RFC 6120 PLAIN attempt on a fresh connection from `from`.
async fn plain_from(t: &TestServer, from: IpAddr, user: &str, password: &str) -> String {
    let mut raw = stream_from(t, from).await;
    raw.auth_plain(user, password).await;
    let answer = raw.element().await;
    assert_eq!(answer.ns(), SASL);
    outcome(&answer)
}

/// One SASL2 PLAIN attempt on a fresh connection from `from`.
async fn sasl2_plain_from(t: &TestServer, from: IpAddr, user: &str, password: &str) -> String {
    outcome(
        &sasl2_from(
            t,
            from,
            "PLAIN",
            format!("\0{user}\0{password}").as_bytes(),
            "",
        )
        .await,
    )
}

/// One SASL2 `<authenticate/>` on a fresh connection from `from`; returns the answer.
async fn sasl2_from(
    t: &TestServer,
    from: IpAddr,
    mechanism: &str,
    initial: &[u8],
    inline: &str,
) -> Element {
    let mut raw = stream_from(t, from).await;
    let initial = BASE64.encode(initial);
    raw.write(&format!(
        "<authenticate xmlns='{SASL2}' mechanism='{mechanism}'>\
         <initial-response>{initial}</initial-response>{inline}</authenticate>"
    ))
    .await;
    let answer = raw.element().await;
    assert_eq!(answer.ns(), SASL2);
    answer
}

const FAST: &str = "urn:xmpp:fast:0";
const AGENT: &str = "<user-agent id='phone'><software>corvid-test</software></user-agent>";

/// An HT-SHA-256-NONE login with `token`: `user NUL HMAC(token, "Initiator")`.
async fn token_from(t: &TestServer, from: IpAddr, user: &str, token: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(token).expect("hmac key");
    mac.update(b"Initiator");
    let mut message = format!("{user}\0").into_bytes();
    message.extend(mac.finalize().into_bytes());
    outcome(&sasl2_from(t, from, "HT-SHA-256-NONE", &message, AGENT).await)
}

#[tokio::test]
async fn parallel_guesses_from_one_address_are_refused_and_counted() {
    let t = server().await;
    let attacker = ip(1);
    let guesses = 30;
    let tasks: Vec<_> = (0..guesses)
        .map(|i| {
            let t = &t;
            async move { plain_from(t, attacker, "alice", &format!("guess-{i}")).await }
        })
        .collect();
    let answers = futures::future::join_all(tasks).await;
    let checked = answers.iter().filter(|a| *a == "not-authorized").count();
    let refused = answers
        .iter()
        .filter(|a| *a == "temporary-auth-failure")
        .count();
    assert_eq!(checked + refused, guesses, "{answers:?}");
    assert!(
        checked <= ADDRESS_LIMIT as usize,
        "{checked} of {guesses} parallel guesses were checked: {answers:?}"
    );
    assert!(refused > 0, "{answers:?}");

    // Sequential guesses, spread over accounts so that no account's own limit comes first,
    // run into the same limit: no more checks however long one goes on.
    let mut more_checked = 0;
    for i in 0..ADDRESS_LIMIT {
        let user = format!("user{i}");
        match plain_from(&t, attacker, &user, "guess").await.as_str() {
            "not-authorized" => more_checked += 1,
            "temporary-auth-failure" => {}
            other => panic!("unexpected answer {other}"),
        }
    }
    assert_eq!(checked + more_checked, ADDRESS_LIMIT as usize);
    assert!(
        (t.server.ctx.throttle.stats().failures as usize) == checked + more_checked,
        "the server counts every checked failure"
    );
    assert!(t.server.ctx.throttle.stats().refused as usize >= refused);

    // The right password from the throttled address gets the very same answer as a wrong one,
    // on both SASL flavours: the answer says nothing about the password.
    assert_eq!(
        plain_from(&t, attacker, "alice", PASSWORD).await,
        "temporary-auth-failure"
    );
    assert_eq!(
        sasl2_plain_from(&t, attacker, "alice", PASSWORD).await,
        "temporary-auth-failure"
    );
    assert_eq!(
        sasl2_plain_from(&t, attacker, "alice", "wrong").await,
        "temporary-auth-failure"
    );

    // The owner, elsewhere, is not locked out by someone else's guessing.
    assert_eq!(plain_from(&t, ip(2), "alice", PASSWORD).await, "success");
    assert_eq!(
        sasl2_plain_from(&t, ip(2), "alice", PASSWORD).await,
        "success"
    );
}

#[tokio::test]
async fn an_account_under_attack_refuses_only_the_addresses_that_failed_on_it() {
    let t = server().await;
    let attacker = ip(3);
    for i in 0..ACCOUNT_LIMIT {
        let answer = plain_from(&t, attacker, "alice", &format!("guess-{i}")).await;
        assert_eq!(answer, "not-authorized");
    }
    // alice is under attack: this address, which failed on her, is refused for her (right
    // password or not), while it is below its own limit for other accounts.
    assert_eq!(
        plain_from(&t, attacker, "alice", "guess-x").await,
        "temporary-auth-failure"
    );
    assert_eq!(
        plain_from(&t, attacker, "alice", PASSWORD).await,
        "temporary-auth-failure"
    );
    assert_eq!(plain_from(&t, attacker, "bob", PASSWORD).await, "success");
    // An address that never failed on her gets in.
    assert_eq!(plain_from(&t, ip(4), "alice", PASSWORD).await, "success");
    assert!(t.server.ctx.throttle.stats().refused >= 2);
}

#[tokio::test]
async fn a_throttled_address_waits_before_a_success_too() {
    let t = server().await;
    let from = ip(5);
    for i in 0..2 {
        let answer = plain_from(&t, from, "bob", &format!("typo-{i}")).await;
        assert_eq!(answer, "not-authorized");
    }
    // Two failures reach `failures_before_delay`: the next answer waits, whatever it is.
    let mut raw = stream_from(&t, from).await;
    let started = Instant::now();
    raw.auth_plain("bob", PASSWORD).await;
    let answer = raw.element().await;
    assert_eq!(outcome(&answer), "success");
    assert!(
        started.elapsed() >= DELAY,
        "a success from a throttled address came before the delay"
    );
    assert!(t.server.ctx.throttle.stats().delayed >= 1);
}

#[tokio::test]
async fn token_guesses_are_throttled_like_passwords() {
    let t = server().await;
    let (owner, attacker) = (ip(6), ip(7));
    let inline = format!("{AGENT}<request-token xmlns='{FAST}' mechanism='HT-SHA-256-NONE'/>");
    let password = format!("\0alice\0{PASSWORD}");
    let success = sasl2_from(&t, owner, "PLAIN", password.as_bytes(), &inline).await;
    let token = success
        .get_child("token", FAST)
        .and_then(|el| el.attr("token"))
        .expect("a FAST token")
        .to_string();

    for i in 0..ACCOUNT_LIMIT {
        let guess = format!("guess-{i}");
        assert_eq!(
            token_from(&t, attacker, "alice", guess.as_bytes()).await,
            "not-authorized"
        );
    }
    assert_eq!(t.server.ctx.throttle.stats().failures, ACCOUNT_LIMIT as u64);
    // Even the right token is not checked for the address that has been guessing...
    assert_eq!(
        token_from(&t, attacker, "alice", token.as_bytes()).await,
        "temporary-auth-failure"
    );
    // ...while the phone that owns it logs in with it.
    assert_eq!(
        token_from(&t, owner, "alice", token.as_bytes()).await,
        "success"
    );
}
