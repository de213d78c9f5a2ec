//! RFC 6120 §10 / RFC 6121 §8 delivery between local users, offline storage (XEP-0160) and the
//! basics every client probes, over real sockets.

mod common;

use common::*;
use minidom::Element;

fn error_condition(el: &Element) -> Option<String> {
    el.get_child("error", "jabber:client").and_then(|e| {
        e.children()
            .find(|c| c.ns() == corvid::xml::ns::STANZAS_ERRORS && c.name() != "text")
            .map(|c| c.name().to_string())
    })
}

#[tokio::test]
async fn chat_between_two_users_both_ways() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    t.add_user("bob").await;
    let mut alice = t.client("alice", "a", true);
    let mut bob = t.client("bob", "b", true);
    online(&mut alice).await;
    online(&mut bob).await;
    send(&mut alice, "<message xmlns='jabber:client' to='bob@localhost/b' type='chat' id='1'><body>hi bob</body></message>").await;
    let got = next_matching(&mut bob, is_message_with_body).await;
    assert_eq!(
        got.attr("from"),
        Some("alice@localhost/a"),
        "server stamps from"
    );
    assert_eq!(body(&got), "hi bob");
    send(&mut bob, "<message xmlns='jabber:client' to='alice@localhost' type='chat' id='2'><body>hi alice</body></message>").await;
    // Bob's stanzas are handled in order: once his note to himself is back, the message to
    // alice is stored. (A message stored while its recipient's presence is being processed can
    // miss that delivery; that race is not what this test is about.)
    send(&mut bob, "<message xmlns='jabber:client' to='bob@localhost/b' type='chat' id='3'><body>sync</body></message>").await;
    next_matching(&mut bob, |el| {
        is_message_with_body(el) && body(el) == "sync"
    })
    .await;
    // alice has not sent presence: a bare-JID chat goes to offline storage, delivered on presence.
    send(&mut alice, "<presence xmlns='jabber:client'/>").await;
    let got = next_matching(&mut alice, is_message_with_body).await;
    assert_eq!(body(&got), "hi alice");
}

#[tokio::test]
async fn bare_jid_chat_reaches_both_available_resources_but_not_negative_priority() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    t.add_user("bob").await;
    let mut phone = t.client("bob", "phone", true);
    let mut laptop = t.client("bob", "laptop", true);
    let mut away = t.client("bob", "bot", true);
    let mut alice = t.client("alice", "a", true);
    for c in [&mut phone, &mut laptop, &mut away, &mut alice] {
        online(c).await;
    }
    send(
        &mut phone,
        "<presence xmlns='jabber:client'><priority>5</priority></presence>",
    )
    .await;
    // Sessions are served concurrently: wait for each echo so that phone and laptop are
    // available before bot's presence is broadcast.
    next_matching(&mut phone, |e| {
        e.name() == "presence" && e.attr("from") == Some("bob@localhost/phone")
    })
    .await;
    send(
        &mut laptop,
        "<presence xmlns='jabber:client'><priority>1</priority></presence>",
    )
    .await;
    next_matching(&mut laptop, |e| {
        e.name() == "presence" && e.attr("from") == Some("bob@localhost/laptop")
    })
    .await;
    send(
        &mut away,
        "<presence xmlns='jabber:client'><priority>-1</priority></presence>",
    )
    .await;
    // Each sees its own presence come back (RFC 6121 §4.2.2); wait until all are available.
    next_matching(&mut away, |e| {
        e.name() == "presence" && e.attr("from") == Some("bob@localhost/bot")
    })
    .await;
    next_matching(&mut laptop, |e| {
        e.name() == "presence" && e.attr("from") == Some("bob@localhost/bot")
    })
    .await;
    next_matching(&mut phone, |e| {
        e.name() == "presence" && e.attr("from") == Some("bob@localhost/bot")
    })
    .await;

    send(&mut alice, "<message xmlns='jabber:client' to='bob@localhost' type='chat' id='c1'><body>to bare</body></message>").await;
    assert_eq!(
        body(&next_matching(&mut phone, is_message_with_body).await),
        "to bare"
    );
    assert_eq!(
        body(&next_matching(&mut laptop, is_message_with_body).await),
        "to bare"
    );
    // The negative-priority resource gets only messages to its full JID.
    send(&mut alice, "<message xmlns='jabber:client' to='bob@localhost/bot' type='chat' id='c2'><body>to bot</body></message>").await;
    assert_eq!(
        body(&next_matching(&mut away, is_message_with_body).await),
        "to bot"
    );
}

#[tokio::test]
async fn presence_is_broadcast_to_own_resources_and_unavailable_on_abrupt_disconnect() {
    let t = TestServer::start().await;
    t.add_user("bob").await;
    let mut one = t.client("bob", "one", true);
    online(&mut one).await;
    send(&mut one, "<presence xmlns='jabber:client'/>").await;
    next_matching(&mut one, |e| e.name() == "presence").await;
    let (mut two, _) = Raw::login(t.c2s(), t.tls_config(), "bob", "two").await;
    two.write("<presence/>").await;
    let seen = next_matching(&mut one, |e| {
        e.name() == "presence" && e.attr("from") == Some("bob@localhost/two")
    })
    .await;
    assert_eq!(seen.attr("type"), None);
    drop(two); // abrupt: no unavailable, no stream footer
    let gone = next_matching(&mut one, |e| {
        e.name() == "presence" && e.attr("from") == Some("bob@localhost/two")
    })
    .await;
    assert_eq!(gone.attr("type"), Some("unavailable"));
}

#[tokio::test]
async fn offline_messages_arrive_in_order_with_delay_stamps() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    t.add_user("bob").await;
    let mut alice = t.client("alice", "a", true);
    online(&mut alice).await;
    for i in 1..=5 {
        send(&mut alice, &format!("<message xmlns='jabber:client' to='bob@localhost' type='chat' id='o{i}'><body>offline {i}</body></message>")).await;
    }
    // A chat-state-only message is not worth storing (XEP-0085 §5.4).
    send(&mut alice, "<message xmlns='jabber:client' to='bob@localhost' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>").await;
    // Wait until all five are stored (sending is asynchronous).
    for _ in 0..200 {
        if t.storage().offline.count(&account("bob")).await.unwrap() == 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(t.storage().offline.count(&account("bob")).await.unwrap(), 5);

    let mut bob = t.client("bob", "b", true);
    online(&mut bob).await;
    send(&mut bob, "<presence xmlns='jabber:client'/>").await;
    for i in 1..=5 {
        let got = next_matching(&mut bob, is_message_with_body).await;
        assert_eq!(body(&got), format!("offline {i}"));
        assert_eq!(got.attr("from"), Some("alice@localhost/a"));
        let delay = got
            .get_child("delay", "urn:xmpp:delay")
            .expect("XEP-0203 delay");
        assert_eq!(delay.attr("from"), Some("localhost"));
        let stamp = delay.attr("stamp").expect("stamp");
        assert!(
            chrono::DateTime::parse_from_rfc3339(stamp).is_ok(),
            "{stamp}"
        );
    }
    assert_eq!(t.storage().offline.count(&account("bob")).await.unwrap(), 0);
}

#[tokio::test]
async fn full_offline_store_answers_service_unavailable() {
    let t = TestServer::start_with(|c| c.limits.offline_messages_per_user = 2).await;
    t.add_user("alice").await;
    t.add_user("bob").await;
    let (mut alice, _) = Raw::login(t.c2s(), t.tls_config(), "alice", "a").await;
    for i in 1..=3 {
        alice
            .write(&format!(
                "<message to='bob@localhost' type='chat' id='f{i}'><body>{i}</body></message>"
            ))
            .await;
    }
    let error = alice.element().await;
    assert_eq!(error.attr("type"), Some("error"));
    assert_eq!(error.attr("id"), Some("f3"));
    assert_eq!(
        error_condition(&error).as_deref(),
        Some("service-unavailable")
    );
    assert_eq!(t.storage().offline.count(&account("bob")).await.unwrap(), 2);
}

#[tokio::test]
async fn unknown_user_and_unavailable_resource_errors() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    t.add_user("bob").await;
    let (mut alice, _) = Raw::login(t.c2s(), t.tls_config(), "alice", "a").await;

    alice
        .write("<message to='ghost@localhost' type='chat' id='g1'><body>boo</body></message>")
        .await;
    let error = alice.element().await;
    assert_eq!(error.attr("id"), Some("g1"));
    assert_eq!(error.attr("from"), Some("ghost@localhost"));
    assert_eq!(
        error_condition(&error).as_deref(),
        Some("service-unavailable")
    );

    alice
        .write(
            "<iq to='bob@localhost/nowhere' type='get' id='i1'><ping xmlns='urn:xmpp:ping'/></iq>",
        )
        .await;
    let error = alice.element().await;
    assert_eq!(error.attr("id"), Some("i1"));
    assert_eq!(
        error_condition(&error).as_deref(),
        Some("service-unavailable")
    );

    alice.write("<iq to='ghost@localhost' type='get' id='i2'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    let error = alice.element().await;
    assert_eq!(error.attr("id"), Some("i2"));
    assert_eq!(
        error_condition(&error).as_deref(),
        Some("service-unavailable")
    );

    alice
        .write(
            "<message to='someone@elsewhere.example' type='chat' id='r1'><body>x</body></message>",
        )
        .await;
    let error = alice.element().await;
    assert_eq!(
        error_condition(&error).as_deref(),
        Some("remote-server-not-found")
    );

    alice
        .write("<message to='not a jid@@' type='chat' id='j1'><body>x</body></message>")
        .await;
    let error = alice.element().await;
    assert_eq!(error_condition(&error).as_deref(), Some("jid-malformed"));

    // A groupchat message to a user is an error; a headline to nobody vanishes silently.
    alice
        .write("<message to='bob@localhost' type='headline' id='h1'><body>x</body></message>")
        .await;
    alice
        .write("<message to='bob@localhost' type='groupchat' id='gc1'><body>x</body></message>")
        .await;
    let error = alice.element().await;
    assert_eq!(error.attr("id"), Some("gc1"));
    assert_eq!(
        error_condition(&error).as_deref(),
        Some("service-unavailable")
    );
}

#[tokio::test]
async fn message_to_an_unavailable_full_jid_is_treated_as_bare() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    t.add_user("bob").await;
    let (mut alice, _) = Raw::login(t.c2s(), t.tls_config(), "alice", "a").await;
    alice
        .write("<message to='bob@localhost/gone' type='chat' id='x1'><body>later</body></message>")
        .await;
    alice
        .write("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(alice.element().await.attr("id"), Some("sync"));
    assert_eq!(t.storage().offline.count(&account("bob")).await.unwrap(), 1);
}

#[tokio::test]
async fn spoofed_from_is_a_stream_error_and_goes_nowhere() {
    let t = TestServer::start().await;
    t.add_user("mallory").await;
    t.add_user("bob").await;
    let mut bob = t.client("bob", "b", true);
    online(&mut bob).await;
    let (mut mallory, _) = Raw::login(t.c2s(), t.tls_config(), "mallory", "m").await;
    // Claiming one's own bare JID is fine.
    mallory.write("<message from='mallory@localhost' to='bob@localhost/b' type='chat'><body>honest</body></message>").await;
    assert_eq!(
        body(&next_matching(&mut bob, is_message_with_body).await),
        "honest"
    );
    mallory.write("<message from='alice@localhost/x' to='bob@localhost/b' type='chat'><body>spoof</body></message>").await;
    assert_eq!(mallory.stream_error().await, "invalid-from");
    assert!(mallory.closed().await);
    // Bob gets the next honest message, never the spoofed one.
    let (mut other, _) = Raw::login(t.c2s(), t.tls_config(), "mallory", "m2").await;
    other
        .write("<message to='bob@localhost/b' type='chat'><body>after</body></message>")
        .await;
    assert_eq!(
        body(&next_matching(&mut bob, is_message_with_body).await),
        "after"
    );
}

#[tokio::test]
async fn same_full_jid_replaces_the_old_session_with_conflict() {
    let t = TestServer::start().await;
    t.add_user("bob").await;
    let (mut first, _) = Raw::login(t.c2s(), t.tls_config(), "bob", "same").await;
    let (mut second, jid) = Raw::login(t.c2s(), t.tls_config(), "bob", "same").await;
    assert_eq!(jid, "bob@localhost/same");
    assert_eq!(first.stream_error().await, "conflict");
    second
        .write("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(second.element().await.attr("type"), Some("result"));
}

#[tokio::test]
async fn disco_ping_and_version_on_the_server() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    let (mut alice, _) = Raw::login(t.c2s(), t.tls_config(), "alice", "a").await;
    alice.write("<iq to='localhost' type='get' id='d1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    let info = alice.element().await;
    assert_eq!(info.attr("type"), Some("result"));
    assert_eq!(info.attr("from"), Some("localhost"));
    let query = info
        .get_child("query", corvid::xml::ns::DISCO_INFO)
        .unwrap();
    let identity = query
        .get_child("identity", corvid::xml::ns::DISCO_INFO)
        .unwrap();
    assert_eq!(
        (identity.attr("category"), identity.attr("type")),
        (Some("server"), Some("im"))
    );
    let features: Vec<&str> = query.children().filter_map(|c| c.attr("var")).collect();
    for f in [
        "urn:xmpp:ping",
        "jabber:iq:version",
        "http://jabber.org/protocol/disco#info",
        "msgoffline",
    ] {
        assert!(features.contains(&f), "{f} in {features:?}");
    }

    alice.write("<iq to='localhost' type='get' id='d2'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>").await;
    assert_eq!(alice.element().await.attr("type"), Some("result"));

    alice
        .write("<iq to='localhost' type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let pong = alice.element().await;
    assert_eq!(
        (pong.attr("type"), pong.attr("id")),
        (Some("result"), Some("p1"))
    );

    alice
        .write("<iq to='localhost' type='get' id='v1'><query xmlns='jabber:iq:version'/></iq>")
        .await;
    let version = alice.element().await;
    let name = version
        .get_child("query", "jabber:iq:version")
        .and_then(|q| q.get_child("name", "jabber:iq:version"))
        .map(|n| n.text());
    assert_eq!(name.as_deref(), Some("corvid"));

    alice
        .write("<iq to='localhost' type='get' id='u1'><unknown xmlns='urn:example:nothing'/></iq>")
        .await;
    let error = alice.element().await;
    assert_eq!(
        error_condition(&error).as_deref(),
        Some("service-unavailable")
    );

    alice.write("<iq to='localhost' type='get' id='two'><ping xmlns='urn:xmpp:ping'/><ping xmlns='urn:xmpp:ping'/></iq>").await;
    let error = alice.element().await;
    assert_eq!(error_condition(&error).as_deref(), Some("bad-request"));

    alice
        .write("<iq type='set' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
        .await;
    assert_eq!(alice.element().await.attr("type"), Some("result"));

    alice.write("<iq to='alice@localhost' type='get' id='acc'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    let account = alice.element().await;
    let identity = account
        .get_child("query", corvid::xml::ns::DISCO_INFO)
        .and_then(|q| q.get_child("identity", corvid::xml::ns::DISCO_INFO))
        .expect("account identity");
    assert_eq!(identity.attr("category"), Some("account"));
}

/// Switching to PostgreSQL is one setting; the same server behaviour holds on it.
#[tokio::test]
async fn login_and_offline_delivery_on_postgres() {
    let Some((t, schema)) = start_on_postgres().await else {
        eprintln!("skipped: CORVID_TEST_POSTGRES not set");
        return;
    };
    t.add_user("alice").await;
    t.add_user("bob").await;
    let (mut alice, _) = Raw::login(t.c2s(), t.tls_config(), "alice", "a").await;
    alice.write("<message to='bob@localhost' type='chat' id='pg1'><body>stored in postgres</body></message>").await;
    alice
        .write("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(alice.element().await.attr("id"), Some("sync"));
    let mut bob = t.client("bob", "b", true);
    online(&mut bob).await;
    send(&mut bob, "<presence xmlns='jabber:client'/>").await;
    let got = next_matching(&mut bob, is_message_with_body).await;
    assert_eq!(body(&got), "stored in postgres");
    drop_schema(&schema).await;
}

#[tokio::test]
async fn shutdown_tells_every_session_system_shutdown() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    let (mut alice, _) = Raw::login(t.c2s(), t.tls_config(), "alice", "a").await;
    alice
        .write("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(alice.element().await.attr("id"), Some("p"));
    let TestServer { server, dir, .. } = t;
    server.shutdown().await;
    assert_eq!(alice.stream_error().await, "system-shutdown");
    assert!(alice.closed().await);
    drop(dir);
}

/// Offline storage that takes its time to store: a message being stored while its recipient
/// comes online.
struct SlowPush(
    std::sync::Arc<dyn corvid::storage::OfflineStore>,
    std::sync::Arc<tokio::sync::Notify>,
);

#[async_trait::async_trait]
impl corvid::storage::OfflineStore for SlowPush {
    async fn push(
        &self,
        username: &str,
        msg: &corvid::storage::OfflineMessage,
        cap: u32,
    ) -> corvid::storage::StorageResult<corvid::storage::OfflinePush> {
        self.1.notify_one();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        self.0.push(username, msg, cap).await
    }
    async fn peek(
        &self,
        username: &str,
    ) -> corvid::storage::StorageResult<Vec<corvid::storage::OfflineMessage>> {
        self.0.peek(username).await
    }
    async fn remove_up_to(
        &self,
        username: &str,
        up_to_id: i64,
    ) -> corvid::storage::StorageResult<u64> {
        self.0.remove_up_to(username, up_to_id).await
    }
    async fn count(&self, username: &str) -> corvid::storage::StorageResult<u64> {
        self.0.count(username).await
    }
}

/// A message stored offline at the moment its recipient becomes available is delivered in
/// that session, not left waiting for the next login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_stored_while_the_recipient_comes_online_is_delivered() {
    let storing = std::sync::Arc::new(tokio::sync::Notify::new());
    let signal = storing.clone();
    let server = TestServer::start_custom(
        |_| {},
        move |mut storage| {
            storage.offline = std::sync::Arc::new(SlowPush(storage.offline, signal));
            storage
        },
    )
    .await;
    server.add_user("alice").await;
    server.add_user("bob").await;
    let mut alice = common::xmpp::Session::login(&server, "alice", "phone").await;
    let mut bob = common::xmpp::Session::online(&server, "bob", "pc").await;
    // Alice is bound but not yet available: the message goes to (slow) offline storage...
    bob.send("<message to='alice@localhost' type='chat'><body>racing</body></message>")
        .await;
    storing.notified().await;
    // ...and she becomes available while it is being stored.
    alice.send("<presence/>").await;
    let got = alice
        .expect(|el| el.get_child("body", "jabber:client").is_some())
        .await;
    assert_eq!(
        got.get_child("body", "jabber:client")
            .map(|b| b.text())
            .as_deref(),
        Some("racing")
    );
}
