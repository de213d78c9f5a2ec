//! XEP-0198 on a cluster: a client whose session is detached on one node comes back through
//! another and gets `<failed h/>` with the first node's count, then finds what it had not
//! acknowledged in offline storage; resuming on the same node still resumes; a forged
//! previd learns nothing; `corvid ctl cluster` lists the nodes and drains one.
//!
//! Two nodes in this process on one PostgreSQL schema and one random Redis prefix per test;
//! skipped when `CORVID_TEST_POSTGRES` is not set.

mod common;

use std::process::Output;
use std::time::Duration;

use common::cluster::{start_one_node, LOCAL_REDIS};
use common::xmpp::Session;
use common::{body, Raw, TestServer, WAIT};
use minidom::Element;

const SM: &str = "urn:xmpp:sm:3";

struct Cluster {
    one: TestServer,
    two: TestServer,
    schema: String,
}

impl Cluster {
    /// Two nodes, or None (and why) without PostgreSQL.
    async fn start(ip: u8) -> Option<Cluster> {
        let Ok(url) = std::env::var("CORVID_TEST_POSTGRES") else {
            eprintln!("skipped: CORVID_TEST_POSTGRES is not set");
            return None;
        };
        let suffix: u64 = rand::random();
        let schema = format!("corvid_csm_{suffix:016x}");
        let prefix = format!("t{suffix:016x}");
        let one = start_one_node(
            &url,
            &schema,
            &prefix,
            "one",
            [127, 0, 0, ip],
            LOCAL_REDIS,
            |_| {},
        )
        .await;
        let two = start_one_node(
            &url,
            &schema,
            &prefix,
            "two",
            [127, 0, 0, ip + 1],
            LOCAL_REDIS,
            |_| {},
        )
        .await;
        for user in ["alice", "bob", "mallory"] {
            one.add_user(user).await;
        }
        Some(Cluster { one, two, schema })
    }

    async fn stop(self) {
        self.one.server.shutdown().await;
        self.two.server.shutdown().await;
        common::drop_schema(&self.schema).await;
    }
}

fn full(jid: &str) -> jid::FullJid {
    jid::FullJid::new(jid).expect("full jid")
}

/// Polls (no fixed sleep) until `what` holds.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Until `node` sees `jid` bound (on whichever node).
async fn until_seen(node: &TestServer, jid: &str) {
    let jid = full(jid);
    until(&format!("{jid} visible"), || {
        node.server.ctx.router.is_bound(&jid)
    })
    .await;
}

fn is_stanza(el: &Element) -> bool {
    el.ns() == "jabber:client" && matches!(el.name(), "message" | "presence" | "iq")
}

/// A raw client with SM enabled; `h` counts the stanzas it received (XEP-0198 §4).
struct SmClient {
    raw: Raw,
    jid: String,
    previd: String,
    h: u32,
}

impl SmClient {
    async fn login(t: &TestServer, user: &str, resource: &str) -> SmClient {
        let (mut raw, jid) = Raw::login(t.c2s(), t.tls_config(), user, resource).await;
        let previd = raw.enable_resumption().await;
        SmClient {
            raw,
            jid,
            previd,
            h: 0,
        }
    }

    async fn next(&mut self) -> Element {
        let el = self.raw.element().await;
        if is_stanza(&el) {
            self.h += 1;
        }
        el
    }

    /// Reads up to the message with `body`, which is counted and returned with the rest.
    async fn until_body(&mut self, wanted: &str) -> Vec<Element> {
        let mut seen = Vec::new();
        loop {
            let el = self.next().await;
            let done = el.name() == "message" && body(&el) == wanted;
            seen.push(el);
            if done {
                return seen;
            }
        }
    }
}

fn messages_from(els: &[Element], from: &str) -> Vec<String> {
    els.iter()
        .filter(|el| el.name() == "message" && el.attr("from") == Some(from))
        .map(body)
        .collect()
}

fn delayed(els: &[Element], wanted: &str) -> bool {
    els.iter().any(|el| {
        el.name() == "message" && body(el) == wanted && el.has_child("delay", "urn:xmpp:delay")
    })
}

/// Authenticates on `t` and asks to resume `previd` having handled `h` stanzas.
async fn resume_on(t: &TestServer, user: &str, previd: &str, h: u32) -> (Raw, Element) {
    let (mut raw, _) = Raw::authenticated(t.c2s(), t.tls_config(), user).await;
    let answer = raw.resume(previd, h).await;
    (raw, answer)
}

fn failed_h(answer: &Element) -> Option<&str> {
    assert!(answer.is("failed", SM), "{answer:?}");
    assert!(
        answer.has_child("item-not-found", corvid::xml::ns::STANZAS_ERRORS),
        "{answer:?}"
    );
    answer.attr("h")
}

/// Binds `resource` on a stream that failed to resume, sends initial presence and returns
/// everything up to a marker that `bob` (on `bobs_node`) sends afterwards.
async fn bind_and_collect(
    mut raw: Raw,
    resource: &str,
    bob: &mut Session,
    bobs_node: &TestServer,
) -> Vec<Element> {
    raw.write(&format!(
        "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
         <resource>{resource}</resource></bind></iq>"
    ))
    .await;
    let bound = raw.element().await;
    assert_eq!(bound.attr("type"), Some("result"), "{bound:?}");
    let jid = format!("alice@localhost/{resource}");
    let mut alice = Session::from_raw(raw, jid.clone());
    alice.send("<presence/>").await;
    // Offline storage is flushed as the presence is handled, before alice's own marker.
    let mut seen = alice.drain().await;
    until_seen(bobs_node, &jid).await;
    let marker = Session::marker();
    bob.send_marker(&jid, &marker).await;
    seen.extend(alice.until_marker(&marker).await);
    seen
}

/// Runs `corvid ctl --json <args>` against `t`'s control socket.
async fn ctl(t: &TestServer, args: &[&str]) -> Output {
    let config = t.dir.path().join("ctl.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\nurl = '{}'\n[control]\nsocket = '{}'\n",
            t.config().storage.url,
            t.config().control.socket.display()
        ),
    )
    .expect("ctl config");
    tokio::process::Command::new(env!("CARGO_BIN_EXE_corvid"))
        .arg("-c")
        .arg(&config)
        .arg("ctl")
        .arg("--json")
        .args(args)
        .output()
        .await
        .expect("corvid runs")
}

fn json(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "corvid ctl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON object")
}

/// The rows of `corvid ctl cluster`, as (name, column) -> value.
fn node_rows(outcome: &serde_json::Value) -> Vec<std::collections::BTreeMap<String, String>> {
    outcome["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| {
            row.as_object()
                .expect("row")
                .iter()
                .map(|(k, v)| (k.clone(), v[0].as_str().expect("value").to_owned()))
                .collect()
        })
        .collect()
}

fn state_of(rows: &[std::collections::BTreeMap<String, String>], name: &str) -> String {
    rows.iter()
        .find(|row| row["name"] == name)
        .unwrap_or_else(|| panic!("no node {name} in {rows:?}"))["state"]
        .clone()
}

/// (a) Detached on node one, back through node two: `<failed h/>` with node one's count of
/// alice's stanzas, then exactly the messages her `h` did not acknowledge, from offline
/// storage, stamped with `<delay/>`.
#[tokio::test]
async fn resuming_on_another_node_fails_with_the_count_and_the_unacked_are_offline() {
    let Some(c) = Cluster::start(51).await else {
        return;
    };
    let mut bob = Session::login(&c.two, "bob", "desk").await;
    let mut alice = SmClient::login(&c.one, "alice", "phone").await;
    let number = c.one.server.ctx.router.cluster().expect("a node").node().0;
    assert!(
        alice.previd.starts_with(&format!("{number}-")),
        "the id names its node: {}",
        alice.previd
    );
    // Three stanzas from alice: node one's count, which node two must report.
    alice.raw.write("<presence/>").await;
    for text in ["hi-1", "hi-2"] {
        alice
            .raw
            .write(&format!(
                "<message to='bob@localhost/desk' type='chat'><body>{text}</body></message>"
            ))
            .await;
    }
    bob.expect(|el| body(el) == "hi-2").await;
    until_seen(&c.two, &alice.jid).await;
    for i in 1..=4 {
        bob.send_marker(&alice.jid, &format!("m{i}")).await;
    }
    alice.until_body("m2").await;
    let acked = alice.h;
    alice.until_body("m4").await;
    let jid = alice.jid.clone();
    let previd = alice.previd.clone();
    drop(alice);
    c.one.until_detached(&jid).await;

    let (raw, answer) = resume_on(&c.two, "alice", &previd, acked).await;
    assert_eq!(
        failed_h(&answer),
        Some("3"),
        "node one's count of alice's stanzas"
    );
    assert!(
        !c.one.server.ctx.router.is_bound(&full(&jid)),
        "the old session ended on node one before the answer"
    );
    let seen = bind_and_collect(raw, "phone", &mut bob, &c.two).await;
    assert_eq!(
        messages_from(&seen, "bob@localhost/desk"),
        ["m3", "m4"],
        "exactly the unacknowledged ones: {seen:?}"
    );
    assert!(delayed(&seen, "m3") && delayed(&seen, "m4"), "{seen:?}");
    // Asked again, the id is known as expired on node one: the same count.
    let (_raw, again) = resume_on(&c.two, "alice", &previd, acked).await;
    assert_eq!(failed_h(&again), Some("3"));
    c.stop().await;
}

/// (b) On the node that holds the session, resumption still gives the session back.
#[tokio::test]
async fn resuming_on_the_same_node_of_a_cluster_resumes() {
    let Some(c) = Cluster::start(53).await else {
        return;
    };
    let mut bob = Session::login(&c.two, "bob", "desk").await;
    let mut alice = SmClient::login(&c.one, "alice", "phone").await;
    until_seen(&c.two, &alice.jid).await;
    bob.send_marker(&alice.jid, "m1").await;
    alice.until_body("m1").await;
    let jid = alice.jid.clone();
    let previd = alice.previd.clone();
    drop(alice);
    c.one.until_detached(&jid).await;
    bob.send_marker(&jid, "m2").await;

    let (raw, answer) = resume_on(&c.one, "alice", &previd, 0).await;
    assert!(answer.is("resumed", SM), "{answer:?}");
    assert_eq!(answer.attr("h"), Some("0"));
    let mut alice = SmClient {
        raw,
        jid: jid.clone(),
        previd,
        h: 0,
    };
    let got = alice.until_body("m2").await;
    assert_eq!(
        messages_from(&got, "bob@localhost/desk"),
        ["m1", "m2"],
        "m1 again (never acknowledged), then what queued meanwhile"
    );
    assert!(!c.one.server.ctx.router.is_detached(&full(&jid)));
    c.stop().await;
}

/// (c) A previd of another user's session, or garbage: `<failed/>` without `h`, and the
/// other user's session goes on untouched.
#[tokio::test]
async fn a_forged_previd_fails_without_a_count_and_touches_nothing() {
    let Some(c) = Cluster::start(55).await else {
        return;
    };
    let mut bob = Session::login(&c.two, "bob", "desk").await;
    let mut alice = SmClient::login(&c.one, "alice", "phone").await;
    alice.raw.write("<presence/>").await;
    until_seen(&c.two, &alice.jid).await;
    let one = c.one.server.ctx.router.cluster().expect("a node").node().0;
    for forged in [
        alice.previd.clone(),
        format!("{one}-000000000000000000000000"),
        "65000-000000000000000000000000".to_owned(),
        "not an id".to_owned(),
    ] {
        let (mut raw, answer) = resume_on(&c.two, "mallory", &forged, 0).await;
        assert_eq!(failed_h(&answer), None, "nothing to learn from {forged:?}");
        raw.write("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
            .await;
        assert_eq!(raw.element().await.attr("type"), Some("result"));
    }
    // Alice's session on node one is still live and gets its messages.
    assert!(c.one.server.ctx.router.is_bound(&full(&alice.jid)));
    assert!(!c.one.server.ctx.router.is_detached(&full(&alice.jid)));
    bob.send_marker(&alice.jid, "still-here").await;
    alice.until_body("still-here").await;
    c.stop().await;
}

/// (d) `corvid ctl cluster` lists both nodes; `drain` stops logins on the node and tells its
/// resumable sessions to go, whose clients resume elsewhere (failed h + offline); `undrain`
/// takes logins again.
#[tokio::test]
async fn ctl_lists_the_nodes_and_drain_moves_clients_away() {
    let Some(c) = Cluster::start(57).await else {
        return;
    };
    let listed = json(&ctl(&c.one, &["cluster"]).await);
    let rows = node_rows(&listed);
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str()).collect();
    assert_eq!(names.len(), 2, "{listed}");
    assert!(names.contains(&"one") && names.contains(&"two"), "{listed}");
    for row in &rows {
        assert_eq!(row["alive"], "true", "{listed}");
        assert_eq!(row["state"], "up", "{listed}");
        assert_eq!(row["this"], (row["name"] == "one").to_string());
        assert!(row["heartbeat_age_ms"].parse::<u64>().is_ok(), "{listed}");
    }
    // The same as an ad-hoc command, for admins' XMPP clients.
    let command = json(&ctl(&c.two, &["run", "urn:corvid:admin#cluster", "action=list"]).await);
    let lines: Vec<&str> = command["fields"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["name"] == "nodes"))
        .and_then(|f| f["values"].as_array())
        .map(|v| v.iter().filter_map(|l| l.as_str()).collect())
        .unwrap_or_default();
    assert_eq!(lines.len(), 2, "{command}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("two ") && l.contains("[this node]")),
        "{command}"
    );

    let mut bob = Session::login(&c.two, "bob", "desk").await;
    let mut alice = SmClient::login(&c.one, "alice", "phone").await;
    alice.raw.write("<presence/>").await;
    // A session without stream management is not asked to go.
    let mut plain = Session::login(&c.one, "mallory", "pc").await;
    until_seen(&c.two, &alice.jid).await;
    bob.send_marker(&alice.jid, "unacked").await;
    alice.until_body("unacked").await;

    let drained = json(&ctl(&c.one, &["cluster", "drain"]).await);
    assert_eq!(
        state_of(&node_rows(&drained), "one"),
        "draining",
        "{drained}"
    );
    let told = drained["fields"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["name"] == "resumable"))
        .map(|f| f["values"][0].clone());
    assert_eq!(told, Some(serde_json::json!("1")), "{drained}");
    assert_eq!(alice.raw.stream_error().await, "system-shutdown");
    let jid = alice.jid.clone();
    c.one.until_detached(&jid).await;

    // New logins on node one are refused before SASL.
    let mut refused = Raw::connect(c.one.c2s()).await;
    refused.write(common::OPEN).await;
    assert_eq!(refused.stream_error().await, "system-shutdown");
    // The other nodes learn the state from the heartbeat.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let seen = json(&ctl(&c.two, &["cluster"]).await);
        if state_of(&node_rows(&seen), "one") == "draining" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{seen}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Alice's client goes through the load balancer to node two.
    let (raw, answer) = resume_on(&c.two, "alice", &alice.previd, 0).await;
    assert_eq!(failed_h(&answer), Some("1"), "alice sent her presence");
    let seen = bind_and_collect(raw, "phone", &mut bob, &c.two).await;
    assert_eq!(
        messages_from(&seen, "bob@localhost/desk"),
        ["unacked"],
        "{seen:?}"
    );
    assert!(delayed(&seen, "unacked"), "{seen:?}");

    // The plain session stayed.
    let me = plain.jid.clone();
    plain.send_marker(&me, "plain-still-here").await;
    plain.until_marker("plain-still-here").await;

    json(&ctl(&c.one, &["cluster", "undrain"]).await);
    let (_raw, again) = Raw::login(c.one.c2s(), c.one.tls_config(), "bob", "again").await;
    assert_eq!(again, "bob@localhost/again");
    c.stop().await;
}

/// A node that stopped gracefully (a restart without a drain) noted in Redis the count of
/// each resumable session it ended, after storing what the session had not acknowledged:
/// resuming on another node fails at once with that count, and the message is offline.
#[tokio::test]
async fn resuming_after_the_holder_stopped_fails_with_its_count_and_loses_nothing() {
    let Some(Cluster { one, two, schema }) = Cluster::start(59).await else {
        return;
    };
    let mut bob = Session::login(&two, "bob", "desk").await;
    let mut alice = SmClient::login(&one, "alice", "phone").await;
    alice.raw.write("<presence/>").await;
    until_seen(&two, &alice.jid).await;
    bob.send_marker(&alice.jid, "m1").await;
    alice.until_body("m1").await;
    let jid = alice.jid.clone();
    let previd = alice.previd.clone();
    drop(alice);
    one.until_detached(&jid).await;
    one.server.shutdown().await;

    let started = tokio::time::Instant::now();
    let (raw, answer) = resume_on(&two, "alice", &previd, 0).await;
    assert_eq!(
        failed_h(&answer),
        Some("1"),
        "the stopped node's count of alice's stanzas (her presence)"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no wait for a node that is gone: {:?}",
        started.elapsed()
    );
    // Another account asking with the same id learns nothing.
    let (_mallory, answer) = resume_on(&two, "mallory", &previd, 0).await;
    assert_eq!(failed_h(&answer), None);
    let seen = bind_and_collect(raw, "phone", &mut bob, &two).await;
    // Delivery between nodes is at least once: m1 may come twice when the stopping node had
    // not yet acknowledged it to bob's node, never not at all.
    let got = messages_from(&seen, "bob@localhost/desk");
    assert!(
        !got.is_empty() && got.iter().all(|body| body == "m1"),
        "{seen:?}"
    );
    assert!(delayed(&seen, "m1"), "from offline storage: {seen:?}");
    two.server.shutdown().await;
    common::drop_schema(&schema).await;
}

/// Authenticates as alice with SASL2 (XEP-0388), resuming `previd` inline and binding with
/// Bind2; returns the `<success/>`.
async fn sasl2_resume(t: &TestServer, previd: &str, h: u32) -> (Raw, Element) {
    use base64::Engine;
    let mut raw = Raw::connect(t.c2s()).await.starttls(t.tls_config()).await;
    raw.write(common::OPEN).await;
    assert_eq!(raw.element().await.name(), "features");
    let initial =
        base64::engine::general_purpose::STANDARD.encode(format!("\0alice\0{}", common::PASSWORD));
    raw.write(&format!(
        "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'>\
         <initial-response>{initial}</initial-response>\
         <user-agent id='ua-csm'><software>t</software></user-agent>\
         <resume xmlns='{SM}' previd='{previd}' h='{h}'/>\
         <bind xmlns='urn:xmpp:bind:0'><tag>App</tag></bind></authenticate>"
    ))
    .await;
    let success = raw.element().await;
    assert!(success.is("success", "urn:xmpp:sasl:2"), "{success:?}");
    (raw, success)
}

/// The inline SASL2 resumption after the holder stopped takes the same path: `<failed h/>`
/// with the stopped node's count inside the `<success/>`.
#[tokio::test]
async fn an_inline_sasl2_resumption_after_the_holder_stopped_fails_with_its_count() {
    let Some(Cluster { one, two, schema }) = Cluster::start(63).await else {
        return;
    };
    let mut bob = Session::login(&two, "bob", "desk").await;
    let mut alice = SmClient::login(&one, "alice", "phone").await;
    alice.raw.write("<presence/>").await;
    until_seen(&two, &alice.jid).await;
    bob.send_marker(&alice.jid, "m1").await;
    alice.until_body("m1").await;
    let jid = alice.jid.clone();
    let previd = alice.previd.clone();
    drop(alice);
    one.until_detached(&jid).await;
    one.server.shutdown().await;

    let (_raw, success) = sasl2_resume(&two, &previd, 0).await;
    let failed = success.get_child("failed", SM).expect("<failed/> inline");
    assert_eq!(failed_h(failed), Some("1"), "alice sent her presence");
    assert!(success.has_child("bound", "urn:xmpp:bind:0"), "{success:?}");
    two.server.shutdown().await;
    common::drop_schema(&schema).await;
}

/// The same through SASL2 (XEP-0388) with the resumption inline: `<failed h/>` inside the
/// `<success/>`, Bind2 binds anew, and the unacknowledged message is in offline storage.
#[tokio::test]
async fn an_inline_sasl2_resumption_on_another_node_fails_with_the_count_and_binds() {
    let Some(c) = Cluster::start(61).await else {
        return;
    };
    let mut bob = Session::login(&c.two, "bob", "desk").await;
    let mut alice = SmClient::login(&c.one, "alice", "phone").await;
    alice.raw.write("<presence/>").await;
    until_seen(&c.two, &alice.jid).await;
    bob.send_marker(&alice.jid, "m1").await;
    alice.until_body("m1").await;
    let jid = alice.jid.clone();
    let previd = alice.previd.clone();
    drop(alice);
    c.one.until_detached(&jid).await;

    let (mut raw, success) = sasl2_resume(&c.two, &previd, 0).await;
    let failed = success.get_child("failed", SM).expect("<failed/> inline");
    assert_eq!(failed_h(failed), Some("1"), "alice sent her presence");
    assert!(success.has_child("bound", "urn:xmpp:bind:0"), "{success:?}");
    let bound = success
        .get_child("authorization-identifier", "urn:xmpp:sasl:2")
        .map(|el| el.text())
        .expect("bound jid");
    assert_eq!(raw.element().await.name(), "features");
    let mut fresh = Session::from_raw(raw, bound.clone());
    fresh.send("<presence/>").await;
    let seen = fresh.drain().await;
    assert_eq!(
        messages_from(&seen, "bob@localhost/desk"),
        ["m1"],
        "{seen:?}"
    );
    assert!(delayed(&seen, "m1"), "{seen:?}");
    c.stop().await;
}
