//! Storage failing under traffic, over real sockets: PostgreSQL stopped and started again (a
//! private instance, see `common::private_postgres`), a SQLite database another process holds
//! locked, and a SQLite database the operating system refuses to write. In each: clients get
//! clear errors (`internal-server-error` of type `wait`, a login `<temporary-auth-failure/>`),
//! no connection is closed, live chat goes on, and once storage is back the service works
//! again without a restart and the archive holds every message exactly once, in order.

mod common;

use std::time::Duration;

use common::private_postgres::PrivatePostgres;
use common::xmpp::{error_condition, Session};
use common::{TestServer, DOMAIN, OPEN, PASSWORD};
use minidom::Element;

const MAM: &str = "urn:xmpp:mam:2";
const FORWARD: &str = "urn:xmpp:forward:0";
const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";

/// Storage operations give up after this; short so that each failing step is quick.
const STORAGE_TIMEOUT_MS: u64 = 1500;

fn jid(user: &str) -> String {
    format!("{user}@{DOMAIN}")
}

fn body_of(el: &Element) -> Option<String> {
    el.get_child("body", "jabber:client").map(|b| b.text())
}

fn error_type(el: &Element) -> Option<String> {
    el.get_child("error", "jabber:client")
        .and_then(|e| e.attr("type"))
        .map(str::to_owned)
}

/// `from` sends `body` to `to`'s bare JID; `to` receives it live.
async fn chat(from: &mut Session, to: &mut Session, body: &str) {
    let bare = to.bare().to_owned();
    from.send(&format!(
        "<message to='{bare}' type='chat'><body>{body}</body></message>"
    ))
    .await;
    let got = to
        .expect(|el| el.name() == "message" && body_of(el).as_deref() == Some(body))
        .await;
    assert_eq!(got.attr("type"), Some("chat"), "{got:?}");
}

/// A message to a user whose offline store fails comes back as an error saying so.
async fn offline_store_fails_clearly(from: &mut Session, to: &str, body: &str) {
    from.send(&format!(
        "<message to='{to}' type='chat' id='{body}'><body>{body}</body></message>"
    ))
    .await;
    let bounced = from
        .expect(|el| el.name() == "message" && el.attr("id") == Some(body))
        .await;
    assert_eq!(bounced.attr("type"), Some("error"), "{bounced:?}");
    assert_eq!(
        error_condition(&bounced).as_deref(),
        Some("internal-server-error"),
        "{bounced:?}"
    );
    assert_eq!(error_type(&bounced).as_deref(), Some("wait"), "{bounced:?}");
}

/// An IQ that needs storage answered with `internal-server-error` of type `wait`.
async fn iq_fails_clearly(s: &mut Session, iq: &str) {
    let answer = s.iq(iq).await;
    assert_eq!(answer.attr("type"), Some("error"), "{answer:?}");
    assert_eq!(
        error_condition(&answer).as_deref(),
        Some("internal-server-error"),
        "{answer:?}"
    );
    assert_eq!(error_type(&answer).as_deref(), Some("wait"), "{answer:?}");
}

const VCARD_SET: &str = "<iq type='set'><vCard xmlns='vcard-temp'><FN>Alice</FN></vCard></iq>";

/// PLAIN on a fresh connection: the `<success/>` or `<failure/>` the server answers.
async fn sasl_answer(server: &TestServer, user: &str) -> Element {
    let mut raw = common::Raw::connect(server.c2s())
        .await
        .starttls(server.tls_config())
        .await;
    raw.write(OPEN).await;
    let _features = raw.element().await;
    raw.auth_plain(user, PASSWORD).await;
    raw.element().await
}

async fn login_fails_temporarily(server: &TestServer, user: &str) {
    let answer = sasl_answer(server, user).await;
    assert!(answer.is("failure", SASL), "{answer:?}");
    assert!(
        answer.has_child("temporary-auth-failure", SASL),
        "a storage failure is temporary: {answer:?}"
    );
}

/// Logs in once storage answers again; the attempts before may fail temporarily.
async fn login_works_again(server: &TestServer, user: &str, resource: &str) -> Session {
    for _ in 0..50 {
        let answer = sasl_answer(server, user).await;
        if answer.is("success", SASL) {
            return Session::login(server, user, resource).await;
        }
        assert!(
            answer.has_child("temporary-auth-failure", SASL),
            "{answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{user} cannot log in after storage came back");
}

/// The bodies of `s`'s archived conversation with `with`, oldest first, once the archive
/// answers (while its writer still catches up, queries are refused with type `wait`).
async fn archived_bodies(s: &mut Session, with: &str) -> Vec<String> {
    for attempt in 0..100 {
        let qid = format!("sf{attempt}");
        let id = format!("mam-{attempt}");
        s.send(&format!(
            "<iq type='set' id='{id}'><query xmlns='{MAM}' queryid='{qid}'>\
             <x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>{MAM}</value></field>\
             <field var='with'><value>{with}</value></field></x>\
             <set xmlns='http://jabber.org/protocol/rsm'><max>250</max></set></query></iq>"
        ))
        .await;
        let mut bodies = Vec::new();
        let answer = loop {
            let el = s.next().await;
            if el.name() == "iq" && el.attr("id") == Some(id.as_str()) {
                break el;
            }
            let Some(result) = el.get_child("result", MAM) else {
                continue;
            };
            assert_eq!(result.attr("queryid"), Some(qid.as_str()));
            let message = result
                .get_child("forwarded", FORWARD)
                .and_then(|f| f.get_child("message", "jabber:client"))
                .expect("archived message");
            bodies.push(body_of(message).unwrap_or_default());
        };
        if answer.attr("type") == Some("result") {
            let fin = answer.get_child("fin", MAM).expect("fin");
            assert_eq!(fin.attr("complete"), Some("true"), "one page holds it all");
            return bodies;
        }
        assert_eq!(error_type(&answer).as_deref(), Some("wait"), "{answer:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the archive never answered after storage came back");
}

/// Alice and Bob online with each other, Carol offline; one message each way, so archives
/// and caches are warm as on a running server.
async fn conversation(server: &TestServer) -> (Session, Session, Vec<String>) {
    for user in ["alice", "bob", "carol"] {
        server.add_user(user).await;
    }
    server.make_mutual("alice", "bob").await;
    server.make_mutual("alice", "carol").await;
    let mut alice = Session::online(server, "alice", "a").await;
    let mut bob = Session::online(server, "bob", "b").await;
    chat(&mut alice, &mut bob, "before-1").await;
    chat(&mut bob, &mut alice, "before-2").await;
    (alice, bob, vec!["before-1".into(), "before-2".into()])
}

/// Live chat while storage fails: every message is delivered, in both directions.
async fn chat_during_outage(
    alice: &mut Session,
    bob: &mut Session,
    sent: &mut Vec<String>,
    tag: &str,
) {
    for i in 1..=4 {
        let body = format!("{tag}-a{i}");
        chat(alice, bob, &body).await;
        sent.push(body);
        let body = format!("{tag}-b{i}");
        chat(bob, alice, &body).await;
        sent.push(body);
    }
}

/// Keeps storage away a while longer. The test passes however long this is; it is there so
/// that the outage outlasts a writer that retries a few times and then drops the batch (as
/// the archive writer once did: three attempts, 300 ms of pauses), which then fails the test.
async fn prolong_outage(how_long: Duration) {
    tokio::time::sleep(how_long).await;
}

/// After recovery: both archives hold the whole conversation once, in order, and the
/// sessions that lived through the outage still chat.
async fn archives_complete(alice: &mut Session, bob: &mut Session, sent: &[String]) {
    assert_eq!(archived_bodies(alice, &jid("bob")).await, sent);
    assert_eq!(archived_bodies(bob, &jid("alice")).await, sent);
    chat(alice, bob, "after").await;
}

#[tokio::test]
async fn postgres_stopped_during_traffic_then_back() {
    let Some(mut pg) = PrivatePostgres::start().await else {
        return;
    };
    let url = pg.url();
    let server = TestServer::start_full(
        |c| {
            c.storage.url = url;
            c.storage.timeout_ms = STORAGE_TIMEOUT_MS;
        },
        |s| s,
        Vec::new(),
    )
    .await;
    let (mut alice, mut bob, mut sent) = conversation(&server).await;

    pg.stop().await;
    chat_during_outage(&mut alice, &mut bob, &mut sent, "down").await;
    offline_store_fails_clearly(&mut alice, &jid("carol"), "to-carol").await;
    login_fails_temporarily(&server, "carol").await;
    iq_fails_clearly(&mut alice, VCARD_SET).await;
    // The archive writer holds what it could not commit: a query cannot see it yet.
    iq_fails_clearly(
        &mut alice,
        &format!("<iq type='set'><query xmlns='{MAM}'/></iq>"),
    )
    .await;
    // Nobody was disconnected: both still chat.
    chat(&mut bob, &mut alice, "still-up").await;
    sent.push("still-up".into());

    pg.restart().await;
    let mut carol = login_works_again(&server, "carol", "c").await;
    let answer = alice.iq(VCARD_SET).await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    archives_complete(&mut alice, &mut bob, &sent).await;
    offline_store_works(&mut alice, &mut carol).await;
    server.server.shutdown().await;
}

/// A connection of another process to the server's SQLite file.
async fn other_process(server: &TestServer) -> sqlx::SqliteConnection {
    use sqlx::ConnectOptions;
    sqlx::sqlite::SqliteConnectOptions::new()
        .filename(server.db_path())
        .connect()
        .await
        .expect("second connection")
}

#[tokio::test]
async fn sqlite_locked_by_another_process_then_released() {
    let server = TestServer::start_with(|c| c.storage.timeout_ms = STORAGE_TIMEOUT_MS).await;
    let (mut alice, mut bob, mut sent) = conversation(&server).await;
    let mut other = other_process(&server).await;

    // A lock held briefly is waited out (busy timeout), not reported as a failure.
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut other)
        .await
        .expect("lock");
    alice
        .send("<iq type='set' id='brief'><vCard xmlns='vcard-temp'><FN>A</FN></vCard></iq>")
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    sqlx::query("COMMIT")
        .execute(&mut other)
        .await
        .expect("unlock");
    let answer = alice
        .expect(|el| el.name() == "iq" && el.attr("id") == Some("brief"))
        .await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");

    // Held for good: writes fail clearly, live chat goes on.
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut other)
        .await
        .expect("lock");
    chat_during_outage(&mut alice, &mut bob, &mut sent, "locked").await;
    offline_store_fails_clearly(&mut alice, &jid("carol"), "to-carol").await;
    iq_fails_clearly(&mut alice, VCARD_SET).await;
    iq_fails_clearly(
        &mut alice,
        &format!("<iq type='set'><query xmlns='{MAM}'/></iq>"),
    )
    .await;
    // Reading does not need the write lock (WAL): logins keep working.
    let mut carol = Session::login(&server, "carol", "c").await;
    chat(&mut bob, &mut alice, "still-up").await;
    sent.push("still-up".into());
    // Each failed attempt waits out the busy timeout first: three take 4.5 s here.
    prolong_outage(Duration::from_secs(5)).await;

    sqlx::query("COMMIT")
        .execute(&mut other)
        .await
        .expect("unlock");
    let answer = alice.iq(VCARD_SET).await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    archives_complete(&mut alice, &mut bob, &sent).await;
    offline_store_works(&mut alice, &mut carol).await;
    server.server.shutdown().await;
}

/// Sets or clears the immutable attribute (which even root cannot write through) on the
/// database file and its write-ahead log; false if the file system does not support it.
async fn immutable(files: &[std::path::PathBuf], on: bool) -> bool {
    let status = tokio::process::Command::new("chattr")
        .arg(if on { "+i" } else { "-i" })
        .args(files)
        .status()
        .await;
    matches!(status, Ok(s) if s.success())
}

#[tokio::test]
async fn sqlite_read_only_then_writable_again() {
    let server = TestServer::start_with(|c| c.storage.timeout_ms = STORAGE_TIMEOUT_MS).await;
    let (mut alice, mut bob, mut sent) = conversation(&server).await;
    // Not the shared memory index (`-shm`): SQLite maps it, and a mapped file turning
    // immutable is a SIGBUS, not a refused write.
    let db = server.db_path();
    let wal = db.with_extension("db-wal");
    assert!(wal.exists(), "the database is in WAL mode");
    let files = [db, wal];
    if !immutable(&files, true).await {
        eprintln!("skipped: chattr +i is not supported here");
        return;
    }
    // Whatever happens below, the files are made writable again (the temp dir is removed).
    struct Writable([std::path::PathBuf; 2]);
    impl Drop for Writable {
        fn drop(&mut self) {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .args(&self.0)
                .status();
        }
    }
    let guard = Writable(files.clone());

    chat_during_outage(&mut alice, &mut bob, &mut sent, "read-only").await;
    offline_store_fails_clearly(&mut alice, &jid("carol"), "to-carol").await;
    iq_fails_clearly(&mut alice, VCARD_SET).await;
    chat(&mut bob, &mut alice, "still-up").await;
    sent.push("still-up".into());
    prolong_outage(Duration::from_secs(1)).await;

    assert!(immutable(&files, false).await, "chattr -i");
    drop(guard);
    let answer = alice.iq(VCARD_SET).await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    archives_complete(&mut alice, &mut bob, &sent).await;
    let mut carol = Session::login(&server, "carol", "c").await;
    offline_store_works(&mut alice, &mut carol).await;
    server.server.shutdown().await;
}

/// A message to Carol, logged in but not yet available, is stored offline again (no error
/// comes back) and reaches her with her initial presence.
async fn offline_store_works(alice: &mut Session, carol: &mut Session) {
    alice
        .send(&format!(
            "<message to='{}' type='chat' id='later'><body>later</body></message>",
            jid("carol")
        ))
        .await;
    let before = alice.drain().await;
    assert!(
        !before.iter().any(|el| el.attr("id") == Some("later")),
        "{before:?}"
    );
    carol.send("<presence/>").await;
    let stored = carol
        .expect(|el| el.name() == "message" && body_of(el).as_deref() == Some("later"))
        .await;
    assert!(stored.has_child("delay", "urn:xmpp:delay"), "{stored:?}");
}
