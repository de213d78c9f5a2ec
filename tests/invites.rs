//! Invites over real sockets: registration with an invite token in "invite" mode (XEP-0401,
//! XEP-0445), single use and expiry, roster pre-approval between the new account and the
//! inviter (XEP-0379), a preauth token on an existing account's subscription request, and the
//! invite web page with a plain HTTP client.

mod common;

use std::time::Duration;

use common::register::*;
use common::*;
use corvid::config::RegistrationMode;
use corvid::invites::{create_invite, Invite, InviteRequest};
use corvid::storage::Subscription;
use minidom::Element;

fn invite_only(config: &mut corvid::config::Config) {
    config.registration = RegistrationMode::Invite;
}

async fn invite(server: &TestServer, inviter: Option<&str>, roster: bool) -> Invite {
    invite_with(server, inviter, roster, None).await
}

async fn invite_with(
    server: &TestServer,
    inviter: Option<&str>,
    roster: bool,
    expiry: Option<Duration>,
) -> Invite {
    let request = InviteRequest {
        domain: DOMAIN.into(),
        inviter: inviter.map(|i| jid::BareJid::new(&account(i)).expect("jid")),
        username: None,
        roster,
        expiry,
    };
    create_invite(server.storage(), server.config(), request)
        .await
        .expect("invite")
}

#[tokio::test]
async fn invite_mode_registers_only_with_a_valid_token() {
    let server = TestServer::start_with(invite_only).await;
    let (mut raw, features) = encrypted(server.c2s(), server.tls_config(), None).await;
    assert!(features.has_child("register", REGISTER_FEATURE));
    assert!(features.has_child("register", IBR_TOKEN));
    let refused = register(&mut raw, "juliet", PASSWORD).await;
    assert_eq!(error_condition(&refused).as_deref(), Some("not-allowed"));
    let unknown = preauth(&mut raw, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").await;
    assert_eq!(error_condition(&unknown).as_deref(), Some("item-not-found"));

    let invite = invite(&server, None, false).await;
    assert!(invite.uri.starts_with("xmpp:localhost?register;preauth="));
    let accepted = preauth(&mut raw, &invite.stored.token).await;
    assert_eq!(accepted.attr("type"), Some("result"), "{accepted:?}");
    let done = register(&mut raw, "juliet", PASSWORD).await;
    assert_eq!(done.attr("type"), Some("result"), "{done:?}");
    let ok = try_login(server.c2s(), server.tls_config(), "juliet", PASSWORD).await;
    assert_eq!(ok.name(), "success");

    // Used: refused on a new stream, and no second account on the first one either.
    let again = register(&mut raw, "romeo", PASSWORD).await;
    assert_eq!(error_condition(&again).as_deref(), Some("not-allowed"));
    let (mut other, _) = encrypted(server.c2s(), server.tls_config(), None).await;
    let used = preauth(&mut other, &invite.stored.token).await;
    assert_eq!(error_condition(&used).as_deref(), Some("item-not-found"));
    assert!(error_text(&used).contains("used"), "{used:?}");
}

#[tokio::test]
async fn an_expired_invite_is_refused() {
    let server = TestServer::start_with(invite_only).await;
    let invite = invite_with(&server, None, false, Some(Duration::ZERO)).await;
    let (mut raw, _) = encrypted(server.c2s(), server.tls_config(), None).await;
    let expired = preauth(&mut raw, &invite.stored.token).await;
    assert_eq!(error_condition(&expired).as_deref(), Some("item-not-found"));
    assert!(error_text(&expired).contains("expired"), "{expired:?}");
    let refused = register(&mut raw, "late", PASSWORD).await;
    assert_eq!(error_condition(&refused).as_deref(), Some("not-allowed"));
}

#[tokio::test]
async fn a_token_registers_one_account_when_two_race_for_it() {
    let server = TestServer::start_with(invite_only).await;
    let invite = invite(&server, None, false).await;
    let mut streams = Vec::new();
    for _ in 0..2 {
        let (mut raw, _) = encrypted(server.c2s(), server.tls_config(), None).await;
        let ok = preauth(&mut raw, &invite.stored.token).await;
        assert_eq!(ok.attr("type"), Some("result"));
        streams.push(raw);
    }
    let mut second = streams.pop().expect("two");
    let mut first = streams.pop().expect("two");
    let (a, b) = tokio::join!(
        register(&mut first, "racer1", PASSWORD),
        register(&mut second, "racer2", PASSWORD)
    );
    let wins = [&a, &b]
        .iter()
        .filter(|r| r.attr("type") == Some("result"))
        .count();
    assert_eq!(wins, 1, "{a:?} {b:?}");
    assert_eq!(
        server
            .storage()
            .accounts
            .list_accounts()
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn an_invite_for_a_username_creates_only_that_one() {
    let server = TestServer::start_with(invite_only).await;
    let request = InviteRequest {
        domain: DOMAIN.into(),
        inviter: None,
        username: Some("Chosen".into()),
        roster: false,
        expiry: None,
    };
    let invite = create_invite(server.storage(), server.config(), request)
        .await
        .expect("invite");
    let (mut raw, _) = encrypted(server.c2s(), server.tls_config(), None).await;
    preauth(&mut raw, &invite.stored.token).await;
    let fields = iq(
        &mut raw,
        "g",
        "<iq type='get' id='g'><query xmlns='jabber:iq:register'/></iq>",
    )
    .await;
    let username = fields
        .get_child("query", REGISTER)
        .and_then(|q| q.get_child("username", REGISTER))
        .map(Element::text);
    assert_eq!(username.as_deref(), Some("chosen"));
    let wrong = register(&mut raw, "other", PASSWORD).await;
    assert_eq!(error_condition(&wrong).as_deref(), Some("not-acceptable"));
    let right = register(&mut raw, "chosen", PASSWORD).await;
    assert_eq!(right.attr("type"), Some("result"), "{right:?}");
}

/// Fetches the roster on a logged-in raw stream; (contact, subscription) pairs.
async fn roster(raw: &mut Raw) -> Vec<(String, String)> {
    let result = iq(
        raw,
        "roster",
        "<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>",
    )
    .await;
    result
        .get_child("query", "jabber:iq:roster")
        .expect("roster")
        .children()
        .map(|item| {
            (
                item.attr("jid").unwrap_or_default().to_owned(),
                item.attr("subscription").unwrap_or("none").to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_invite_with_roster_makes_the_new_account_and_the_inviter_contacts() {
    let server = TestServer::start_with(invite_only).await;
    server.add_user("romeo").await;
    let invite = invite(&server, Some("romeo"), true).await;
    assert_eq!(
        invite.uri,
        format!(
            "xmpp:romeo@localhost?roster;preauth={};ibr=y",
            invite.stored.token
        )
    );
    let (mut romeo, _) = Raw::login(server.c2s(), server.tls_config(), "romeo", "r").await;
    assert!(roster(&mut romeo).await.is_empty());

    let (mut raw, _) = encrypted(server.c2s(), server.tls_config(), None).await;
    preauth(&mut raw, &invite.stored.token).await;
    let done = register(&mut raw, "juliet", PASSWORD).await;
    assert_eq!(done.attr("type"), Some("result"), "{done:?}");

    // The inviter's online session is told with a roster push.
    let push = loop {
        let el = romeo.element().await;
        if el.name() == "iq" && el.attr("type") == Some("set") {
            break el;
        }
    };
    let item = push
        .get_child("query", "jabber:iq:roster")
        .and_then(|q| q.get_child("item", "jabber:iq:roster"))
        .expect("pushed item");
    assert_eq!(item.attr("jid"), Some("juliet@localhost"));
    assert_eq!(item.attr("subscription"), Some("both"));
    assert_eq!(
        roster(&mut romeo).await,
        vec![("juliet@localhost".to_owned(), "both".to_owned())]
    );
    let (mut juliet, _) = Raw::login(server.c2s(), server.tls_config(), "juliet", "r").await;
    assert_eq!(
        roster(&mut juliet).await,
        vec![("romeo@localhost".to_owned(), "both".to_owned())]
    );
}

#[tokio::test]
async fn a_preauth_token_gets_an_existing_account_subscription_approved() {
    let server = TestServer::start().await;
    server.add_user("romeo").await;
    server.add_user("juliet").await;
    let invite = invite(&server, Some("romeo"), true).await;
    let (mut juliet, _) = Raw::login(server.c2s(), server.tls_config(), "juliet", "r").await;
    roster(&mut juliet).await;
    // Available, so that the answer to the request is delivered (RFC 6121 §3.1.6).
    juliet.write("<presence/>").await;
    // A bad token is a plain request: it waits for Romeo.
    juliet
        .write(
            "<presence type='subscribe' to='romeo@localhost' id='s0'>\
             <preauth xmlns='urn:xmpp:pars:0' token='AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'/></presence>",
        )
        .await;
    juliet
        .write(&format!(
            "<presence type='subscribe' to='romeo@localhost' id='s1'>\
             <preauth xmlns='urn:xmpp:pars:0' token='{}'/></presence>",
            invite.stored.token
        ))
        .await;
    // Approved at once, and Romeo asks back (XEP-0379 §3.4), so that approving makes them
    // mutual contacts; the two may come in either order.
    let (mut subscribed, mut asked) = (None, None);
    while subscribed.is_none() || asked.is_none() {
        let el = juliet.element().await;
        match (el.name(), el.attr("type")) {
            ("presence", Some("subscribed")) => subscribed = Some(el),
            ("presence", Some("subscribe")) => asked = Some(el),
            _ => {}
        }
    }
    let from = |el: Option<Element>| el.and_then(|e| e.attr("from").map(str::to_owned));
    assert_eq!(from(subscribed).as_deref(), Some("romeo@localhost"));
    assert_eq!(from(asked).as_deref(), Some("romeo@localhost"));
    let item = server
        .storage()
        .roster
        .roster_item("romeo@localhost", "juliet@localhost")
        .await
        .unwrap()
        .expect("item");
    assert_eq!(item.subscription, Subscription::From);
    assert!(item.ask, "{item:?}");
    juliet
        .write("<presence type='subscribed' to='romeo@localhost'/>")
        .await;
    for _ in 0..100 {
        let item = server
            .storage()
            .roster
            .roster_item("romeo@localhost", "juliet@localhost")
            .await
            .unwrap()
            .expect("item");
        if item.subscription == Subscription::Both {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let item = server
        .storage()
        .roster
        .roster_item("romeo@localhost", "juliet@localhost")
        .await
        .unwrap()
        .expect("item");
    assert_eq!(item.subscription, Subscription::Both);
    // Used up.
    let state = server
        .storage()
        .invites
        .invite(&invite.stored.token)
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(state.used_by.as_deref(), Some("juliet@localhost"));
}

#[tokio::test]
async fn someone_elses_token_approves_nothing() {
    let server = TestServer::start().await;
    for user in ["romeo", "juliet", "tybalt"] {
        server.add_user(user).await;
    }
    let tybalts = invite(&server, Some("tybalt"), true).await;
    let (mut juliet, _) = Raw::login(server.c2s(), server.tls_config(), "juliet", "r").await;
    juliet
        .write(&format!(
            "<presence type='subscribe' to='romeo@localhost'>\
             <preauth xmlns='urn:xmpp:pars:0' token='{}'/></presence>",
            tybalts.stored.token
        ))
        .await;
    // Romeo is asked, as without a token; nothing was approved and the token is unused.
    let (mut romeo, _) = Raw::login(server.c2s(), server.tls_config(), "romeo", "r").await;
    romeo.write("<presence/>").await;
    let request = loop {
        let el = romeo.element().await;
        if el.name() == "presence" && el.attr("type") == Some("subscribe") {
            break el;
        }
    };
    assert_eq!(request.attr("from"), Some("juliet@localhost"));
    let item = server
        .storage()
        .roster
        .roster_item("romeo@localhost", "juliet@localhost")
        .await
        .unwrap();
    assert!(item.is_none_or(|i| i.subscription == Subscription::None));
    let state = server
        .storage()
        .invites
        .invite(&tybalts.stored.token)
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(state.used_by, None);
}

/// One HTTP/1.1 request over a plain TCP connection; the status and the body.
async fn http(server: &TestServer, method: &str, path: &str, form: Option<&str>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(server.http())
        .await
        .expect("connect");
    let body = form.unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Length: {}\r\n",
        body.len()
    );
    if form.is_some() {
        request.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    request.push_str("\r\n");
    request.push_str(body);
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut response))
        .await
        .expect("answered in time")
        .expect("read");
    let response = String::from_utf8(response).expect("utf-8");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn form(username: &str, password: &str, again: &str) -> String {
    format!("username={username}&password={password}&password_again={again}")
}

#[tokio::test]
async fn the_invite_page_creates_the_account_once() {
    let server = TestServer::start_with(invite_only).await;
    server.add_user("romeo").await;
    let invite = invite(&server, Some("romeo"), true).await;
    let token = &invite.stored.token;
    let path = format!("/invite/{token}");

    let (status, page) = http(&server, "GET", &path, None).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("<strong>romeo@localhost</strong> invites you"),
        "{page}"
    );
    assert!(page.contains("name='username'") && page.contains("name='password'"));
    assert!(page.contains(&format!(
        "href='xmpp:romeo@localhost?roster;preauth={token};ibr=y'"
    )));
    // Without http.public_url, the page's own link follows the request's scheme and Host.
    assert!(
        page.contains(&format!("http://localhost/invite/{token}")),
        "{page}"
    );

    let (status, page) = http(&server, "POST", &path, Some(&form("juliet", "a", "b"))).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("passwords differ"));

    // What the visitor typed comes back escaped.
    let (status, page) = http(
        &server,
        "POST",
        &path,
        Some(&form("%3Cscript%3Ex", PASSWORD, PASSWORD)),
    )
    .await;
    assert_eq!(status, 400, "{page}");
    assert!(!page.contains("<script>"), "{page}");
    assert!(page.contains("&lt;script&gt;x"), "{page}");

    let (status, page) = http(
        &server,
        "POST",
        &path,
        Some(&form("juliet", PASSWORD, PASSWORD)),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("juliet@localhost"), "{page}");

    let ok = try_login(server.c2s(), server.tls_config(), "juliet", PASSWORD).await;
    assert_eq!(ok.name(), "success");
    let item = server
        .storage()
        .roster
        .roster_item("juliet@localhost", "romeo@localhost")
        .await
        .unwrap()
        .expect("inviter on the roster");
    assert_eq!(item.subscription, Subscription::Both);

    let (status, page) = http(&server, "GET", &path, None).await;
    assert_eq!(status, 410, "{page}");
    assert!(page.contains("used already"));
    let (status, _) = http(
        &server,
        "POST",
        &path,
        Some(&form("again", PASSWORD, PASSWORD)),
    )
    .await;
    assert_eq!(status, 410);
    assert!(!server
        .storage()
        .accounts
        .account_exists("again@localhost")
        .await
        .unwrap());
}

#[tokio::test]
async fn unknown_and_expired_invites_get_pages_that_say_so() {
    let server = TestServer::start_with(invite_only).await;
    let (status, page) = http(
        &server,
        "GET",
        "/invite/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        None,
    )
    .await;
    assert_eq!(status, 404);
    assert!(page.contains("not valid"));
    let expired = invite_with(&server, None, false, Some(Duration::ZERO)).await;
    let path = format!("/invite/{}", expired.stored.token);
    let (status, page) = http(&server, "GET", &path, None).await;
    assert_eq!(status, 410);
    assert!(page.contains("expired"));
    let (status, _) = http(
        &server,
        "POST",
        &path,
        Some(&form("late", PASSWORD, PASSWORD)),
    )
    .await;
    assert_eq!(status, 410);
}

#[tokio::test]
async fn the_page_takes_a_taken_name_as_a_conflict_and_keeps_the_invite() {
    let server = TestServer::start_with(invite_only).await;
    server.add_user("alice").await;
    let invite = invite(&server, None, false).await;
    let path = format!("/invite/{}", invite.stored.token);
    let (status, page) = http(&server, "POST", &path, Some(&form("alice", "x", "x"))).await;
    assert_eq!(status, 409, "{page}");
    let (status, _) = http(&server, "GET", &path, None).await;
    assert_eq!(status, 200);
    // The owner's password is untouched.
    let ok = try_login(server.c2s(), server.tls_config(), "alice", PASSWORD).await;
    assert_eq!(ok.name(), "success");
}

#[tokio::test]
async fn the_page_is_served_over_https_and_offers_no_form_where_registration_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start().await;
    server.add_user("romeo").await;
    let invite = invite(&server, Some("romeo"), true).await;
    let addr = server.server.https_addr.expect("https listener");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let config = pinned_tls_config(server.cert_der.clone(), vec![b"http/1.1".to_vec()]);
    let name = rustls::pki_types::ServerName::try_from(DOMAIN).unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    tls.write_all(
        format!(
            "GET /invite/{} HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
            invite.stored.token,
            addr.port()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, tls.read_to_end(&mut response))
        .await
        .expect("in time")
        .expect("read");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("romeo@localhost"));
    // The XEP-0379 link still adds Romeo from an existing account; no account is made here.
    assert!(response.contains("preauth="));
    assert!(!response.contains("<form"), "{response}");
}
