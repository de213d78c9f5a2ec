//! Several hosted domains behind one router: users of `localhost` and of `b.example` log in to
//! their own domain (each client checking that domain's certificate), chat, subscribe to each
//! other and join each other's MUC service, with no server-to-server hop. Accounts of the same
//! name on two domains are two accounts.

mod common;

use common::xmpp::{error_condition, is_presence, Session};
use common::*;
use corvid::storage::{OfflineMessage, RosterItem, ScramHash, Storage, Subscription};
use minidom::Element;

const B: &str = "b.example";
const MUC: &str = "http://jabber.org/protocol/muc";

async fn server() -> TestServer {
    let t = TestServer::start_with(|config| {
        config
            .hosts
            .insert(B.into(), corvid::config::HostConfig::default());
    })
    .await;
    t.add_user("alice").await;
    t.add_user(&format!("bob@{B}")).await;
    t
}

fn chat(to: &str, text: &str) -> String {
    format!("<message to='{to}' type='chat'><body>{text}</body></message>")
}

fn has_body(el: &Element, text: &str) -> bool {
    el.name() == "message"
        && el.get_child("body", "jabber:client").map(|b| b.text()) == Some(text.into())
}

/// Joins `room` as `nick` and waits for the room's subject, the end of the join.
async fn join(s: &mut Session, room: &str, nick: &str) {
    s.send(&format!(
        "<presence to='{room}/{nick}'><x xmlns='{MUC}'/></presence>"
    ))
    .await;
    loop {
        let el = s.next().await;
        assert_ne!(
            el.attr("type"),
            Some("error"),
            "{}",
            corvid::xml::to_string(&el)
        );
        if el.name() == "message" && el.get_child("subject", "jabber:client").is_some() {
            return;
        }
    }
}

/// Creates `room` as an instant room (XEP-0045 §10.1.2).
async fn create_instant(s: &mut Session, room: &str, nick: &str) {
    join(s, room, nick).await;
    let answer = s
        .iq(&format!(
            "<iq to='{room}' type='set'><query xmlns='{MUC}#owner'>\
             <x xmlns='jabber:x:data' type='submit'/></query></iq>"
        ))
        .await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
}

#[tokio::test]
async fn users_of_two_hosted_domains_chat_subscribe_and_meet_in_each_others_rooms() {
    let t = server().await;
    let mut alice = Session::online_on(&t, DOMAIN, "alice", "pc").await;
    let mut bob = Session::online_on(&t, B, "bob", "phone").await;
    assert_eq!(alice.jid, "alice@localhost/pc");
    assert_eq!(bob.jid, "bob@b.example/phone");

    // 1:1 both ways.
    alice.send(&chat("bob@b.example", "hello b")).await;
    let got = bob.expect(|el| has_body(el, "hello b")).await;
    assert_eq!(got.attr("from"), Some("alice@localhost/pc"));
    bob.send(&chat("alice@localhost", "hello a")).await;
    let got = alice.expect(|el| has_body(el, "hello a")).await;
    assert_eq!(got.attr("from"), Some("bob@b.example/phone"));

    // Subscription both ways, then each sees the other's presence (RFC 6121 §3, §4).
    alice
        .send("<presence type='subscribe' to='bob@b.example'/>")
        .await;
    bob.expect(|el| is_presence(el, Some("subscribe"), "alice@localhost"))
        .await;
    bob.send("<presence type='subscribed' to='alice@localhost'/>")
        .await;
    alice
        .expect(|el| is_presence(el, None, "bob@b.example/phone"))
        .await;
    bob.send("<presence type='subscribe' to='alice@localhost'/>")
        .await;
    alice
        .expect(|el| is_presence(el, Some("subscribe"), "bob@b.example"))
        .await;
    alice
        .send("<presence type='subscribed' to='bob@b.example'/>")
        .await;
    bob.expect(|el| is_presence(el, None, "alice@localhost/pc"))
        .await;
    for (user, contact) in [
        ("alice@localhost", "bob@b.example"),
        ("bob@b.example", "alice@localhost"),
    ] {
        let item = t
            .storage()
            .roster
            .roster_item(user, contact)
            .await
            .expect("read")
            .expect("item");
        assert_eq!(
            item.subscription,
            corvid::storage::Subscription::Both,
            "{user}"
        );
    }

    // Each domain lists its own MUC service, and each user joins a room of the other's.
    let items = bob
        .iq("<iq to='b.example' type='get'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
        .await;
    let listed: Vec<_> = items
        .get_child("query", "http://jabber.org/protocol/disco#items")
        .expect("query")
        .children()
        .filter_map(|item| item.attr("jid"))
        .collect();
    assert!(listed.contains(&"conference.b.example"), "{listed:?}");
    assert!(!listed.contains(&"conference.localhost"), "{listed:?}");

    for (room, first, second) in [
        ("lobby@conference.b.example", 0, 1),
        ("hall@conference.localhost", 1, 0),
    ] {
        let people = [&mut alice, &mut bob];
        create_instant(people[first], room, "first").await;
        join(people[second], room, "second").await;
        people[first]
            .send(&format!(
                "<message to='{room}' type='groupchat'><body>in {room}</body></message>"
            ))
            .await;
        let text = format!("in {room}");
        let got = people[second].expect(|el| has_body(el, &text)).await;
        assert_eq!(got.attr("from"), Some(format!("{room}/first").as_str()));
    }
}

#[tokio::test]
async fn the_same_name_on_two_domains_is_two_accounts() {
    let t = server().await;
    t.add_user_with_password("carol", "carol-a").await;
    t.add_user_with_password(&format!("carol@{B}"), "carol-b")
        .await;

    // Each password opens its own domain's account only.
    for (domain, right, wrong) in [(DOMAIN, "carol-a", "carol-b"), (B, "carol-b", "carol-a")] {
        for (password, outcome) in [(right, "success"), (wrong, "failure")] {
            let tls = pinned_tls_config(t.cert_der_of(domain), vec![]);
            let mut raw = Raw::connect(t.c2s())
                .await
                .starttls_to(tls, domain, "")
                .await;
            raw.write(&open_to(domain)).await;
            let _features = raw.element().await;
            raw.auth_plain("carol", password).await;
            assert_eq!(
                raw.element().await.name(),
                outcome,
                "carol@{domain} with {password}"
            );
        }
    }

    // A message to dave@b.example reaches his session there, not dave@localhost's.
    t.add_user("dave").await;
    t.add_user(&format!("dave@{B}")).await;
    let mut a = Session::online_on(&t, DOMAIN, "dave", "r").await;
    let mut b = Session::online_on(&t, B, "dave", "r").await;
    let mut bob = Session::online_on(&t, B, "bob", "r").await;
    bob.send(&chat("dave@b.example", "for b")).await;
    b.expect(|el| has_body(el, "for b")).await;
    let marker = Session::marker();
    bob.send_marker("dave@localhost", &marker).await;
    let at_a = a.until_marker(&marker).await;
    assert!(!at_a.iter().any(|el| has_body(el, "for b")), "{at_a:?}");
}

#[tokio::test]
async fn a_stream_to_a_domain_not_hosted_here_is_host_unknown() {
    let t = server().await;
    let mut raw = Raw::connect(t.c2s()).await;
    raw.write(&open_to("c.example")).await;
    assert_eq!(raw.stream_error().await, "host-unknown");

    // A restarted stream keeps its domain: after STARTTLS to b.example, a header naming
    // localhost is refused rather than switching accounts' domains mid-stream.
    let tls = pinned_tls_config(t.cert_der_of(B), vec![]);
    let mut raw = Raw::connect(t.c2s()).await.starttls_to(tls, B, "").await;
    raw.write(OPEN).await;
    assert_eq!(raw.stream_error().await, "host-unknown");
}

#[tokio::test]
async fn offline_messages_wait_for_a_user_of_another_hosted_domain() {
    let t = server().await;
    let mut alice = Session::online_on(&t, DOMAIN, "alice", "pc").await;
    alice
        .send(&chat("bob@b.example", "while you were out"))
        .await;
    // Nothing comes back: stored, not bounced.
    let marker = Session::marker();
    alice.send_marker("alice@localhost", &marker).await;
    let back = alice.until_marker(&marker).await;
    assert!(
        !back.iter().any(|el| error_condition(el).is_some()),
        "{back:?}"
    );
    let mut bob = Session::login_on(&t, B, "bob", "phone").await;
    bob.send("<presence/>").await;
    let got = bob.expect(|el| has_body(el, "while you were out")).await;
    let delay = got.get_child("delay", "urn:xmpp:delay").expect("delay");
    assert_eq!(delay.attr("from"), Some(B), "stamped by bob's own domain");
}

/// What a single-domain release stored for its users: everything keyed by the localpart.
async fn write_as_a_single_domain_release(storage: Storage) {
    let creds: Vec<_> = [ScramHash::Sha1, ScramHash::Sha256]
        .into_iter()
        .map(|h| corvid::sasl::derive_credentials(PASSWORD, h, 4096).expect("derive"))
        .collect();
    for user in ["alice", "bob"] {
        storage
            .accounts
            .create_account(user, &creds)
            .await
            .expect("account");
    }
    let mut item = RosterItem::new("bob@localhost");
    item.subscription = Subscription::Both;
    storage
        .roster
        .put_roster_item("alice", &item, 100)
        .await
        .expect("roster");
    let waiting = OfflineMessage {
        id: 1,
        received_at_ms: 1_700_000_000_000,
        stanza: "<message xmlns='jabber:client' from='bob@localhost/x' to='alice@localhost' \
                 type='chat'><body>kept across the upgrade</body></message>"
            .into(),
    };
    storage
        .offline
        .push("alice", &waiting, 100)
        .await
        .expect("offline");
}

/// After the upgrade: alice logs in with her password, her roster and her offline message are
/// there, and a second hosted domain can be added to the same database.
async fn users_of_the_earlier_release_carry_on(t: &TestServer) {
    let mut alice = Session::login(t, "alice", "pc").await;
    let roster = alice.roster_get().await;
    let contacts: Vec<_> = roster
        .get_child("query", "jabber:iq:roster")
        .expect("query")
        .children()
        .filter_map(|item| item.attr("jid"))
        .collect();
    assert_eq!(contacts, ["bob@localhost"]);
    alice.send("<presence/>").await;
    alice
        .expect(|el| has_body(el, "kept across the upgrade"))
        .await;
    let mut bob = Session::online(t, "bob", "phone").await;
    bob.send(&chat("alice@localhost", "still here")).await;
    alice.expect(|el| has_body(el, "still here")).await;
    let accounts = t.storage().accounts.list_accounts().await.expect("list");
    assert_eq!(accounts, ["alice@localhost", "bob@localhost"]);
}

#[tokio::test]
async fn a_single_domain_sqlite_database_is_upgraded_and_its_users_log_in() {
    let earlier = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", earlier.path().join("corvid.db").display());
    let storage = Storage::open(&url).await.expect("open");
    write_as_a_single_domain_release(storage.clone()).await;
    storage.close().await;
    let t = TestServer::start_with(|config| config.storage.url = url).await;
    users_of_the_earlier_release_carry_on(&t).await;
}

#[tokio::test]
async fn a_single_domain_postgres_database_is_upgraded_and_its_users_log_in() {
    let Some((t, schema)) = start_on_postgres_after(write_as_a_single_domain_release).await else {
        println!("skipped: CORVID_TEST_POSTGRES not set");
        return;
    };
    users_of_the_earlier_release_carry_on(&t).await;
    drop_schema(&schema).await;
}

/// The host-meta document as served to a request naming `host` in its `Host` header.
async fn host_meta(t: &TestServer, host: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(t.http())
        .await
        .expect("connect");
    let request =
        format!("GET /.well-known/host-meta HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.expect("request");
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.expect("answer");
    answer
}

/// XEP-0156: host-meta asked for `b.example` announces the WebSocket endpoint under that
/// domain, so a web client of b.example connects to a name its certificate covers.
#[tokio::test]
async fn host_meta_names_the_domain_it_was_asked_for() {
    let t = server().await;
    let https_port = t.server.https_addr.expect("https").port();
    for (host, expected) in [
        ("b.example", B),
        ("B.Example:5280", B),
        ("localhost", DOMAIN),
        ("elsewhere.example", DOMAIN),
    ] {
        let answer = host_meta(&t, host).await;
        let href = format!("href='wss://{expected}:{https_port}/xmpp-websocket'");
        assert!(answer.contains(&href), "Host {host}: {answer}");
    }
}

/// An internationalized hosted domain is configured in U-labels, but a `Host` header carries
/// only A-labels: host-meta asked for `xn--bcher-kva.example` answers for `bücher.example`, with
/// the URL's host in A-labels.
#[tokio::test]
async fn host_meta_matches_an_internationalized_domain_by_its_a_label() {
    let t = TestServer::start_with(|config| {
        config.hosts.insert(
            "bücher.example".into(),
            corvid::config::HostConfig::default(),
        );
    })
    .await;
    let https_port = t.server.https_addr.expect("https").port();
    for (host, expected) in [
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("XN--BCHER-KVA.example:5280", "xn--bcher-kva.example"),
        ("xn--bcher-kvb.example", DOMAIN),
    ] {
        let answer = host_meta(&t, host).await;
        let href = format!("href='wss://{expected}:{https_port}/xmpp-websocket'");
        assert!(answer.contains(&href), "Host {host}: {answer}");
    }
}

/// `[hosts."b.example".limits]` applies to b.example's accounts only; the main domain's keep
/// `[limits]`: one resource and one offline message per account on b.example, the defaults on
/// localhost.
#[tokio::test]
async fn a_hosted_domain_sets_its_own_account_limits() {
    let t = TestServer::start_with(|config| {
        let mut host = corvid::config::HostConfig::default();
        host.limits.max_resources_per_account = Some(1);
        host.limits.offline_messages_per_user = Some(1);
        config.hosts.insert(B.into(), host);
    })
    .await;
    for user in ["alice", "dave"] {
        t.add_user(user).await;
    }
    for user in ["bob", "carol"] {
        t.add_user(&format!("{user}@{B}")).await;
    }
    let b_tls = pinned_tls_config(t.cert_der_of(B), vec![]);

    let _first = Raw::login_on(t.c2s(), b_tls.clone(), B, "bob", "one").await;
    let (mut second, _) = Raw::authenticated_on(t.c2s(), b_tls, B, "bob").await;
    second
        .write(
            "<iq type='set' id='b2'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>two</resource></bind></iq>",
        )
        .await;
    let refused = second.element().await;
    assert_eq!(refused.attr("type"), Some("error"), "{refused:?}");
    assert_eq!(
        error_condition(&refused).as_deref(),
        Some("resource-constraint")
    );
    let (mut alice, _) = Raw::login(t.c2s(), t.tls_config(), "alice", "one").await;
    let _alice_two = Raw::login(t.c2s(), t.tls_config(), "alice", "two").await;

    for (to, id) in [
        (format!("carol@{B}"), "c1"),
        (format!("carol@{B}"), "c2"),
        ("dave@localhost".to_owned(), "d1"),
        ("dave@localhost".to_owned(), "d2"),
    ] {
        alice
            .write(&format!(
                "<message to='{to}' type='chat' id='{id}'><body>{id}</body></message>"
            ))
            .await;
    }
    let error = alice.element().await;
    assert_eq!(error.attr("id"), Some("c2"), "{error:?}");
    assert_eq!(
        error_condition(&error).as_deref(),
        Some("service-unavailable")
    );
    // The session handles its stanzas in order: once the ping is answered, both of dave's
    // messages have been stored.
    alice
        .write("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let pong = alice.element().await;
    assert_eq!(pong.attr("id"), Some("p"), "{pong:?}");
    let offline = &t.storage().offline;
    assert_eq!(offline.count(&format!("carol@{B}")).await.unwrap(), 1);
    assert_eq!(offline.count("dave@localhost").await.unwrap(), 2);
}
