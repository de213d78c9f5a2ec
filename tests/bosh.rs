//! XMPP over BOSH (XEP-0124, XEP-0206) at /http-bind, over real sockets: raw HTTP/1.1
//! requests, one connection each, as the simplest BOSH client would make them.

mod common;

use std::net::SocketAddr;

use base64::Engine;
use common::{next_matching, online, send, TestServer, DOMAIN, PASSWORD, WAIT};
use corvid::xml::XmlLimits;
use minidom::Element;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HTTPBIND: &str = "http://jabber.org/protocol/httpbind";
const XBOSH: &str = "urn:xmpp:xbosh";

struct HttpAnswer {
    status: u16,
    headers: String,
    body: String,
}

impl HttpAnswer {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }

    fn element(&self) -> Element {
        corvid::xml::parse_standalone(self.body.as_bytes(), XmlLimits::with_max_size(1 << 20))
            .unwrap_or_else(|e| panic!("answer is not XML ({e}): {}", self.body))
    }
}

async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> HttpAnswer {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: text/xml; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8(out).unwrap()
    };
    let text = tokio::time::timeout(WAIT * 2, exchange)
        .await
        .expect("HTTP answer in time");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP head");
    let status = head[9..12].parse().expect("status code");
    HttpAnswer {
        status,
        headers: head.to_owned(),
        body: dechunk(head, body),
    }
}

/// The body of a chunked answer, joined.
fn dechunk(head: &str, body: &str) -> String {
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_owned();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    out
}

async fn post(addr: SocketAddr, body: &str) -> Element {
    let answer = http(addr, "POST", "/http-bind", body).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.element()
}

fn terminate_condition(el: &Element) -> Option<&str> {
    assert!(el.is("body", HTTPBIND), "{}", corvid::xml::to_string(el));
    (el.attr("type") == Some("terminate")).then(|| el.attr("condition").unwrap_or(""))
}

/// One BOSH session, driven request by request.
struct Bosh {
    addr: SocketAddr,
    sid: String,
    rid: u64,
    /// The creation answer.
    created: Element,
}

impl Bosh {
    async fn create(addr: SocketAddr, wait: u64) -> Bosh {
        let rid = 1000;
        let created = post(
            addr,
            &format!(
                "<body xmlns='{HTTPBIND}' xmlns:xmpp='{XBOSH}' rid='{rid}' to='{DOMAIN}' \
                 wait='{wait}' hold='1' ver='1.6' xmpp:version='1.0' xml:lang='en'/>"
            ),
        )
        .await;
        assert_eq!(terminate_condition(&created), None);
        let sid = created.attr("sid").expect("sid").to_owned();
        Bosh {
            addr,
            sid,
            rid,
            created,
        }
    }

    fn next_body(&mut self, attrs: &str, payload: &str) -> (u64, String) {
        self.rid += 1;
        let body = format!(
            "<body xmlns='{HTTPBIND}' xmlns:xmpp='{XBOSH}' rid='{}' sid='{}' {attrs}>{payload}</body>",
            self.rid, self.sid
        );
        (self.rid, body)
    }

    async fn request(&mut self, attrs: &str, payload: &str) -> Element {
        let (_, body) = self.next_body(attrs, payload);
        post(self.addr, &body).await
    }

    /// Sends `payload`, then polls until a payload matching `pred` arrives; everything
    /// received on the way is returned, the match last.
    async fn until(&mut self, payload: &str, pred: impl Fn(&Element) -> bool) -> Vec<Element> {
        let mut seen = Vec::new();
        let mut answer = self.request("", payload).await;
        for _ in 0..20 {
            assert_eq!(
                terminate_condition(&answer),
                None,
                "{}",
                corvid::xml::to_string(&answer)
            );
            for child in answer.children() {
                seen.push(child.clone());
                if pred(child) {
                    return seen;
                }
            }
            answer = self.request("", "").await;
        }
        panic!("never received what was expected; got {seen:?}");
    }

    /// SASL PLAIN, the restart (XEP-0206 §9) and resource binding; the bound JID.
    async fn login(&mut self, user: &str, resource: &str) -> String {
        let creds =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{PASSWORD}"));
        let auth = format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>"
        );
        let seen = self
            .until(&auth, |el| el.ns() == "urn:ietf:params:xml:ns:xmpp-sasl")
            .await;
        assert_eq!(seen.last().unwrap().name(), "success", "{seen:?}");
        let (_, restart) = self.next_body(&format!("to='{DOMAIN}' xmpp:restart='true'"), "");
        let mut answer = post(self.addr, &restart).await;
        while answer.children().next().is_none() {
            answer = self.request("", "").await;
        }
        let features = answer.children().next().unwrap();
        assert!(features.is("features", "http://etherx.jabber.org/streams"));
        assert!(features.has_child("bind", "urn:ietf:params:xml:ns:xmpp-bind"));
        let bind = format!(
            "<iq xmlns='jabber:client' type='set' id='b1'>\
             <bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
        );
        let seen = self.until(&bind, |el| el.attr("id") == Some("b1")).await;
        let iq = seen.last().unwrap();
        assert_eq!(iq.attr("type"), Some("result"));
        iq.get_child("bind", "urn:ietf:params:xml:ns:xmpp-bind")
            .and_then(|b| b.get_child("jid", "urn:ietf:params:xml:ns:xmpp-bind"))
            .map(|j| j.text())
            .expect("bound jid")
    }
}

#[tokio::test]
async fn session_creation_answers_the_session_attributes_and_features() {
    let t = TestServer::start().await;
    let answer = http(
        t.http(),
        "POST",
        "/http-bind",
        &format!(
            "<body xmlns='{HTTPBIND}' xmlns:xmpp='{XBOSH}' rid='1' to='{DOMAIN}' wait='600' \
             hold='5' ver='1.6' xmpp:version='1.0'/>"
        ),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.header("content-type").as_deref(),
        Some("text/xml; charset=utf-8")
    );
    assert_eq!(
        answer.header("access-control-allow-origin").as_deref(),
        Some("*")
    );
    let body = answer.element();
    assert!(body.attr("sid").is_some_and(|sid| sid.len() >= 16));
    // Capped at what the server allows.
    assert_eq!(body.attr("wait"), Some("60"));
    assert_eq!(body.attr("hold"), Some("1"));
    assert_eq!(body.attr("requests"), Some("2"));
    assert_eq!(body.attr("inactivity"), Some("60"));
    assert!(body.attr("polling").is_some());
    assert!(body.attr("maxpause").is_some());
    assert!(body.attr("ver").is_some());
    assert_eq!(body.attr("from"), Some(DOMAIN));
    assert!(body.attr("authid").is_some_and(|id| !id.is_empty()));
    assert_eq!(body.attr_ns(XBOSH, "version"), Some("1.0"));
    let features = body
        .get_child("features", "http://etherx.jabber.org/streams")
        .expect("stream features in the creation answer");
    let mechanisms: Vec<String> = features
        .get_child("mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl")
        .expect("mechanisms")
        .children()
        .map(|m| m.text())
        .collect();
    assert!(mechanisms.iter().any(|m| m == "PLAIN"), "{mechanisms:?}");
    assert!(!features.has_child("starttls", "urn:ietf:params:xml:ns:xmpp-tls"));

    // CORS preflight for browser clients.
    let preflight = http(t.http(), "OPTIONS", "/http-bind", "").await;
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.header("access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert!(preflight
        .header("access-control-allow-methods")
        .is_some_and(|m| m.contains("POST")));
    assert!(preflight
        .header("access-control-allow-headers")
        .is_some_and(|h| h.to_ascii_lowercase().contains("content-type")));
}

#[tokio::test]
async fn creation_for_a_domain_not_served_here_is_refused() {
    let t = TestServer::start().await;
    let body = post(
        t.http(),
        &format!("<body xmlns='{HTTPBIND}' rid='1' to='elsewhere.example' xmpp:version='1.0' xmlns:xmpp='{XBOSH}'/>"),
    )
    .await;
    assert_eq!(terminate_condition(&body), Some("host-unknown"));
    let body = post(t.http(), &format!("<body xmlns='{HTTPBIND}' rid='1'/>")).await;
    assert_eq!(terminate_condition(&body), Some("improper-addressing"));
}

#[tokio::test]
async fn login_restart_and_bind_over_bosh() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    let mut bosh = Bosh::create(t.http(), 5).await;
    let jid = bosh.login("alice", "web").await;
    assert_eq!(jid, format!("alice@{DOMAIN}/web"));
    // The bound session answers IQs like any other.
    let seen = bosh
        .until(
            "<iq xmlns='jabber:client' type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>",
            |el| el.attr("id") == Some("p1"),
        )
        .await;
    assert_eq!(seen.last().unwrap().attr("type"), Some("result"));
}

#[tokio::test]
async fn wrong_password_fails_without_ending_the_session() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    let mut bosh = Bosh::create(t.http(), 5).await;
    let creds = base64::engine::general_purpose::STANDARD.encode("\0alice\0wrong");
    let seen = bosh
        .until(
            &format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>"
            ),
            |el| el.ns() == "urn:ietf:params:xml:ns:xmpp-sasl",
        )
        .await;
    assert_eq!(seen.last().unwrap().name(), "failure");
    assert_eq!(
        bosh.login("alice", "web").await,
        format!("alice@{DOMAIN}/web")
    );
}

#[tokio::test]
async fn a_bosh_user_and_a_tcp_user_chat_both_ways() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    t.add_user("bob").await;
    let mut bosh = Bosh::create(t.http(), 10).await;
    let alice = bosh.login("alice", "web").await;
    let mut bob = t.client("bob", "desk", false);
    let bob_jid = online(&mut bob).await;

    // A request held empty: the message from the TCP user is what answers it.
    let (_, poll) = bosh.next_body("", "");
    let addr = bosh.addr;
    let held = tokio::spawn(async move { post(addr, &poll).await });
    // Sent once the request is held or not: either way the answer carries it (the server
    // queues what arrives between requests).
    send(
        &mut bob,
        &format!("<message xmlns='jabber:client' to='{alice}' type='chat' id='m1'><body>hello over bosh</body></message>"),
    )
    .await;
    let mut answer = held.await.unwrap();
    while answer.children().next().is_none() {
        answer = bosh.request("", "").await;
    }
    let message = answer
        .get_child("message", "jabber:client")
        .expect("the held request returns the message");
    assert_eq!(message.attr("from"), Some(bob_jid.as_str()));
    assert_eq!(
        message.get_child("body", "jabber:client").unwrap().text(),
        "hello over bosh"
    );

    // And back, from BOSH to TCP.
    let sent = bosh
        .request(
            "",
            &format!(
                "<message xmlns='jabber:client' to='{bob_jid}' type='chat' id='m2'>\
                 <body>hello over tcp</body></message>"
            ),
        )
        .await;
    assert_eq!(terminate_condition(&sent), None);
    let got = next_matching(&mut bob, common::is_message_with_body).await;
    assert_eq!(common::body(&got), "hello over tcp");
    assert_eq!(got.attr("from"), Some(alice.as_str()));
}

#[tokio::test]
async fn payloads_without_a_namespace_are_client_stanzas() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    let mut bosh = Bosh::create(t.http(), 5).await;
    bosh.login("alice", "web").await;
    let seen = bosh
        .until(
            "<iq type='get' id='p2'><ping xmlns='urn:xmpp:ping'/></iq>",
            |el| el.attr("id") == Some("p2"),
        )
        .await;
    let iq = seen.last().unwrap();
    assert!(iq.is("iq", "jabber:client"));
    assert_eq!(iq.attr("type"), Some("result"));
}

#[tokio::test]
async fn an_unknown_sid_is_item_not_found() {
    let t = TestServer::start().await;
    let body = post(
        t.http(),
        &format!("<body xmlns='{HTTPBIND}' rid='5' sid='no-such-session'/>"),
    )
    .await;
    assert_eq!(terminate_condition(&body), Some("item-not-found"));
}

#[tokio::test]
async fn malformed_bodies_are_bad_requests() {
    let t = TestServer::start().await;
    for bad in [
        "<body xmlns='http://jabber.org/protocol/httpbind' rid='1'>",
        "<notbody xmlns='http://jabber.org/protocol/httpbind' rid='1'/>",
        "<body xmlns='http://jabber.org/protocol/httpbind' rid='one' to='localhost'/>",
        "<?xml version='1.0'?><!DOCTYPE body [<!ENTITY x 'y'>]><body/>",
    ] {
        let body = post(t.http(), bad).await;
        assert_eq!(terminate_condition(&body), Some("bad-request"), "{bad}");
    }
    // Larger than a stanza may be.
    let huge = format!(
        "<body xmlns='{HTTPBIND}' rid='1' to='{DOMAIN}'>{}</body>",
        "<presence xmlns='jabber:client'/>".repeat(t.config().c2s.max_stanza_size / 16)
    );
    let body = post(t.http(), &huge).await;
    assert_eq!(terminate_condition(&body), Some("policy-violation"));
}

#[tokio::test]
async fn a_repeated_rid_gets_the_same_answer_and_one_out_of_window_ends_the_session() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    let mut bosh = Bosh::create(t.http(), 5).await;
    bosh.login("alice", "web").await;
    let (rid, ping) = bosh.next_body(
        "",
        "<iq xmlns='jabber:client' type='get' id='r1'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    let first = post(bosh.addr, &ping).await;
    assert!(first.get_child("iq", "jabber:client").is_some());
    // The client did not get it, it says: the same rid is answered the same, not run again.
    let again = post(bosh.addr, &ping).await;
    assert_eq!(
        corvid::xml::to_string(&again),
        corvid::xml::to_string(&first)
    );
    assert_eq!(rid, bosh.rid);

    // Far beyond the window of `requests` ids.
    bosh.rid += 10;
    let out = bosh.request("", "").await;
    assert_eq!(terminate_condition(&out), Some("item-not-found"));
    // The session is gone.
    let after = bosh.request("", "").await;
    assert!(terminate_condition(&after).is_some());
}

#[tokio::test]
async fn a_terminate_from_the_client_ends_the_session_and_contacts_see_unavailable() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    t.add_user("bob").await;
    t.make_mutual("alice", "bob").await;
    let mut bob = t.client("bob", "desk", false);
    online(&mut bob).await;
    send(&mut bob, "<presence xmlns='jabber:client'/>").await;
    let mut bosh = Bosh::create(t.http(), 5).await;
    let alice = bosh.login("alice", "web").await;
    bosh.request("", "<presence xmlns='jabber:client'/>").await;
    let is_alice = |kind: Option<&'static str>| {
        let alice = alice.clone();
        move |el: &Element| {
            el.name() == "presence"
                && el.attr("from") == Some(alice.as_str())
                && el.attr("type") == kind
        }
    };
    next_matching(&mut bob, is_alice(None)).await;

    let bye = bosh.request("type='terminate'", "").await;
    assert_eq!(bye.attr("type"), Some("terminate"));
    next_matching(&mut bob, is_alice(Some("unavailable"))).await;
    let after = bosh.request("", "").await;
    assert!(terminate_condition(&after).is_some());
}

#[tokio::test]
async fn an_inactive_session_ends() {
    let t = TestServer::start_with(|config| config.bosh.inactivity_secs = 1).await;
    t.add_user("alice").await;
    t.add_user("bob").await;
    t.make_mutual("alice", "bob").await;
    let mut bob = t.client("bob", "desk", false);
    online(&mut bob).await;
    send(&mut bob, "<presence xmlns='jabber:client'/>").await;
    let mut bosh = Bosh::create(t.http(), 5).await;
    assert_eq!(bosh.created.attr("inactivity"), Some("1"));
    let alice = bosh.login("alice", "web").await;
    bosh.request("", "<presence xmlns='jabber:client'/>").await;
    // No more requests: the session ends on its own and its presence goes.
    let unavailable = next_matching(&mut bob, |el| {
        el.name() == "presence"
            && el.attr("from") == Some(alice.as_str())
            && el.attr("type") == Some("unavailable")
    })
    .await;
    assert_eq!(unavailable.attr("type"), Some("unavailable"));
    let after = bosh.request("", "").await;
    assert!(terminate_condition(&after).is_some());
}

#[tokio::test]
async fn host_meta_announces_bosh() {
    let t = TestServer::start().await;
    let https_port = t.server.https_addr.unwrap().port();
    let xml = http(t.http(), "GET", "/.well-known/host-meta", "").await;
    assert!(
        xml.body.contains(&format!(
            "<Link rel='urn:xmpp:alt-connections:xbosh' href='https://localhost:{https_port}/http-bind'/>"
        )),
        "{}",
        xml.body
    );
    assert!(xml.body.contains("urn:xmpp:alt-connections:websocket"));
    let json = http(t.http(), "GET", "/.well-known/host-meta.json", "").await;
    let doc: serde_json::Value = serde_json::from_str(&json.body).expect("json");
    let links = doc["links"].as_array().expect("links");
    assert!(links
        .iter()
        .any(|l| l["rel"] == "urn:xmpp:alt-connections:xbosh"
            && l["href"] == format!("https://localhost:{https_port}/http-bind")));

    let configured = TestServer::start_with(|config| {
        config.http.bosh_url = Some("https://chat.example.org/http-bind".into())
    })
    .await;
    let xml = http(configured.http(), "GET", "/.well-known/host-meta", "").await;
    assert!(
        xml.body
            .contains("href='https://chat.example.org/http-bind'"),
        "{}",
        xml.body
    );

    let off = TestServer::start_with(|config| config.bosh.enabled = false).await;
    let xml = http(off.http(), "GET", "/.well-known/host-meta", "").await;
    assert!(!xml.body.contains("xbosh"), "{}", xml.body);
    let refused = http(
        off.http(),
        "POST",
        "/http-bind",
        &format!("<body xmlns='{HTTPBIND}' rid='1' to='{DOMAIN}'/>"),
    )
    .await;
    assert_eq!(refused.status, 404);
}

#[tokio::test]
async fn the_bosh_path_is_served_too() {
    let t = TestServer::start().await;
    let answer = http(
        t.http(),
        "POST",
        "/bosh",
        &format!(
            "<body xmlns='{HTTPBIND}' xmlns:xmpp='{XBOSH}' rid='1' to='{DOMAIN}' wait='5' xmpp:version='1.0'/>"
        ),
    )
    .await;
    assert!(answer.element().attr("sid").is_some());
}

#[tokio::test]
async fn a_held_request_sent_again_is_answered_on_the_new_connection() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    let mut bosh = Bosh::create(t.http(), 30).await;
    bosh.login("alice", "web").await;
    // Held (nothing to send for 30 s); the client gives up on its connection and retries.
    let (_, poll) = bosh.next_body("", "");
    let addr = bosh.addr;
    let first = {
        let poll = poll.clone();
        tokio::spawn(async move { post(addr, &poll).await })
    };
    let again = post(addr, &poll).await;
    assert_eq!(terminate_condition(&again), None);
    let first = first.await.unwrap();
    assert_eq!(
        corvid::xml::to_string(&first),
        corvid::xml::to_string(&again)
    );
    // The session goes on.
    let seen = bosh
        .until(
            "<iq xmlns='jabber:client' type='get' id='p3'><ping xmlns='urn:xmpp:ping'/></iq>",
            |el| el.attr("id") == Some("p3"),
        )
        .await;
    assert_eq!(seen.last().unwrap().attr("type"), Some("result"));
}
