//! XEP-0133 Service Administration over real sockets: each command run by an admin and its
//! effect seen by real clients (logins refused or allowed, sessions ended, messages received),
//! and every command refused to a user who is not an admin.

mod common;

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use common::adhoc::{self, *};
use common::xmpp::Session;
use common::*;
use corvid::admin::Stop;
use hmac::{Hmac, Mac};
use minidom::Element;

const SASL2: &str = "urn:xmpp:sasl:2";
const FAST: &str = "urn:xmpp:fast:0";

async fn server() -> TestServer {
    let server = TestServer::start_with(|config| {
        config.admins = vec!["admin@localhost".into()];
    })
    .await;
    for user in ["admin", "alice", "bob"] {
        server.add_user(user).await;
    }
    server
}

/// Runs `name` (XEP-0133) in one go: execute, then complete with `fields` when it asks a form.
async fn admin_run(session: &mut Session, name: &str, fields: &[(&str, &[&str])]) -> Element {
    let node = adhoc::admin(name);
    let first = run(session, &node, None, None, &[]).await;
    if status(&first) == "completed" {
        return first;
    }
    let id = session_id(&first);
    run(session, &node, Some("complete"), Some(&id), fields).await
}

fn completed(answer: &Element) -> &Element {
    assert_eq!(
        status(answer),
        "completed",
        "{}",
        corvid::xml::to_string(answer)
    );
    answer
}

/// A PLAIN login attempt over STARTTLS; returns the SASL outcome element.
async fn plain_attempt(server: &TestServer, user: &str, password: &str) -> Element {
    let mut raw = Raw::connect(server.c2s())
        .await
        .starttls(server.tls_config())
        .await;
    raw.write(OPEN).await;
    let _features = raw.element().await;
    raw.auth_plain(user, password).await;
    raw.element().await
}

fn failure_condition(outcome: &Element) -> String {
    assert_eq!(outcome.name(), "failure", "{outcome:?}");
    outcome
        .children()
        .find(|c| c.ns() == corvid::xml::ns::SASL)
        .map(|c| c.name().to_owned())
        .expect("a condition")
}

/// Logs in and sends initial presence without waiting for its echo: what the server sends
/// on becoming available (offline messages, the message of the day) may come first, and
/// `Session::online` would skip it.
async fn available(server: &TestServer, user: &str, resource: &str) -> Session {
    let mut session = Session::login(server, user, resource).await;
    session.send("<presence/>").await;
    session
}

fn is_headline_with(el: &Element, text: &str) -> bool {
    el.name() == "message"
        && el.attr("type") == Some("headline")
        && el.attr("from") == Some("localhost")
        && body(el) == text
}

#[tokio::test]
async fn every_admin_command_is_forbidden_to_users() {
    let server = server().await;
    let mut alice = Session::login(&server, "alice", "a").await;
    for name in [
        "add-user",
        "delete-user",
        "disable-user",
        "reenable-user",
        "end-user-session",
        "change-user-password",
        "get-user-roster",
        "get-user-lastlogin",
        "user-stats",
        "get-registered-users-num",
        "get-disabled-users-num",
        "get-online-users-num",
        "get-active-users-num",
        "get-idle-users-num",
        "get-registered-users-list",
        "get-disabled-users-list",
        "get-online-users-list",
        "get-active-users-list",
        "get-idle-users-list",
        "announce",
        "set-motd",
        "edit-motd",
        "delete-motd",
        "set-welcome",
        "delete-welcome",
        "edit-admin",
        "restart",
        "shutdown",
    ] {
        let answer = run(&mut alice, &adhoc::admin(name), None, None, &[]).await;
        assert_eq!(error(&answer).0, "forbidden", "{name}");
    }
    let mut admin = Session::login(&server, "admin", "a").await;
    let listed = listed(&mut admin).await;
    // The 28 of XEP-0133, reload, the MUC service's two and XEP-0401's two (users may not
    // invite unless `allow_user_invites`).
    assert_eq!(listed.len(), 33, "{listed:?}");
    for node in [
        corvid::modules::adhoc::LIST_ROOMS,
        corvid::modules::adhoc::DESTROY_ROOM,
        corvid::modules::adhoc::RELOAD,
        corvid::invites::command::INVITE,
        corvid::invites::command::CREATE_ACCOUNT,
    ] {
        assert!(listed.contains(&node.to_owned()));
        let answer = run(&mut alice, node, None, None, &[]).await;
        assert_eq!(error(&answer).0, "forbidden", "{node}");
    }
}

#[tokio::test]
async fn add_user_then_log_in_as_it() {
    let server = server().await;
    let mut admin = Session::login(&server, "admin", "a").await;
    let node = adhoc::admin("add-user");
    let form = run(&mut admin, &node, None, None, &[]).await;
    let vars: Vec<_> = fields(&form).into_iter().map(|(v, _)| v).collect();
    for var in ["FORM_TYPE", "accountjid", "password", "password-verify"] {
        assert!(vars.contains(&var.to_owned()), "{vars:?}");
    }
    assert_eq!(values(&form, "FORM_TYPE"), [ADMIN]);
    let id = session_id(&form);
    // Mismatched passwords: the form comes back with an error note.
    let refused = run(
        &mut admin,
        &node,
        Some("complete"),
        Some(&id),
        &[
            ("accountjid", &["carol@localhost"]),
            ("password", &["one-pass"]),
            ("password-verify", &["other-pass"]),
        ],
    )
    .await;
    assert_eq!(status(&refused), "executing");
    assert!(notes(&refused)
        .iter()
        .any(|(t, text)| t == "error" && text.contains("password-verify")));
    let done = run(
        &mut admin,
        &node,
        Some("complete"),
        Some(&id),
        &[
            ("accountjid", &["carol@localhost"]),
            ("password", &[PASSWORD]),
            ("password-verify", &[PASSWORD]),
        ],
    )
    .await;
    completed(&done);
    let carol = Session::login(&server, "carol", "c").await;
    assert!(carol.jid.starts_with("carol@localhost/"));
    // An existing account is not created twice.
    let again = admin_run(
        &mut admin,
        "add-user",
        &[
            ("accountjid", &["carol@localhost"]),
            ("password", &["x-123456"]),
            ("password-verify", &["x-123456"]),
        ],
    )
    .await;
    assert_eq!(status(&again), "executing");
    assert!(notes(&again).iter().any(|(t, _)| t == "error"));
}

#[tokio::test]
async fn delete_user_ends_its_sessions_and_its_logins() {
    let server = server().await;
    let mut admin = Session::login(&server, "admin", "a").await;
    let mut alice = Session::online(&server, "alice", "a").await;
    let done = admin_run(
        &mut admin,
        "delete-user",
        &[("accountjids", &["alice@localhost"])],
    )
    .await;
    completed(&done);
    assert_eq!(alice.raw.stream_error().await, "not-authorized");
    assert_eq!(
        failure_condition(&plain_attempt(&server, "alice", PASSWORD).await),
        "not-authorized"
    );
    assert!(!server
        .storage()
        .accounts
        .account_exists("alice@localhost")
        .await
        .unwrap());
}

#[tokio::test]
async fn disable_ends_sessions_and_refuses_logins_until_reenabled() {
    let server = server().await;
    let mut admin = Session::login(&server, "admin", "a").await;
    let mut alice = Session::online(&server, "alice", "a").await;
    // A FAST token obtained before the account is disabled.
    let token = fast_token(&server, "bob").await;
    let done = admin_run(
        &mut admin,
        "disable-user",
        &[("accountjids", &["alice@localhost", "bob@localhost"])],
    )
    .await;
    completed(&done);
    assert_eq!(alice.raw.stream_error().await, "not-authorized");
    assert_eq!(
        failure_condition(&plain_attempt(&server, "alice", PASSWORD).await),
        "account-disabled"
    );
    // SASL2 with the password, and FAST with the token, are refused alike.
    let (mut raw, _) = sasl2_connect(&server).await;
    let outcome = sasl2_plain(&mut raw, "alice", "").await;
    assert!(outcome.is("failure", SASL2), "{outcome:?}");
    assert!(outcome.has_child("account-disabled", corvid::xml::ns::SASL));
    let (mut raw, _) = sasl2_connect(&server).await;
    let outcome = token_login(&mut raw, "bob", &token).await;
    assert!(outcome.is("failure", SASL2), "{outcome:?}");
    assert!(outcome.has_child("account-disabled", corvid::xml::ns::SASL));
    // Counted and listed.
    let count = admin_run(&mut admin, "get-disabled-users-num", &[]).await;
    assert_eq!(values(completed(&count), "disabledusersnum"), ["2"]);
    let list = admin_run(&mut admin, "get-disabled-users-list", &[]).await;
    assert_eq!(
        values(completed(&list), "disableduserjids"),
        ["alice@localhost", "bob@localhost"]
    );
    let done = admin_run(
        &mut admin,
        "reenable-user",
        &[("accountjids", &["alice@localhost"])],
    )
    .await;
    completed(&done);
    let alice = Session::login(&server, "alice", "again").await;
    assert!(alice.jid.starts_with("alice@localhost/"));
    let count = admin_run(&mut admin, "get-disabled-users-num", &[]).await;
    assert_eq!(values(completed(&count), "disabledusersnum"), ["1"]);
}

#[tokio::test]
async fn end_user_session_closes_all_or_one() {
    let server = server().await;
    let mut admin = Session::login(&server, "admin", "a").await;
    let mut phone = Session::online(&server, "alice", "phone").await;
    let mut desk = Session::online(&server, "alice", "desk").await;
    let done = admin_run(
        &mut admin,
        "end-user-session",
        &[("accountjids", &["alice@localhost/phone"])],
    )
    .await;
    completed(&done);
    assert_eq!(phone.raw.stream_error().await, "policy-violation");
    // The other session still works.
    desk.roster_get().await;
    let done = admin_run(
        &mut admin,
        "end-user-session",
        &[("accountjids", &["alice@localhost"])],
    )
    .await;
    completed(&done);
    assert_eq!(desk.raw.stream_error().await, "policy-violation");
    // Ending sessions does not disable: alice logs in again.
    Session::login(&server, "alice", "back").await;
}

#[tokio::test]
async fn change_password_refuses_the_old_one() {
    let server = server().await;
    let mut admin = Session::login(&server, "admin", "a").await;
    let done = admin_run(
        &mut admin,
        "change-user-password",
        &[
            ("accountjid", &["alice@localhost"]),
            ("password", &["new-pass-1"]),
        ],
    )
    .await;
    completed(&done);
    assert_eq!(
        failure_condition(&plain_attempt(&server, "alice", PASSWORD).await),
        "not-authorized"
    );
    let outcome = plain_attempt(&server, "alice", "new-pass-1").await;
    assert_eq!(outcome.name(), "success", "{outcome:?}");
    // An unknown account is an error shown in the form.
    let unknown = admin_run(
        &mut admin,
        "change-user-password",
        &[
            ("accountjid", &["nobody@localhost"]),
            ("password", &["x-1234567"]),
        ],
    )
    .await;
    assert!(notes(&unknown).iter().any(|(t, _)| t == "error"));
}

#[tokio::test]
async fn roster_last_login_and_statistics_of_a_user() {
    let server = server().await;
    server.make_mutual("alice", "bob").await;
    let mut admin = Session::login(&server, "admin", "a").await;
    let never = admin_run(
        &mut admin,
        "get-user-lastlogin",
        &[("accountjid", &["bob@localhost"])],
    )
    .await;
    assert!(values(completed(&never), "lastlogin").is_empty());
    let _alice = Session::online(&server, "alice", "laptop").await;
    let roster = admin_run(
        &mut admin,
        "get-user-roster",
        &[("accountjid", &["alice@localhost"])],
    )
    .await;
    let query = command(completed(&roster))
        .get_child("query", "jabber:iq:roster")
        .expect("roster query");
    let contacts: Vec<_> = query
        .children()
        .filter_map(|i| {
            i.attr("jid")
                .map(|j| (j.to_owned(), i.attr("subscription")))
        })
        .map(|(j, s)| (j, s.map(str::to_owned)))
        .collect();
    assert_eq!(
        contacts,
        [("bob@localhost".to_owned(), Some("both".to_owned()))]
    );
    // The login time is written off the login's path: wait for it.
    let mut last = Vec::new();
    for _ in 0..100 {
        let answer = admin_run(
            &mut admin,
            "get-user-lastlogin",
            &[("accountjid", &["alice@localhost"])],
        )
        .await;
        last = values(completed(&answer), "lastlogin");
        if !last.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let at = chrono::DateTime::parse_from_rfc3339(&last[0]).expect("XEP-0082 DateTime");
    let age = chrono::Utc::now().signed_duration_since(at);
    assert!(age < chrono::Duration::seconds(60), "{at}");
    let stats = admin_run(
        &mut admin,
        "user-stats",
        &[("accountjid", &["alice@localhost"])],
    )
    .await;
    completed(&stats);
    assert_eq!(values(&stats, "rostersize"), ["1"]);
    assert_eq!(values(&stats, "onlineresources"), ["laptop"]);
}

#[tokio::test]
async fn counts_and_lists_follow_real_sessions() {
    let server = server().await;
    server.add_user("carol").await;
    let mut admin = Session::login(&server, "admin", "a").await;
    let _alice = Session::online(&server, "alice", "a").await;
    let _bob = Session::login(&server, "bob", "b").await;
    let mut carol = Session::online(&server, "carol", "c").await;
    carol.send("<presence><show>away</show></presence>").await;
    carol.drain().await;
    let list = |answer: &Element, var: &str| values(completed(answer), var);
    let registered = admin_run(&mut admin, "get-registered-users-num", &[]).await;
    assert_eq!(list(&registered, "registeredusersnum"), ["4"]);
    let online = admin_run(&mut admin, "get-online-users-list", &[]).await;
    assert_eq!(
        list(&online, "onlineuserjids"),
        [
            "admin@localhost",
            "alice@localhost",
            "bob@localhost",
            "carol@localhost"
        ]
    );
    let online_num = admin_run(&mut admin, "get-online-users-num", &[]).await;
    assert_eq!(list(&online_num, "onlineusersnum"), ["4"]);
    // alice is available; admin and bob sent no presence, carol is away.
    let active = admin_run(&mut admin, "get-active-users-list", &[]).await;
    assert_eq!(list(&active, "activeuserjids"), ["alice@localhost"]);
    let active_num = admin_run(&mut admin, "get-active-users-num", &[]).await;
    assert_eq!(list(&active_num, "activeusersnum"), ["1"]);
    let idle = admin_run(&mut admin, "get-idle-users-list", &[]).await;
    assert_eq!(
        list(&idle, "idleuserjids"),
        ["admin@localhost", "bob@localhost", "carol@localhost"]
    );
    let idle_num = admin_run(&mut admin, "get-idle-users-num", &[]).await;
    assert_eq!(list(&idle_num, "idleusersnum"), ["3"]);
    // carol comes back: active.
    carol.send("<presence/>").await;
    carol.drain().await;
    let active = admin_run(&mut admin, "get-active-users-list", &[]).await;
    assert_eq!(
        list(&active, "activeuserjids"),
        ["alice@localhost", "carol@localhost"]
    );
    // Lists are bounded by max_items.
    let bounded = admin_run(
        &mut admin,
        "get-registered-users-list",
        &[("max_items", &["2"])],
    )
    .await;
    assert_eq!(
        list(&bounded, "registereduserjids"),
        ["admin@localhost", "alice@localhost"]
    );
    let all = admin_run(
        &mut admin,
        "get-registered-users-list",
        &[("max_items", &["none"])],
    )
    .await;
    assert_eq!(list(&all, "registereduserjids").len(), 4);
}

#[tokio::test]
async fn an_announcement_reaches_every_online_session() {
    let server = server().await;
    let mut admin = Session::login(&server, "admin", "a").await;
    let mut alice = Session::online(&server, "alice", "a").await;
    let mut bob = Session::online(&server, "bob", "b").await;
    let done = admin_run(
        &mut admin,
        "announce",
        &[("announcement", &["Maintenance at noon"])],
    )
    .await;
    completed(&done);
    for client in [&mut alice, &mut bob] {
        client
            .expect(|el| is_headline_with(el, "Maintenance at noon"))
            .await;
    }
}

#[tokio::test]
async fn the_message_of_the_day_arrives_once_per_login() {
    let server = server().await;
    let mut admin = Session::login(&server, "admin", "a").await;
    completed(&admin_run(&mut admin, "set-motd", &[("motd", &["Welcome back"])]).await);
    let mut alice = available(&server, "alice", "a").await;
    alice
        .expect(|el| is_headline_with(el, "Welcome back"))
        .await;
    // Unavailable and available again in the same session: not repeated.
    alice.send("<presence type='unavailable'/>").await;
    alice.send("<presence/>").await;
    let later = alice.drain().await;
    assert!(
        !later.iter().any(|el| is_headline_with(el, "Welcome back")),
        "{later:?}"
    );
    // Edit shows the current text; the next login gets the new one.
    let node = adhoc::admin("edit-motd");
    let form = run(&mut admin, &node, None, None, &[]).await;
    assert_eq!(values(&form, "motd"), ["Welcome back"]);
    let id = session_id(&form);
    completed(
        &run(
            &mut admin,
            &node,
            Some("complete"),
            Some(&id),
            &[("motd", &["Edited"])],
        )
        .await,
    );
    let mut bob = available(&server, "bob", "b").await;
    bob.expect(|el| is_headline_with(el, "Edited")).await;
    completed(&admin_run(&mut admin, "delete-motd", &[]).await);
    let mut again = available(&server, "bob", "c").await;
    let seen = again.drain().await;
    assert!(
        !seen
            .iter()
            .any(|el| el.name() == "message" && el.attr("type") == Some("headline")),
        "{seen:?}"
    );
}

#[tokio::test]
async fn the_welcome_message_goes_to_accounts_created_after_it() {
    let server = server().await;
    let mut admin = Session::login(&server, "admin", "a").await;
    completed(
        &admin_run(
            &mut admin,
            "set-welcome",
            &[("welcome", &["Hello newcomer"])],
        )
        .await,
    );
    completed(
        &admin_run(
            &mut admin,
            "add-user",
            &[
                ("accountjid", &["carol@localhost"]),
                ("password", &[PASSWORD]),
                ("password-verify", &[PASSWORD]),
            ],
        )
        .await,
    );
    let mut carol = available(&server, "carol", "c").await;
    let welcome = carol
        .expect(|el| el.name() == "message" && el.attr("from") == Some("localhost"))
        .await;
    assert_eq!(body(&welcome), "Hello newcomer");
    // Accounts that existed before get nothing.
    let mut alice = available(&server, "alice", "a").await;
    let seen = alice.drain().await;
    assert!(!seen
        .iter()
        .any(|el| el.name() == "message" && body(el) == "Hello newcomer"));
    completed(&admin_run(&mut admin, "delete-welcome", &[]).await);
    completed(
        &admin_run(
            &mut admin,
            "add-user",
            &[
                ("accountjid", &["dave@localhost"]),
                ("password", &[PASSWORD]),
                ("password-verify", &[PASSWORD]),
            ],
        )
        .await,
    );
    let mut dave = available(&server, "dave", "d").await;
    let seen = dave.drain().await;
    assert!(!seen
        .iter()
        .any(|el| el.name() == "message" && body(el) == "Hello newcomer"));
}

#[tokio::test]
async fn edit_admin_list_applies_at_once_and_is_stored() {
    let server = server().await;
    let mut admin = Session::login(&server, "admin", "a").await;
    let mut alice = Session::login(&server, "alice", "a").await;
    let node = adhoc::admin("edit-admin");
    let form = run(&mut admin, &node, None, None, &[]).await;
    assert_eq!(values(&form, "adminjids"), ["admin@localhost"]);
    let id = session_id(&form);
    completed(
        &run(
            &mut admin,
            &node,
            Some("complete"),
            Some(&id),
            &[("adminjids", &["admin@localhost", "alice@localhost"])],
        )
        .await,
    );
    assert!(listed(&mut alice).await.contains(&adhoc::admin("add-user")));
    let count = admin_run(&mut alice, "get-registered-users-num", &[]).await;
    assert_eq!(values(completed(&count), "registeredusersnum"), ["3"]);
    // Server-wide commands stay with server-wide admins.
    let stop = run(&mut alice, &adhoc::admin("shutdown"), None, None, &[]).await;
    assert_eq!(error(&stop).0, "forbidden");
    // Removing her (and the server-wide admin, who stays one whatever the list says).
    completed(&admin_run(&mut admin, "edit-admin", &[("adminjids", &[])]).await);
    let refused = run(&mut alice, &adhoc::admin("add-user"), None, None, &[]).await;
    assert_eq!(error(&refused).0, "forbidden");
    assert!(listed(&mut admin).await.contains(&adhoc::admin("add-user")));
    let stored = server
        .storage()
        .admin
        .setting("admins:localhost")
        .await
        .unwrap();
    assert_eq!(stored.as_deref(), Some(""));
}

#[tokio::test]
async fn shutdown_announces_then_runs_the_ordered_shutdown() {
    let server = server().await;
    let mut admin = Session::login(&server, "admin", "a").await;
    let mut alice = Session::online(&server, "alice", "a").await;
    let done = admin_run(
        &mut admin,
        "shutdown",
        &[("delay", &["0"]), ("announcement", &["Going down"])],
    )
    .await;
    completed(&done);
    alice.expect(|el| is_headline_with(el, "Going down")).await;
    let stop = tokio::time::timeout(WAIT, server.server.stop_requested())
        .await
        .expect("stop requested");
    assert_eq!(stop, Stop::Shutdown);
    let TestServer {
        server: running,
        dir: _dir,
        ..
    } = server;
    running.shutdown().await;
    assert_eq!(alice.raw.stream_error().await, "system-shutdown");
}

#[tokio::test]
async fn restart_waits_for_its_delay() {
    let server = server().await;
    let mut admin = Session::login(&server, "admin", "a").await;
    let done = admin_run(&mut admin, "restart", &[("delay", &["30"])]).await;
    completed(&done);
    // Not before the delay.
    let early =
        tokio::time::timeout(Duration::from_millis(300), server.server.stop_requested()).await;
    assert!(early.is_err());
    // An invalid delay is shown in the form.
    let bad = admin_run(&mut admin, "restart", &[("delay", &["soon"])]).await;
    assert!(notes(&bad)
        .iter()
        .any(|(t, text)| t == "error" && text.contains("delay")));
    let now = admin_run(&mut admin, "restart", &[("delay", &["0"])]).await;
    completed(&now);
    let stop = tokio::time::timeout(WAIT, server.server.stop_requested())
        .await
        .expect("stop requested");
    assert_eq!(stop, Stop::Restart);
}

// SASL2 and FAST, written by hand (no client library speaks them).

async fn sasl2_connect(server: &TestServer) -> (Raw, Element) {
    let mut raw = Raw::connect(server.c2s())
        .await
        .starttls(server.tls_config())
        .await;
    raw.write(OPEN).await;
    let features = raw.element().await;
    (raw, features)
}

async fn sasl2_plain(raw: &mut Raw, user: &str, inline: &str) -> Element {
    raw.write(&format!(
        "<authenticate xmlns='{SASL2}' mechanism='PLAIN'>\
         <initial-response>{}</initial-response>{inline}</authenticate>",
        BASE64.encode(format!("\0{user}\0{PASSWORD}"))
    ))
    .await;
    raw.element().await
}

/// A FAST token for `user`, from a SASL2 login that asks for one.
async fn fast_token(server: &TestServer, user: &str) -> String {
    let (mut raw, _) = sasl2_connect(server).await;
    let inline = format!(
        "<user-agent id='d0d2b0c4-7e52-4a4d-9f2a-2f1a1f2e3a4b'><software>t</software></user-agent>\
         <request-token xmlns='{FAST}' mechanism='HT-SHA-256-NONE'/>"
    );
    let success = sasl2_plain(&mut raw, user, &inline).await;
    assert!(success.is("success", SASL2), "{success:?}");
    success
        .get_child("token", FAST)
        .and_then(|t| t.attr("token"))
        .expect("token")
        .to_owned()
}

async fn token_login(raw: &mut Raw, user: &str, token: &str) -> Element {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(token.as_bytes()).expect("key");
    mac.update(b"Initiator");
    let mut message = format!("{user}\0").into_bytes();
    message.extend(mac.finalize().into_bytes());
    raw.write(&format!(
        "<authenticate xmlns='{SASL2}' mechanism='HT-SHA-256-NONE'>\
         <initial-response>{}</initial-response>\
         <user-agent id='d0d2b0c4-7e52-4a4d-9f2a-2f1a1f2e3a4b'><software>t</software></user-agent>\
         <fast xmlns='{FAST}' count='1'/></authenticate>",
        BASE64.encode(message)
    ))
    .await;
    raw.element().await
}

#[tokio::test]
async fn the_welcome_message_reaches_an_account_made_with_corvid_user_add() {
    let server = server().await;
    let mut admin = Session::login(&server, "admin", "a").await;
    completed(
        &admin_run(
            &mut admin,
            "set-welcome",
            &[("welcome", &["Hi from the CLI"])],
        )
        .await,
    );
    let config = server.dir.path().join("cli.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\nurl = 'sqlite://{}'\n",
            server.db_path().display()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_corvid"))
            .args(["user", "add", "erin", "--password-stdin", "-c", &config])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("corvid runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{PASSWORD}\n").as_bytes())
            .expect("password");
        child.wait_with_output().expect("corvid exits")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut erin = available(&server, "erin", "e").await;
    let welcome = erin
        .expect(|el| el.name() == "message" && el.attr("from") == Some("localhost"))
        .await;
    assert_eq!(body(&welcome), "Hi from the CLI");
}

/// `[hosts."b.example"] admins` administer b.example's accounts only; server-wide admins
/// administer every hosted domain.
#[tokio::test]
async fn a_domain_admin_administers_only_that_domain() {
    const B: &str = "b.example";
    let server = TestServer::start_with(|config| {
        config.admins = vec!["admin@localhost".into()];
        let host = corvid::config::HostConfig {
            admins: vec![format!("boss@{B}")],
            ..Default::default()
        };
        config.hosts.insert(B.into(), host);
    })
    .await;
    server.add_user("admin").await;
    server.add_user("alice").await;
    server.add_user(&format!("boss@{B}")).await;
    let mut boss = Session::login_on(&server, B, "boss", "r").await;
    let to_b = |xml: String| xml.replacen("to='localhost'", &format!("to='{B}'"), 1);
    let items = |to: &str| {
        format!(
            "<iq type='get' to='{to}'><query xmlns='http://jabber.org/protocol/disco#items' node='{COMMANDS}'/></iq>"
        )
    };
    let nodes = |answer: &Element| -> Vec<String> {
        answer
            .get_child("query", "http://jabber.org/protocol/disco#items")
            .expect("items")
            .children()
            .filter_map(|i| i.attr("node").map(str::to_owned))
            .collect()
    };
    let at_b = boss.iq(&items(B)).await;
    assert!(nodes(&at_b).contains(&adhoc::admin("add-user")));
    assert!(!nodes(&at_b).contains(&adhoc::admin("shutdown")));
    let at_main = boss.iq(&items("localhost")).await;
    assert!(nodes(&at_main).is_empty(), "{at_main:?}");
    let node = adhoc::admin("add-user");
    let first = boss.iq(&to_b(request(&node, None, None, &[]))).await;
    let id = session_id(&first);
    let foreign = boss
        .iq(&to_b(request(
            &node,
            Some("complete"),
            Some(&id),
            &[
                ("accountjid", &["carol@localhost"]),
                ("password", &[PASSWORD]),
                ("password-verify", &[PASSWORD]),
            ],
        )))
        .await;
    assert!(notes(&foreign)
        .iter()
        .any(|(t, text)| t == "error" && text.contains("localhost")));
    let own = boss
        .iq(&to_b(request(
            &node,
            Some("complete"),
            Some(&id),
            &[
                ("accountjid", &["carol@b.example"]),
                ("password", &[PASSWORD]),
                ("password-verify", &[PASSWORD]),
            ],
        )))
        .await;
    completed(&own);
    let list_node = adhoc::admin("get-registered-users-list");
    let first = boss.iq(&to_b(request(&list_node, None, None, &[]))).await;
    let id = session_id(&first);
    let list = boss
        .iq(&to_b(request(&list_node, Some("complete"), Some(&id), &[])))
        .await;
    assert_eq!(
        values(completed(&list), "registereduserjids"),
        ["boss@b.example", "carol@b.example"]
    );
    // The server-wide admin sees every domain.
    let mut admin = Session::login(&server, "admin", "a").await;
    let all = admin_run(&mut admin, "get-registered-users-list", &[]).await;
    assert_eq!(
        values(completed(&all), "registereduserjids"),
        [
            "admin@localhost",
            "alice@localhost",
            "boss@b.example",
            "carol@b.example"
        ]
    );
}

/// Beyond XEP-0133: the s2s links a server has open, listed for its server-wide admins.
#[tokio::test]
async fn s2s_connections_are_listed_for_server_admins() {
    use common::federation::{Federation, Trust, A, B};
    let f = Federation::start_with(
        Trust::SelfSigned,
        |c| c.admins = vec![format!("admin@{A}")],
        |_| {},
    )
    .await;
    for user in ["admin", "alice"] {
        f.a.add_user(&format!("{user}@{A}")).await;
    }
    f.b.add_user(&format!("bob@{B}")).await;
    let mut alice = Session::online_on(&f.a, A, "alice", "pc").await;
    let mut bob = Session::online_on(&f.b, B, "bob", "phone").await;
    alice
        .send("<message to='bob@b.test' type='chat'><body>over s2s</body></message>")
        .await;
    bob.expect(|el| el.name() == "message" && body(el) == "over s2s")
        .await;
    let mut admin = Session::login_on(&f.a, A, "admin", "a").await;
    let to_a = |xml: String| xml.replacen("to='localhost'", &format!("to='{A}'"), 1);
    let node = corvid::modules::adhoc::LIST_S2S;
    let listed = admin.iq(&to_a(request(node, None, None, &[]))).await;
    completed(&listed);
    assert!(
        values(&listed, "outgoing").contains(&format!("{A} -> {B}")),
        "{listed:?}"
    );
    assert_eq!(values(&listed, "outgoingnum"), ["1"]);
    // Not for users.
    let refused = alice.iq(&to_a(request(node, None, None, &[]))).await;
    assert_eq!(error(&refused).0, "forbidden");
}

/// Beyond XEP-0133: rooms listed, and destroyed with their occupants told why.
#[tokio::test]
async fn rooms_are_listed_and_destroyed_by_admins() {
    let server = server().await;
    let mut admin = Session::login(&server, "admin", "a").await;
    let mut alice = Session::online(&server, "alice", "a").await;
    let room = "lounge@conference.localhost";
    alice
        .send(&format!(
            "<presence to='{room}/alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
        ))
        .await;
    alice
        .expect(|el| el.name() == "message" && el.has_child("subject", "jabber:client"))
        .await;
    let answer = alice
        .iq(&format!(
            "<iq to='{room}' type='set'><query xmlns='http://jabber.org/protocol/muc#owner'>\
             <x xmlns='jabber:x:data' type='submit'/></query></iq>"
        ))
        .await;
    assert_eq!(answer.attr("type"), Some("result"));
    let listed = run(
        &mut admin,
        corvid::modules::adhoc::LIST_ROOMS,
        None,
        None,
        &[],
    )
    .await;
    completed(&listed);
    assert_eq!(values(&listed, "roomjids"), [room]);
    assert_eq!(values(&listed, "occupants"), [format!("{room} (1)")]);
    let node = corvid::modules::adhoc::DESTROY_ROOM;
    let id = session_id(&run(&mut admin, node, None, None, &[]).await);
    let done = run(
        &mut admin,
        node,
        Some("complete"),
        Some(&id),
        &[
            ("roomjids", &[room, "nowhere@conference.localhost"]),
            ("reason", &["closing"]),
        ],
    )
    .await;
    completed(&done);
    let notes = notes(&done);
    assert!(
        notes
            .iter()
            .any(|(t, text)| t == "info" && text.contains(room)),
        "{notes:?}"
    );
    assert!(notes.iter().any(|(t, _)| t == "warn"), "{notes:?}");
    let gone = alice
        .expect(|el| {
            el.name() == "presence"
                && el.attr("type") == Some("unavailable")
                && el.attr("from") == Some("lounge@conference.localhost/alice")
        })
        .await;
    let destroy = gone
        .get_child("x", "http://jabber.org/protocol/muc#user")
        .and_then(|x| x.get_child("destroy", "http://jabber.org/protocol/muc#user"))
        .expect("destroy");
    assert_eq!(
        destroy
            .get_child("reason", "http://jabber.org/protocol/muc#user")
            .map(Element::text)
            .as_deref(),
        Some("closing")
    );
    let listed = run(
        &mut admin,
        corvid::modules::adhoc::LIST_ROOMS,
        None,
        None,
        &[],
    )
    .await;
    assert!(values(completed(&listed), "roomjids").is_empty());
}

/// Admins must be bare JIDs in normal form, and a domain's admins accounts of that domain:
/// `corvid check-config` says which entry is wrong.
#[test]
fn misconfigured_admins_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corvid.toml");
    for (toml, named) in [
        ("admins = ['localhost']\n", "localhost"),
        ("admins = ['Alice@localhost']\n", "Alice@localhost"),
        ("admins = ['a@localhost/res']\n", "a@localhost/res"),
        (
            "[hosts.'b.example']\nadmins = ['boss@localhost']\n",
            "boss@localhost",
        ),
    ] {
        std::fs::write(&path, toml).unwrap();
        let error = corvid::config::Config::load(&path).expect_err(toml);
        assert!(error.to_string().contains(named), "{toml}: {error}");
    }
    std::fs::write(
        &path,
        "admins = ['admin@localhost']\n[hosts.'b.example']\nadmins = ['boss@b.example']\n",
    )
    .unwrap();
    let config = corvid::config::Config::load(&path).expect("valid admins");
    assert_eq!(config.admins, ["admin@localhost"]);
}

/// The admins named in the configuration follow a reload (SIGHUP, `corvid ctl reload`): an
/// operator who adds one to `corvid.toml` does not have to restart the server, and the
/// registration mode, which does need one, is reported as such.
#[tokio::test]
async fn admins_in_the_configuration_follow_a_reload() {
    let server = server().await;
    let mut bob = Session::login(&server, "bob", "b").await;
    let node = adhoc::admin("get-online-users-num");
    let answer = run(&mut bob, &node, None, None, &[]).await;
    assert_eq!(error(&answer).0, "forbidden");

    let config = server.config().clone();
    let file = server.dir.path().join("corvid.toml");
    std::fs::write(
        &file,
        format!(
            "domain = 'localhost'\nadmins = ['admin@localhost', 'bob@localhost']\n\
             registration = 'open'\n[storage]\nurl = '{url}'\n[tls]\ncert = '{cert}'\n\
             key = '{key}'\n",
            url = config.storage.url,
            cert = config.tls.cert.display(),
            key = config.tls.key.display(),
        ),
    )
    .unwrap();
    server.server.set_config_path(&file);
    let report = server.server.reload().await.expect("reload");
    assert!(
        report.needs_restart.iter().any(|s| s == "registration"),
        "{report:?}"
    );
    assert!(
        !report.needs_restart.iter().any(|s| s == "admins"),
        "{report:?}"
    );
    let answer = admin_run(&mut bob, "get-online-users-num", &[]).await;
    assert_eq!(status(&answer), "completed");
    assert!(listed(&mut bob).await.contains(&adhoc::admin("announce")));
}
