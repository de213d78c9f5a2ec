//! XEP-0401's ad-hoc commands: an invite created from a client, for admins and, when the
//! server allows it, for every user; the invite it answers registers an account that becomes
//! the inviter's contact.

mod common;

use common::adhoc::*;
use common::register::*;
use common::xmpp::Session;
use common::*;
use corvid::config::RegistrationMode;
use corvid::invites::command::{CREATE_ACCOUNT, INVITE};

async fn server(user_invites: bool) -> TestServer {
    let server = TestServer::start_with(|config| {
        config.registration = RegistrationMode::Invite;
        config.admins = vec!["admin@localhost".into()];
        config.allow_user_invites = user_invites;
    })
    .await;
    for user in ["admin", "romeo"] {
        server.add_user(user).await;
    }
    server
}

/// The token in an `xmpp:` URI's `preauth=` parameter.
fn token_of(uri: &str) -> String {
    uri.split(['?', ';'])
        .find_map(|part| part.strip_prefix("preauth="))
        .expect("a preauth token")
        .to_owned()
}

#[tokio::test]
async fn a_user_invites_a_contact_when_the_server_allows_it() {
    let server = server(true).await;
    let mut romeo = Session::login(&server, "romeo", "r").await;
    let answer = run(&mut romeo, INVITE, None, None, &[]).await;
    assert_eq!(status(&answer), "completed");
    let uri = values(&answer, "uri").remove(0);
    assert!(
        uri.starts_with("xmpp:romeo@localhost?roster;preauth="),
        "{uri}"
    );
    let page = values(&answer, "landing-url").remove(0);
    assert!(page.contains("/invite/"), "{page}");
    assert!(!values(&answer, "expire").remove(0).is_empty());

    let (mut raw, _) = encrypted(server.c2s(), server.tls_config(), None).await;
    preauth(&mut raw, &token_of(&uri)).await;
    let done = register(&mut raw, "juliet", PASSWORD).await;
    assert_eq!(done.attr("type"), Some("result"), "{done:?}");
    let roster = romeo.roster_get().await;
    let item = roster
        .get_child("query", "jabber:iq:roster")
        .and_then(|q| q.get_child("item", "jabber:iq:roster"))
        .expect("the new contact");
    assert_eq!(item.attr("jid"), Some("juliet@localhost"));
    assert_eq!(item.attr("subscription"), Some("both"));
}

#[tokio::test]
async fn only_admins_invite_unless_the_server_allows_users_to() {
    let server = server(false).await;
    let mut romeo = Session::login(&server, "romeo", "r").await;
    assert!(!listed(&mut romeo).await.contains(&INVITE.to_owned()));
    let refused = run(&mut romeo, INVITE, None, None, &[]).await;
    assert_eq!(error(&refused).0, "forbidden");

    let mut admin = Session::login(&server, "admin", "a").await;
    let answer = run(&mut admin, INVITE, None, None, &[]).await;
    assert_eq!(status(&answer), "completed");
}

#[tokio::test]
async fn an_account_invite_for_one_username() {
    let server = server(false).await;
    let mut admin = Session::login(&server, "admin", "a").await;
    let first = run(&mut admin, CREATE_ACCOUNT, None, None, &[]).await;
    let id = session_id(&first);
    let answer = run(
        &mut admin,
        CREATE_ACCOUNT,
        Some("complete"),
        Some(&id),
        &[("username", &["mercutio"])],
    )
    .await;
    assert_eq!(status(&answer), "completed");
    let uri = values(&answer, "uri").remove(0);
    assert!(uri.starts_with("xmpp:localhost?register;preauth="), "{uri}");

    let (mut raw, _) = encrypted(server.c2s(), server.tls_config(), None).await;
    preauth(&mut raw, &token_of(&uri)).await;
    let wrong = register(&mut raw, "tybalt", PASSWORD).await;
    assert_eq!(wrong.attr("type"), Some("error"), "{wrong:?}");
    let done = register(&mut raw, "mercutio", PASSWORD).await;
    assert_eq!(done.attr("type"), Some("result"), "{done:?}");
}
