//! Dead-connection detection (`c2s.idle_ping_secs`, `c2s.idle_timeout_secs`) over real
//! sockets: a bound stream that stays silent is asked for a sign of life (a XEP-0199 ping, or
//! an SM `<r/>`), and one that gives none is closed, or parked for resumption with stream
//! management; a client that answers stays.

mod common;

use common::xmpp::{is_presence, Session};
use common::{Raw, TestServer};
use corvid::xml::Frame;
use minidom::Element;

const SM: &str = "urn:xmpp:sm:3";

/// A server that pings after one silent second and waits one more for the answer.
async fn server() -> TestServer {
    let t = TestServer::start_with(|c| {
        c.c2s.idle_ping_secs = 1;
        c.c2s.idle_timeout_secs = 1;
    })
    .await;
    t.add_user("alice").await;
    t.add_user("bob").await;
    t
}

fn is_ping(el: &Element) -> bool {
    el.name() == "iq" && el.attr("type") == Some("get") && el.has_child("ping", "urn:xmpp:ping")
}

/// The next stanza matching `pred`, answering the server's pings on the way as a live
/// client does.
async fn expect_answering(s: &mut Session, pred: impl Fn(&Element) -> bool) -> Element {
    loop {
        let el = s.next().await;
        if is_ping(&el) {
            let id = el.attr("id").unwrap_or_default().to_owned();
            let from = el.attr("from").unwrap_or_default().to_owned();
            s.send(&format!("<iq type='result' id='{id}' to='{from}'/>"))
                .await;
            continue;
        }
        if pred(&el) {
            return el;
        }
    }
}

#[tokio::test]
async fn a_client_that_never_answers_is_disconnected_and_its_contacts_see_it_go() {
    let t = server().await;
    t.make_mutual("alice", "bob").await;
    let mut bob = Session::online(&t, "bob", "desk").await;
    let mut alice = Session::online(&t, "alice", "phone").await;
    let alice_jid = alice.jid.clone();
    expect_answering(&mut bob, |el| is_presence(el, None, &alice_jid)).await;

    // Alice's connection looks alive to the kernel but nobody is there: she reads what
    // comes (a ping among it) and sends nothing back. Meanwhile Bob, who answers his own
    // pings, waits to see her go.
    let silent = async {
        let mut pinged = false;
        let condition = loop {
            match alice.raw.frame().await {
                Some(Frame::Element(el)) if is_ping(&el) => {
                    assert_eq!(el.attr("from"), Some("localhost"));
                    assert_eq!(el.attr("to"), Some(alice_jid.as_str()));
                    pinged = true;
                }
                Some(Frame::Element(el)) if el.name() == "error" => {
                    break el
                        .children()
                        .find(|c| c.ns() == corvid::xml::ns::STREAMS_ERRORS && c.name() != "text")
                        .map(|c| c.name().to_owned());
                }
                Some(_) => {}
                None => break None,
            }
        };
        (pinged, condition)
    };
    let watching = expect_answering(&mut bob, |el| {
        is_presence(el, Some("unavailable"), &alice_jid)
    });
    let ((pinged, condition), _) = tokio::join!(silent, watching);
    assert!(pinged, "asked before being cut");
    assert_eq!(condition.as_deref(), Some("connection-timeout"));
    let bob_jid: jid::FullJid = bob.jid.parse().unwrap();
    assert!(t.server.ctx.router.is_bound(&bob_jid));
}

#[tokio::test]
async fn a_client_that_answers_the_pings_stays() {
    let t = server().await;
    let mut alice = Session::online(&t, "alice", "phone").await;
    let mut answered = 0;
    while answered < 3 {
        let ping = alice.expect(is_ping).await;
        let id = ping.attr("id").unwrap_or_default().to_owned();
        alice
            .send(&format!("<iq type='result' id='{id}' to='localhost'/>"))
            .await;
        answered += 1;
    }
    // Three rounds, each longer than the answer timeout: still there, and the answers were
    // taken quietly (no error came back for them).
    let jid: jid::FullJid = alice.jid.parse().unwrap();
    assert!(t.server.ctx.router.is_bound(&jid));
    let seen = alice.drain().await;
    assert!(
        seen.iter().all(|el| el.attr("type") != Some("error")),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_silent_stream_management_session_is_asked_with_r_and_parked_for_resumption() {
    let t = server().await;
    let (mut raw, jid) = Raw::login(t.c2s(), t.tls_config(), "alice", "phone").await;
    raw.write(&format!("<enable xmlns='{SM}' resume='true'/>"))
        .await;
    let enabled = raw.element().await;
    assert!(enabled.is("enabled", SM), "{enabled:?}");
    // With stream management the question is an <r/>; no <a/> comes back.
    loop {
        let el = raw.element().await;
        if el.is("r", SM) {
            break;
        }
        assert!(!is_ping(&el), "an SM session is asked with <r/>: {el:?}");
    }
    t.until_detached(&jid).await;
    drop(raw);

    // And it can come back.
    let (mut raw, _) = Raw::authenticated(t.c2s(), t.tls_config(), "alice").await;
    let previd = enabled.attr("id").expect("resumable").to_owned();
    let resumed = raw.resume(&previd, 0).await;
    assert!(resumed.is("resumed", SM), "{resumed:?}");
}
