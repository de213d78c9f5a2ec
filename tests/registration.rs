//! XEP-0077 in-band registration over real sockets: what each `registration` mode offers and
//! refuses, the per-address limits of open registration, and password change and account
//! removal after login (in every mode).

mod common;

use common::register::*;
use common::*;
use corvid::config::RegistrationMode;

fn open(config: &mut corvid::config::Config) {
    config.registration = RegistrationMode::Open;
    config.registration_limits.per_address_per_hour = 0;
    config.registration_limits.per_address_per_day = 0;
    config.registration_limits.min_interval_secs = 0;
}

#[tokio::test]
async fn closed_mode_offers_no_registration_and_refuses_it() {
    let server = TestServer::start().await;
    let (mut raw, features) = encrypted(server.c2s(), server.tls_config(), None).await;
    assert!(!features.has_child("register", REGISTER_FEATURE));
    let get = iq(
        &mut raw,
        "g",
        "<iq type='get' id='g'><query xmlns='jabber:iq:register'/></iq>",
    )
    .await;
    assert_eq!(error_condition(&get).as_deref(), Some("not-allowed"));
    let set = register(&mut raw, "mallory", "pw").await;
    assert_eq!(error_condition(&set).as_deref(), Some("not-allowed"));
    assert!(!server
        .storage()
        .accounts
        .account_exists("mallory@localhost")
        .await
        .unwrap());
}

#[tokio::test]
async fn open_mode_registers_an_account_that_then_logs_in() {
    let server = TestServer::start_with(open).await;
    let (mut raw, features) = encrypted(server.c2s(), server.tls_config(), None).await;
    assert!(features.has_child("register", REGISTER_FEATURE));
    assert!(!features.has_child("register", IBR_TOKEN));
    let fields = iq(
        &mut raw,
        "g",
        "<iq type='get' id='g'><query xmlns='jabber:iq:register'/></iq>",
    )
    .await;
    assert_eq!(fields.attr("type"), Some("result"));
    let query = fields.get_child("query", REGISTER).expect("query");
    for field in ["instructions", "username", "password"] {
        assert!(query.has_child(field, REGISTER), "{field}");
    }
    assert!(query.has_child("x", "jabber:x:data"));
    let done = register(&mut raw, "Juliet", PASSWORD).await;
    assert_eq!(done.attr("type"), Some("result"), "{done:?}");
    // The stream goes on to authenticate as the new account; the name was nodeprepped.
    raw.auth_plain("juliet", PASSWORD).await;
    assert_eq!(raw.element().await.name(), "success");
    let (_session, jid) = Raw::login(server.c2s(), server.tls_config(), "juliet", "r").await;
    assert_eq!(jid, "juliet@localhost/r");
}

#[tokio::test]
async fn a_data_form_registers_too() {
    let server = TestServer::start_with(open).await;
    let (mut raw, _) = encrypted(server.c2s(), server.tls_config(), None).await;
    let done = iq(
        &mut raw,
        "f",
        &format!(
            "<iq type='set' id='f'><query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' \
             type='submit'><field var='FORM_TYPE'><value>jabber:iq:register</value></field>\
             <field var='username'><value>formuser</value></field><field var='password'>\
             <value>{PASSWORD}</value></field></x></query></iq>"
        ),
    )
    .await;
    assert_eq!(done.attr("type"), Some("result"), "{done:?}");
    let ok = try_login(server.c2s(), server.tls_config(), "formuser", PASSWORD).await;
    assert_eq!(ok.name(), "success");
}

#[tokio::test]
async fn an_existing_username_is_a_conflict() {
    let server = TestServer::start_with(open).await;
    server.add_user("alice").await;
    let (mut raw, _) = encrypted(server.c2s(), server.tls_config(), None).await;
    let taken = register(&mut raw, "alice", "other-password").await;
    assert_eq!(error_condition(&taken).as_deref(), Some("conflict"));
    // Differently cased, it is the same account.
    let taken = register(&mut raw, "ALICE", "other-password").await;
    assert_eq!(error_condition(&taken).as_deref(), Some("conflict"));
    // The owner's password is untouched.
    let ok = try_login(server.c2s(), server.tls_config(), "alice", PASSWORD).await;
    assert_eq!(ok.name(), "success");
}

#[tokio::test]
async fn bad_usernames_and_missing_fields_are_not_acceptable() {
    let server = TestServer::start_with(open).await;
    let (mut raw, _) = encrypted(server.c2s(), server.tls_config(), None).await;
    for bad in ["a b", "a@b", "a/b", "a&quot;b"] {
        let refused = register(&mut raw, bad, PASSWORD).await;
        assert_eq!(
            error_condition(&refused).as_deref(),
            Some("not-acceptable"),
            "{bad}"
        );
    }
    // Failed attempts count like failed logins (five end the stream): a fresh stream.
    let (mut raw, _) = encrypted(server.c2s(), server.tls_config(), None).await;
    let no_password = iq(
        &mut raw,
        "np",
        "<iq type='set' id='np'><query xmlns='jabber:iq:register'><username>nopw</username></query></iq>",
    )
    .await;
    assert_eq!(
        error_condition(&no_password).as_deref(),
        Some("not-acceptable")
    );
    let no_username = iq(
        &mut raw,
        "nu",
        "<iq type='set' id='nu'><query xmlns='jabber:iq:register'><password>x</password></query></iq>",
    )
    .await;
    assert_eq!(
        error_condition(&no_username).as_deref(),
        Some("not-acceptable")
    );
    assert!(server
        .storage()
        .accounts
        .list_accounts()
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn registration_is_refused_before_tls() {
    let server = TestServer::start_with(open).await;
    let mut raw = Raw::connect(server.c2s()).await;
    raw.write(OPEN).await;
    let features = raw.element().await;
    assert!(features.has_child("starttls", corvid::xml::ns::TLS));
    assert!(!features.has_child("register", REGISTER_FEATURE));
    let refused = register(&mut raw, "cleartext", PASSWORD).await;
    assert_eq!(error_condition(&refused).as_deref(), Some("not-allowed"));
    assert!(!server
        .storage()
        .accounts
        .account_exists("cleartext@localhost")
        .await
        .unwrap());
}

#[tokio::test]
async fn one_address_may_register_so_many_accounts_an_hour() {
    let server = TestServer::start_with(|config| {
        open(config);
        config.registration_limits.per_address_per_hour = 2;
    })
    .await;
    let here = Some([127, 0, 0, 1].into());
    for name in ["one", "two"] {
        let (mut raw, _) = encrypted(server.c2s(), server.tls_config(), here).await;
        let done = register(&mut raw, name, PASSWORD).await;
        assert_eq!(done.attr("type"), Some("result"), "{name}: {done:?}");
    }
    let (mut raw, _) = encrypted(server.c2s(), server.tls_config(), here).await;
    let refused = register(&mut raw, "three", PASSWORD).await;
    assert_eq!(
        error_condition(&refused).as_deref(),
        Some("resource-constraint")
    );
    assert!(error_text(&refused).contains("hour"), "{refused:?}");
    // Another address has its own budget.
    let elsewhere = Some([127, 0, 0, 2].into());
    let (mut raw, _) = encrypted(server.c2s(), server.tls_config(), elsewhere).await;
    let done = register(&mut raw, "three", PASSWORD).await;
    assert_eq!(done.attr("type"), Some("result"), "{done:?}");
}

#[tokio::test]
async fn registrations_from_one_address_must_be_apart() {
    let server = TestServer::start_with(|config| {
        open(config);
        config.registration_limits.min_interval_secs = 3600;
    })
    .await;
    let (mut raw, _) = encrypted(server.c2s(), server.tls_config(), None).await;
    let done = register(&mut raw, "first", PASSWORD).await;
    assert_eq!(done.attr("type"), Some("result"));
    // The next one from the same address comes too soon.
    let refused = register(&mut raw, "second", PASSWORD).await;
    assert_eq!(
        error_condition(&refused).as_deref(),
        Some("resource-constraint")
    );
    assert!(error_text(&refused).contains("apart"), "{refused:?}");
    assert!(!server
        .storage()
        .accounts
        .account_exists("second@localhost")
        .await
        .unwrap());
}

#[tokio::test]
async fn a_user_changes_their_password_even_when_registration_is_closed() {
    let server = TestServer::start().await;
    server.add_user("alice").await;
    let (mut raw, _) = Raw::login(server.c2s(), server.tls_config(), "alice", "r").await;
    let info = iq(
        &mut raw,
        "i",
        "<iq type='get' id='i'><query xmlns='jabber:iq:register'/></iq>",
    )
    .await;
    let query = info.get_child("query", REGISTER).expect("query");
    assert!(query.has_child("registered", REGISTER));
    // Someone else's password is not ours to change.
    let other = iq(
        &mut raw,
        "o",
        "<iq type='set' id='o' to='localhost'><query xmlns='jabber:iq:register'><username>bob</username><password>x</password></query></iq>",
    )
    .await;
    assert_eq!(error_condition(&other).as_deref(), Some("not-allowed"));
    let changed = iq(
        &mut raw,
        "c",
        "<iq type='set' id='c' to='localhost'><query xmlns='jabber:iq:register'><username>alice</username><password>new-password</password></query></iq>",
    )
    .await;
    assert_eq!(changed.attr("type"), Some("result"), "{changed:?}");
    let old = try_login(server.c2s(), server.tls_config(), "alice", PASSWORD).await;
    assert_eq!(old.name(), "failure");
    let new = try_login(server.c2s(), server.tls_config(), "alice", "new-password").await;
    assert_eq!(new.name(), "success");
}

#[tokio::test]
async fn a_password_change_revokes_fast_tokens() {
    let server = TestServer::start().await;
    server.add_user("alice").await;
    server
        .storage()
        .fast
        .issue_fast_token(
            "alice@localhost",
            "ua",
            "tok",
            "HT-SHA-256-NONE",
            i64::MAX,
            0,
        )
        .await
        .unwrap();
    let (mut raw, _) = Raw::login(server.c2s(), server.tls_config(), "alice", "r").await;
    let changed = iq(
        &mut raw,
        "c",
        "<iq type='set' id='c'><query xmlns='jabber:iq:register'><username>alice</username><password>new-password</password></query></iq>",
    )
    .await;
    assert_eq!(changed.attr("type"), Some("result"), "{changed:?}");
    let left = server
        .storage()
        .fast
        .fast_tokens("alice@localhost", "ua")
        .await
        .unwrap();
    assert!(left.is_empty());
}

#[tokio::test]
async fn cancelling_removes_the_account_and_ends_every_session() {
    let server = TestServer::start().await;
    server.add_user("alice").await;
    server.add_user("bob").await;
    server.make_mutual("alice", "bob").await;
    let (mut first, _) = Raw::login(server.c2s(), server.tls_config(), "alice", "one").await;
    let (mut second, _) = Raw::login(server.c2s(), server.tls_config(), "alice", "two").await;
    let removed = iq(
        &mut first,
        "rm",
        "<iq type='set' id='rm'><query xmlns='jabber:iq:register'><remove/></query></iq>",
    )
    .await;
    assert_eq!(removed.attr("type"), Some("result"), "{removed:?}");
    assert_eq!(first.stream_error().await, "not-authorized");
    assert_eq!(second.stream_error().await, "not-authorized");
    let accounts = &server.storage().accounts;
    assert!(!accounts.account_exists("alice@localhost").await.unwrap());
    let refused = try_login(server.c2s(), server.tls_config(), "alice", PASSWORD).await;
    assert_eq!(refused.name(), "failure");
    // The contact's subscriptions to and from the removed account were cancelled.
    let bob_item = server
        .storage()
        .roster
        .roster_item("bob@localhost", "alice@localhost")
        .await
        .unwrap();
    assert!(
        bob_item
            .as_ref()
            .is_none_or(|i| i.subscription == corvid::storage::Subscription::None),
        "{bob_item:?}"
    );
}

#[tokio::test]
async fn removing_before_login_is_not_allowed() {
    let server = TestServer::start_with(open).await;
    server.add_user("alice").await;
    let (mut raw, _) = encrypted(server.c2s(), server.tls_config(), None).await;
    let refused = iq(
        &mut raw,
        "rm",
        "<iq type='set' id='rm'><query xmlns='jabber:iq:register'><remove/></query></iq>",
    )
    .await;
    assert_eq!(error_condition(&refused).as_deref(), Some("not-allowed"));
    assert!(server
        .storage()
        .accounts
        .account_exists("alice@localhost")
        .await
        .unwrap());
}

#[tokio::test]
async fn repeated_failures_end_the_stream_as_failed_logins_do() {
    let server = TestServer::start_with(open).await;
    let (mut raw, _) = encrypted(server.c2s(), server.tls_config(), None).await;
    for _ in 0..4 {
        let refused = register(&mut raw, "a b", PASSWORD).await;
        assert_eq!(error_condition(&refused).as_deref(), Some("not-acceptable"));
    }
    raw.write(&format!(
        "<iq type='set' id='x'><query xmlns='jabber:iq:register'><username>a b</username>\
         <password>{PASSWORD}</password></query></iq>"
    ))
    .await;
    assert_eq!(raw.stream_error().await, "policy-violation");
}

/// Registration over wss:// (RFC 7395): the same negotiation code as TCP, so the same feature
/// and the same IQ.
#[tokio::test]
async fn registration_over_a_secure_websocket() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let server = TestServer::start_with(open).await;
    let addr = server.server.https_addr.expect("https listener");
    let url = format!("wss://localhost:{}/xmpp-websocket", addr.port());
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "xmpp".parse().unwrap());
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let config = pinned_tls_config(server.cert_der.clone(), vec![b"http/1.1".to_vec()]);
    let name = rustls::pki_types::ServerName::try_from(DOMAIN).unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(request, tls)
        .await
        .expect("ws handshake");
    ws.send(Message::text(
        "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>",
    ))
    .await
    .unwrap();
    let features = next_ws(&mut ws).await;
    assert!(
        features.has_child("register", REGISTER_FEATURE),
        "{features:?}"
    );
    ws.send(Message::text(format!(
        "<iq xmlns='jabber:client' type='set' id='reg'><query xmlns='jabber:iq:register'>\
         <username>websocket</username><password>{PASSWORD}</password></query></iq>"
    )))
    .await
    .unwrap();
    let done = next_ws(&mut ws).await;
    assert_eq!(done.attr("type"), Some("result"), "{done:?}");
    let ok = try_login(server.c2s(), server.tls_config(), "websocket", PASSWORD).await;
    assert_eq!(ok.name(), "success");
}

/// The next element on a WebSocket stream that is not the `<open/>` framing.
async fn next_ws<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> minidom::Element
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("frame");
        if let Message::Text(text) = frame {
            let el: minidom::Element = text.as_str().parse().expect("xml");
            if el.name() != "open" {
                return el;
            }
        }
    }
}

/// Removal on PostgreSQL: the account goes, and with it the invites it had made.
#[tokio::test]
async fn cancelling_on_postgres_takes_the_accounts_invites_along() {
    let Some((server, schema)) = start_on_postgres().await else {
        println!("skipped: CORVID_TEST_POSTGRES not set");
        return;
    };
    server.add_user("alice").await;
    let request = corvid::invites::InviteRequest {
        domain: DOMAIN.into(),
        inviter: Some(jid::BareJid::new("alice@localhost").unwrap()),
        username: None,
        roster: true,
        expiry: None,
    };
    let invite = corvid::invites::create_invite(server.storage(), server.config(), request)
        .await
        .expect("invite");
    let (mut raw, _) = Raw::login(server.c2s(), server.tls_config(), "alice", "r").await;
    let removed = iq(
        &mut raw,
        "rm",
        "<iq type='set' id='rm'><query xmlns='jabber:iq:register'><remove/></query></iq>",
    )
    .await;
    assert_eq!(removed.attr("type"), Some("result"), "{removed:?}");
    assert_eq!(raw.stream_error().await, "not-authorized");
    let storage = server.storage();
    assert!(!storage
        .accounts
        .account_exists("alice@localhost")
        .await
        .unwrap());
    assert!(storage
        .invites
        .invite(&invite.stored.token)
        .await
        .unwrap()
        .is_none());
    drop(server);
    drop_schema(&schema).await;
}

/// XEP-0133's welcome message reaches accounts made in-band too, as it does those an admin
/// or `corvid user add` made.
#[tokio::test]
async fn a_registered_account_gets_the_welcome_message() {
    let server = TestServer::start_with(open).await;
    corvid::admin::messages::set_welcome(
        &server.server.ctx.router,
        "localhost",
        Some("Welcome to localhost!"),
    )
    .await
    .unwrap();
    let (mut raw, _) = encrypted(server.c2s(), server.tls_config(), None).await;
    let done = register(&mut raw, "romeo", PASSWORD).await;
    assert_eq!(done.attr("type"), Some("result"), "{done:?}");
    let mut romeo = common::xmpp::Session::login(&server, "romeo", "r").await;
    romeo.send("<presence/>").await;
    let welcome = romeo
        .expect(|el| el.name() == "message" && common::body(el) == "Welcome to localhost!")
        .await;
    assert_eq!(welcome.attr("from"), Some("localhost"));
}
