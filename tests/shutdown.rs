//! Shutdown and restart lose nothing (issue 15), over real sockets: what was queued for a
//! session, what a stream-management client never acknowledged, what waited in a detached
//! session and what was routed while the server was going down all reach offline storage,
//! once, with delay stamps; the archive has every row; a resume on the restarted server fails
//! and the fresh login gets the messages. The last test sends SIGTERM to the real binary.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use corvid::stanza::Kind;
use corvid::storage::ArchiveQuery;
use minidom::Element;

const SM: &str = "urn:xmpp:sm:3";
const DELAY: &str = "urn:xmpp:delay";

/// A raw client that counts the stanzas it reads (its XEP-0198 `h`) and keeps the bodies.
struct Reader {
    raw: Raw,
    jid: String,
    h: u32,
    bodies: Vec<String>,
}

impl Reader {
    async fn login(t: &TestServer, user: &str, resource: &str) -> Reader {
        let (raw, jid) = Raw::login(t.c2s(), t.tls_config(), user, resource).await;
        Reader {
            raw,
            jid,
            h: 0,
            bodies: Vec::new(),
        }
    }

    /// Enables resumable stream management; returns the resumption id.
    async fn enable_sm(&mut self) -> String {
        self.raw
            .write(&format!("<enable xmlns='{SM}' resume='true'/>"))
            .await;
        let enabled = self.raw.element().await;
        assert!(enabled.is("enabled", SM), "{enabled:?}");
        enabled.attr("id").expect("resumable").to_string()
    }

    async fn next(&mut self) -> Element {
        let el = self.raw.element().await;
        if el.ns() == "jabber:client" {
            self.h += 1;
            if is_message_with_body(&el) {
                self.bodies.push(body(&el));
            }
        }
        el
    }

    async fn until_body(&mut self, wanted: &str) {
        while self.bodies.last().map(String::as_str) != Some(wanted) {
            self.next().await;
        }
    }

    /// A round trip: everything the server routed for this client's earlier stanzas is
    /// queued before the answer.
    async fn ping(&mut self, id: &str) {
        self.raw
            .write(&format!(
                "<iq type='get' id='{id}'><ping xmlns='urn:xmpp:ping'/></iq>"
            ))
            .await;
        loop {
            let el = self.next().await;
            if el.name() == "iq" && el.attr("id") == Some(id) {
                return;
            }
        }
    }

    async fn chat(&mut self, to: &str, text: &str) {
        self.raw
            .write(&format!(
                "<message to='{to}@localhost' type='chat'><body>{text}</body></message>"
            ))
            .await;
    }
}

fn bodies(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:03}")).collect()
}

/// The stored offline messages of `user`: bodies in order, and each one has a delay stamp.
async fn offline_bodies(t: &TestServer, user: &str) -> Vec<String> {
    let stored = t
        .storage()
        .offline
        .peek(&account(user))
        .await
        .expect("peek");
    stored
        .iter()
        .map(|m| {
            let el: Element = m.stanza.parse().expect("stored stanza parses");
            assert!(el.has_child("delay", DELAY), "no delay stamp: {el:?}");
            body(&el)
        })
        .collect()
}

/// How often each body occurs in `owner`'s archive.
async fn archived(t: &TestServer, owner: &str) -> HashMap<String, usize> {
    let query = ArchiveQuery {
        filter: Default::default(),
        limit: 10_000,
        backward: false,
    };
    let page = t
        .storage()
        .archive
        .archive_query(&format!("{owner}@localhost"), &query)
        .await
        .expect("archive query");
    let mut counts = HashMap::new();
    for row in page.rows {
        let el: Element = row.stanza.parse().expect("archived stanza parses");
        *counts.entry(body(&el)).or_insert(0) += 1;
    }
    counts
}

fn assert_archived_once(archive: &HashMap<String, usize>, expected: &[String], owner: &str) {
    for text in expected {
        assert_eq!(
            archive.get(text).copied(),
            Some(1),
            "{owner}'s archive has {text} {:?} times",
            archive.get(text)
        );
    }
}

/// A big body, so that a client that reads nothing soon has the server's writes blocked.
fn big(text: &str) -> String {
    format!("{text} {}", "x".repeat(100 * 1024))
}

/// A login's time waits in memory for up to a second before it is written
/// (`storage::login_times`); a shutdown right after the login still writes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_time_not_yet_written_is_written_by_the_shutdown() {
    let first = TestServer::start().await;
    first.add_user("alice").await;
    let (_alice, _jid) = Raw::login(first.c2s(), first.tls_config(), "alice", "desk").await;
    let db = first.db_path();
    let TestServer { server, dir, .. } = first;
    server.shutdown().await;
    let url = format!("sqlite://{}", db.display());
    let second = TestServer::start_with(|c| c.storage.url = url).await;
    let at = second.storage().admin.last_login(&account("alice")).await;
    assert!(at.expect("read").is_some(), "the login time was lost");
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_queued_unacknowledged_detached_or_late_is_lost_across_a_restart() {
    // Alice sends dave 12 MB on purpose, to fill his queue: unshaped, or the default 64 KiB/s
    // would hold her back for minutes.
    let first = TestServer::start_with(|c| c.limits.bytes_rate_per_session = 0).await;
    for user in ["alice", "bob", "carol", "dave", "erin"] {
        first.add_user(user).await;
    }
    let mut alice = Reader::login(&first, "alice", "desk").await;

    // (b) bob has stream management, acknowledges the first message only.
    let mut bob = Reader::login(&first, "bob", "phone").await;
    let bob_previd = bob.enable_sm().await;
    bob.raw.write("<presence/>").await;
    bob.ping("b-online").await;
    alice.chat("bob", "b000").await;
    bob.until_body("b000").await;
    bob.raw
        .write(&format!("<a xmlns='{SM}' h='{}'/><r xmlns='{SM}'/>", bob.h))
        .await;
    while !bob.next().await.is("a", SM) {}
    for text in &bodies("b", 3)[1..] {
        alice.chat("bob", text).await;
    }
    bob.until_body("b002").await;

    // (c) carol's session is detached, messages wait in it.
    let mut carol = Reader::login(&first, "carol", "phone").await;
    let carol_previd = carol.enable_sm().await;
    carol.raw.write("<presence/>").await;
    carol.ping("c-online").await;
    let carol_jid = jid::FullJid::new(&carol.jid).expect("jid");
    drop(carol);
    for _ in 0..1000 {
        if first.server.ctx.router.is_detached(&carol_jid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(first.server.ctx.router.is_detached(&carol_jid));
    for text in bodies("c", 3) {
        alice.chat("carol", &text).await;
    }

    // (a) dave reads nothing: the server's writes to him block and the rest stays queued.
    let mut dave = Reader::login(&first, "dave", "desk").await;
    dave.raw.write("<presence/>").await;
    dave.ping("d-online").await;
    let dave_sent = bodies("d", 120);
    for text in &dave_sent {
        alice.chat("dave", &big(text)).await;
    }

    // erin is online and reads; she only gets messages routed during the shutdown window.
    let mut erin = Reader::login(&first, "erin", "desk").await;
    erin.raw.write("<presence/>").await;
    erin.ping("e-online").await;
    alice.ping("all-routed").await;

    // (e) the sessions have been told; messages routed now must not be lost either.
    let router = first.server.ctx.router.clone();
    router.shutdown_all();
    for (to, text) in [("erin", "e000"), ("bob", "b003"), ("dave", "late000")] {
        let message: Element = format!(
            "<message xmlns='jabber:client' from='alice@localhost/desk' to='{to}@localhost' type='chat'><body>{text}</body></message>"
        )
        .parse()
        .expect("message");
        let to = jid::Jid::new(&format!("{to}@localhost")).expect("jid");
        router.route(Kind::Message, to, message).await;
    }
    drop(router);

    let db = first.db_path();
    let ctx = first.server.ctx.clone();
    let TestServer { server, dir, .. } = first;
    server.shutdown().await;
    // In a real process the runtime ends here: a session still bound would lose its queue.
    assert_eq!(
        ctx.router.online_session_count(),
        0,
        "sessions outlived shutdown"
    );
    assert!(
        ctx.resumption.is_empty(),
        "resumable sessions outlived shutdown"
    );
    drop(ctx);

    // A stream-management session is told to reconnect.
    assert_eq!(bob.raw.stream_error().await, "system-shutdown");
    // Whatever dave's socket still held reached him; the rest must be stored.
    while let Some(frame) = dave.raw.frame().await {
        if let corvid::xml::Frame::Element(el) = frame {
            if is_message_with_body(&el) {
                dave.bodies.push(body(&el));
            }
        }
    }

    let url = format!("sqlite://{}", db.display());
    let second = TestServer::start_with(|c| c.storage.url = url).await;

    assert_eq!(
        offline_bodies(&second, "bob").await,
        ["b001", "b002", "b003"]
    );
    assert_eq!(offline_bodies(&second, "erin").await, ["e000"]);
    let dave_stored = offline_bodies(&second, "dave").await;
    assert!(
        !dave_stored.is_empty(),
        "dave's queue was never blocked; the test did not exercise case (a)"
    );
    eprintln!(
        "dave read {} messages before the restart; {} were stored",
        dave.bodies.len(),
        dave_stored.len()
    );
    let first_word = |b: &String| b.split(' ').next().unwrap_or_default().to_string();
    let mut dave_expected = dave_sent.clone();
    dave_expected.push("late000".into());
    let mut stored_once: Vec<String> = dave_stored.iter().map(first_word).collect();
    stored_once.sort();
    stored_once.dedup();
    assert_eq!(stored_once.len(), dave_stored.len(), "stored twice");
    // Without stream management nobody knows what of the batch being written when the
    // connection closed reached the client: those few may come twice, none may be missing.
    let mut dave_all: Vec<String> = dave
        .bodies
        .iter()
        .chain(&dave_stored)
        .map(first_word)
        .collect();
    dave_all.sort();
    dave_all.dedup();
    dave_expected.sort();
    assert_eq!(dave_all, dave_expected);

    // Every message is in its recipient's archive exactly once.
    assert_archived_once(&archived(&second, "bob").await, &bodies("b", 4), "bob");
    assert_archived_once(&archived(&second, "carol").await, &bodies("c", 3), "carol");
    assert_archived_once(&archived(&second, "erin").await, &bodies("e", 1), "erin");
    let dave_archive: HashMap<String, usize> = archived(&second, "dave")
        .await
        .into_iter()
        .map(|(b, n)| (b.split(' ').next().unwrap_or_default().to_string(), n))
        .collect();
    assert_archived_once(&dave_archive, &dave_expected, "dave");

    // Resumption state did not survive: <failed/>, then a fresh login gets carol's messages.
    for (user, previd, expected) in [
        ("carol", carol_previd, bodies("c", 3)),
        (
            "bob",
            bob_previd,
            vec!["b001".into(), "b002".into(), "b003".into()],
        ),
    ] {
        let (mut raw, _) = Raw::authenticated(second.c2s(), second.tls_config(), user).await;
        raw.write(&format!("<resume xmlns='{SM}' previd='{previd}' h='0'/>"))
            .await;
        let failed = raw.element().await;
        assert!(failed.is("failed", SM), "{failed:?}");
        assert!(failed.has_child("item-not-found", corvid::xml::ns::STANZAS_ERRORS));
        raw.write("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
            .await;
        let _bound = raw.element().await;
        let mut fresh = Reader {
            raw,
            jid: String::new(),
            h: 0,
            bodies: Vec::new(),
        };
        fresh.raw.write("<presence/>").await;
        let mut stamped = 0;
        loop {
            let el = fresh.next().await;
            if el.name() == "message" && el.has_child("delay", DELAY) {
                stamped += 1;
            }
            if fresh.bodies.len() == expected.len() {
                break;
            }
        }
        assert_eq!(fresh.bodies, expected, "{user} after the restart");
        assert_eq!(stamped, expected.len());
        fresh.ping("after").await;
        assert_eq!(fresh.bodies, expected, "{user}: nothing twice");
    }
    drop(dir);
}

/// The first `127.0.0.1:port` in a log line.
fn address_in(line: &str) -> Option<SocketAddr> {
    let start = line.find("127.0.0.1:")?;
    let rest = &line[start..];
    let end = rest
        .char_indices()
        .skip("127.0.0.1:".len())
        .find(|(_, c)| !c.is_ascii_digit())
        .map_or(rest.len(), |(i, _)| i);
    rest[..end].parse().ok()
}

#[tokio::test]
async fn sigterm_tells_clients_and_the_binary_exits_cleanly() {
    signal_tells_clients_and_the_binary_exits_cleanly("-TERM").await;
}

#[tokio::test]
async fn sigint_takes_the_same_path() {
    signal_tells_clients_and_the_binary_exits_cleanly("-INT").await;
}

/// Runs `corvid serve` with a logged-in client, sends it `signal` with kill(1).
async fn signal_tells_clients_and_the_binary_exits_cleanly(signal: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("corvid.toml");
    std::fs::write(
        &config,
        format!(
            "domain = 'localhost'\n[storage]\nurl = 'sqlite://{db}'\n[tls]\ncert = '{cert}'\nkey = '{key}'\n\
             [c2s]\nbind = '127.0.0.1'\nport = 0\ndirect_tls = false\n[http]\nenabled = false\ntls_enabled = false\n[s2s]\nenabled = false\n",
            db = dir.path().join("corvid.db").display(),
            cert = dir.path().join("cert.pem").display(),
            key = dir.path().join("key.pem").display(),
        ),
    )
    .expect("config");
    let bin = env!("CARGO_BIN_EXE_corvid");
    let mut add = Command::new(bin)
        .args([
            "-c",
            config.to_str().expect("path"),
            "user",
            "add",
            "alice",
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("corvid runs");
    {
        use std::io::Write;
        add.stdin
            .take()
            .expect("stdin")
            .write_all(format!("{PASSWORD}\n").as_bytes())
            .expect("password");
    }
    assert!(add.wait().expect("user add").success());

    let mut child = Command::new(bin)
        .args(["-c", config.to_str().expect("path"), "serve"])
        // Issue 13: log lines to a pipe (a file, a journal) carry no colour escapes, without
        // NO_COLOR having to say so.
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("corvid serves");
    let stderr = child.stderr.take().expect("stderr");
    let (found, addr) = std::sync::mpsc::channel();
    let (coloured_tx, coloured) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        let mut escapes = 0usize;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            escapes += usize::from(line.contains('\u{1b}'));
            if !sent && line.contains("c2s (STARTTLS) listening") {
                let _ = found.send(address_in(&line));
                sent = true;
            }
        }
        let _ = coloured_tx.send(escapes);
    });
    let addr = tokio::task::spawn_blocking(move || addr.recv_timeout(Duration::from_secs(60)))
        .await
        .expect("join")
        .expect("the server logs its address")
        .expect("an address in the log line");

    let pem = std::fs::read(dir.path().join("cert.pem")).expect("generated certificate");
    let der = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .expect("a certificate")
        .expect("PEM parses");
    let tls = pinned_tls_config(der.to_vec(), vec![]);
    let (mut raw, _jid) = Raw::login(addr, tls, "alice", "desk").await;
    raw.write("<presence/>").await;
    let _own_presence = raw.element().await;

    let killed = Command::new("kill")
        .arg(signal)
        .arg(child.id().to_string())
        .status()
        .expect("kill runs");
    assert!(killed.success());
    assert_eq!(raw.stream_error().await, "system-shutdown");

    // Generous: a loaded CI machine may be slow, but the process must exit by itself.
    let status = tokio::task::spawn_blocking(move || {
        for _ in 0..600 {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        None
    })
    .await
    .expect("join")
    .expect("corvid exits after the signal");
    assert!(status.success(), "{status:?}");
    let escapes = coloured
        .recv_timeout(Duration::from_secs(30))
        .expect("stderr read to its end");
    assert_eq!(escapes, 0, "log lines with colour escapes on a pipe");
}

/// Issue 13: `log.format = "json"` writes one JSON object per log line, for log shippers.
#[test]
fn json_log_lines_parse_as_json() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("corvid.toml");
    std::fs::write(
        &config,
        "[log]\nformat = 'json'\n[storage]\nurl = 'sqlite://./corvid.db'\n[tls]\ncert = 'c.pem'\nkey = 'k.pem'\n\
         [c2s]\nbind = '127.0.0.1'\nport = 0\ndirect_tls = false\n[http]\nenabled = false\n[s2s]\nenabled = false\n",
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_corvid"))
        .args(["-c", config.to_str().expect("path"), "serve"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("corvid serves");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
    let listening = lines
        .by_ref()
        .take(50)
        .find(|line| line.contains("c2s (STARTTLS) listening"));
    let _ = child.kill();
    let _ = child.wait();
    let line = listening.expect("the server logs where it listens");
    let parsed: serde_json::Value = serde_json::from_str(&line).expect("a JSON object");
    assert_eq!(parsed["level"], "INFO", "{line}");
    assert!(parsed["fields"]["message"].is_string(), "{line}");
}
