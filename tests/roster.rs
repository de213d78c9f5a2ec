//! RFC 6121 §2 over real sockets: get/set/remove, pushes to every interested resource,
//! versioning, the errors for malformed sets, and the per-user cap.

mod common;

use common::xmpp::{error_condition, is_roster_push, pushed_item, Session};
use common::TestServer;
use minidom::Element;

fn items(query_holder: &Element) -> Vec<&Element> {
    query_holder
        .get_child("query", "jabber:iq:roster")
        .map(|q| q.children().filter(|c| c.name() == "item").collect())
        .unwrap_or_default()
}

fn groups(item: &Element) -> Vec<String> {
    item.children()
        .filter(|c| c.name() == "group")
        .map(|g| g.text())
        .collect()
}

#[tokio::test]
async fn set_update_remove_reach_both_interested_resources() {
    let server = TestServer::start().await;
    server.add_user("alice").await;
    let mut a = Session::login(&server, "alice", "a").await;
    let mut b = Session::login(&server, "alice", "b").await;
    a.roster_get().await;
    b.roster_get().await;
    // A third session never asked for the roster: it is not interested (§2.1.6).
    let mut quiet = Session::login(&server, "alice", "quiet").await;

    let answer = a
        .iq("<iq type='set'><query xmlns='jabber:iq:roster'>\
             <item jid='bob@example.org' name='Bob'><group>Friends</group><group>Work</group></item>\
             </query></iq>")
        .await;
    assert_eq!(answer.attr("type"), Some("result"));
    for session in [&mut a, &mut b] {
        let push = session.expect(is_roster_push).await;
        let item = pushed_item(&push).expect("item");
        assert_eq!(item.attr("jid"), Some("bob@example.org"));
        assert_eq!(item.attr("name"), Some("Bob"));
        assert_eq!(item.attr("subscription"), Some("none"));
        assert_eq!(groups(item), ["Friends", "Work"]);
        assert!(push
            .get_child("query", "jabber:iq:roster")
            .and_then(|q| q.attr("ver"))
            .is_some());
    }

    let roster = b.roster_get().await;
    let listed = items(&roster);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].attr("name"), Some("Bob"));

    // An update replaces name and groups.
    a.iq("<iq type='set'><query xmlns='jabber:iq:roster'>\
          <item jid='bob@example.org' name='Robert'><group>Work</group></item></query></iq>")
        .await;
    let push = b.expect(is_roster_push).await;
    let item = pushed_item(&push).expect("item");
    assert_eq!(item.attr("name"), Some("Robert"));
    assert_eq!(groups(item), ["Work"]);

    let answer = b
        .iq("<iq type='set'><query xmlns='jabber:iq:roster'>\
             <item jid='bob@example.org' subscription='remove'/></query></iq>")
        .await;
    assert_eq!(answer.attr("type"), Some("result"));
    for session in [&mut a, &mut b] {
        let push = session
            .expect(|el| {
                is_roster_push(el)
                    && pushed_item(el).and_then(|i| i.attr("subscription")) == Some("remove")
            })
            .await;
        assert_eq!(
            pushed_item(&push).and_then(|i| i.attr("jid")),
            Some("bob@example.org")
        );
    }
    assert!(items(&a.roster_get().await).is_empty());

    // Removing what is not there (§2.5.3).
    let answer = a
        .iq("<iq type='set'><query xmlns='jabber:iq:roster'>\
             <item jid='nobody@example.org' subscription='remove'/></query></iq>")
        .await;
    assert_eq!(error_condition(&answer).as_deref(), Some("item-not-found"));

    let seen = quiet.drain().await;
    assert!(!seen.iter().any(is_roster_push), "not interested: {seen:?}");
}

#[tokio::test]
async fn versioning_answers_empty_when_current() {
    let server = TestServer::start().await;
    server.add_user("alice").await;
    let mut a = Session::login(&server, "alice", "a").await;

    let first = a
        .iq("<iq type='get'><query xmlns='jabber:iq:roster' ver=''/></iq>")
        .await;
    let ver0 = first
        .get_child("query", "jabber:iq:roster")
        .and_then(|q| q.attr("ver"))
        .expect("ver on a versioned request")
        .to_string();

    a.iq(
        "<iq type='set'><query xmlns='jabber:iq:roster'><item jid='bob@example.org'/></query></iq>",
    )
    .await;
    let push = a.expect(is_roster_push).await;
    let ver1 = push
        .get_child("query", "jabber:iq:roster")
        .and_then(|q| q.attr("ver"))
        .expect("ver in push")
        .to_string();
    assert_ne!(ver0, ver1);

    // Current version: an empty result, no query (§2.6.3).
    let current = a
        .iq(&format!(
            "<iq type='get'><query xmlns='jabber:iq:roster' ver='{ver1}'/></iq>"
        ))
        .await;
    assert_eq!(current.attr("type"), Some("result"));
    assert!(current.children().next().is_none(), "{current:?}");

    // An old version gets the whole roster.
    let stale = a
        .iq(&format!(
            "<iq type='get'><query xmlns='jabber:iq:roster' ver='{ver0}'/></iq>"
        ))
        .await;
    assert_eq!(items(&stale).len(), 1);
    assert_eq!(
        stale
            .get_child("query", "jabber:iq:roster")
            .and_then(|q| q.attr("ver")),
        Some(ver1.as_str())
    );

    // A client that does not version gets no `ver`.
    let plain = a.roster_get().await;
    assert!(plain
        .get_child("query", "jabber:iq:roster")
        .and_then(|q| q.attr("ver"))
        .is_none());
}

#[tokio::test]
async fn malformed_sets_get_the_rfc_errors() {
    let server = TestServer::start_with(|c| c.limits.roster_items = 2).await;
    server.add_user("alice").await;
    server.add_user("bob").await;
    let mut a = Session::login(&server, "alice", "a").await;

    let cases = [
        (
            "<item jid='x@example.org'/><item jid='y@example.org'/>",
            "bad-request",
        ),
        ("<item name='no jid'/>", "bad-request"),
        ("<item jid='x@example.org/phone'/>", "jid-malformed"),
        ("<item jid='@@'/>", "jid-malformed"),
        (
            "<item jid='x@example.org'><group></group></item>",
            "not-acceptable",
        ),
        (
            "<item jid='x@example.org'><group>A</group><group>A</group></item>",
            "bad-request",
        ),
        ("<item jid='alice@localhost'/>", "not-allowed"),
    ];
    for (item, condition) in cases {
        let answer = a
            .iq(&format!(
                "<iq type='set'><query xmlns='jabber:iq:roster'>{item}</query></iq>"
            ))
            .await;
        assert_eq!(
            error_condition(&answer).as_deref(),
            Some(condition),
            "{item}"
        );
    }
    let long_name = "n".repeat(2000);
    let answer = a
        .iq(&format!(
            "<iq type='set'><query xmlns='jabber:iq:roster'><item jid='x@example.org' name='{long_name}'/></query></iq>"
        ))
        .await;
    assert_eq!(error_condition(&answer).as_deref(), Some("not-acceptable"));

    // The cap: two items fit, the third does not; updating an existing one still works.
    for contact in ["one@example.org", "two@example.org"] {
        let answer = a
            .iq(&format!(
                "<iq type='set'><query xmlns='jabber:iq:roster'><item jid='{contact}'/></query></iq>"
            ))
            .await;
        assert_eq!(answer.attr("type"), Some("result"));
    }
    let answer = a
        .iq("<iq type='set'><query xmlns='jabber:iq:roster'><item jid='three@example.org'/></query></iq>")
        .await;
    assert_eq!(error_condition(&answer).as_deref(), Some("not-allowed"));
    let answer = a
        .iq("<iq type='set'><query xmlns='jabber:iq:roster'><item jid='one@example.org' name='One'/></query></iq>")
        .await;
    assert_eq!(answer.attr("type"), Some("result"));

    // Someone else's roster is not ours to read or change.
    let answer = a
        .iq("<iq type='get' to='bob@localhost'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    assert_eq!(error_condition(&answer).as_deref(), Some("forbidden"));
}

#[tokio::test]
async fn stream_features_announce_versioning_and_pre_approval() {
    let server = TestServer::start().await;
    server.add_user("alice").await;
    let mut raw = common::Raw::connect(server.c2s())
        .await
        .starttls(server.tls_config())
        .await;
    raw.write(common::OPEN).await;
    let _ = raw.element().await;
    raw.auth_plain("alice", common::PASSWORD).await;
    assert_eq!(raw.element().await.name(), "success");
    raw.reset_parser();
    raw.write(common::OPEN).await;
    let features = raw.element().await;
    assert!(features.has_child("ver", "urn:xmpp:features:rosterver"));
    assert!(features.has_child("sub", "urn:xmpp:features:pre-approval"));
}
