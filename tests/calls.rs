//! Call signalling (XEP-0353 Jingle Message Initiation), delivery receipts (XEP-0184) and chat
//! markers (XEP-0333) over real sockets: none has a `<body/>`, yet every device of both
//! accounts has to see them live (carbons), later (the archive) or when it comes back (offline
//! storage).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};

use common::xmpp::Session;
use common::TestServer;
use minidom::Element;

const JMI: &str = "urn:xmpp:jingle-message:0";
const CARBONS: &str = "urn:xmpp:carbons:2";
const FORWARD: &str = "urn:xmpp:forward:0";
const MAM: &str = "urn:xmpp:mam:2";
const RECEIPTS: &str = "urn:xmpp:receipts";
const MARKERS: &str = "urn:xmpp:chat-markers:0";

static QUERIES: AtomicU64 = AtomicU64::new(0);

async fn enable_carbons(session: &mut Session) {
    let answer = session
        .iq("<iq type='set'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
        .await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
}

/// The `(action, id)` of a call signal, the message itself or the one inside a carbon.
fn call_signal(message: &Element) -> Option<(String, String)> {
    message.children().find(|c| c.ns() == JMI).map(|c| {
        (
            c.name().to_owned(),
            c.attr("id").unwrap_or_default().to_owned(),
        )
    })
}

fn carbon_of<'a>(el: &'a Element, direction: &str, account: &str) -> Option<&'a Element> {
    if el.name() != "message" || el.attr("from") != Some(account) {
        return None;
    }
    el.get_child(direction, CARBONS)?
        .get_child("forwarded", FORWARD)?
        .get_child("message", "jabber:client")
}

/// A call signal as clients send it, deliberately without the `<store/>` hint XEP-0353 asks
/// for: older clients omit it and the server must not lose the call for that.
fn signal(to: &str, action: &str, call: &str) -> String {
    let inner = match action {
        "propose" => "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/>",
        "retract" | "reject" => "<reason xmlns='urn:xmpp:jingle:1'><cancel/></reason>",
        _ => "",
    };
    format!(
        "<message to='{to}' type='chat'><{action} xmlns='{JMI}' id='{call}'>{inner}</{action}></message>"
    )
}

/// Every archived message of the session's own archive, oldest first.
async fn archive(session: &mut Session) -> Vec<Element> {
    let qid = format!("calls-{}", QUERIES.fetch_add(1, Ordering::Relaxed));
    session
        .send(&format!(
            "<iq type='set' id='{qid}'><query xmlns='{MAM}' queryid='{qid}'/></iq>"
        ))
        .await;
    let mut messages = Vec::new();
    loop {
        let el = session.next().await;
        if el.name() == "iq" && el.attr("id") == Some(qid.as_str()) {
            assert_eq!(el.attr("type"), Some("result"), "{el:?}");
            return messages;
        }
        if let Some(message) = el
            .get_child("result", MAM)
            .and_then(|r| r.get_child("forwarded", FORWARD))
            .and_then(|f| f.get_child("message", "jabber:client"))
        {
            messages.push(message.clone());
        }
    }
}

fn archived_signals(messages: &[Element]) -> Vec<(String, String)> {
    messages.iter().filter_map(call_signal).collect()
}

fn pair(action: &str, call: &str) -> (String, String) {
    (action.to_owned(), call.to_owned())
}

#[tokio::test]
async fn a_call_rings_every_device_stops_them_all_and_is_archived_on_both_sides() {
    let server = TestServer::start().await;
    server.add_user("romeo").await;
    server.add_user("juliet").await;
    let mut orchard = Session::online(&server, "romeo", "orchard").await;
    let mut balcony = Session::online(&server, "romeo", "balcony").await;
    let mut phone = Session::online(&server, "juliet", "phone").await;
    let mut laptop = Session::online(&server, "juliet", "laptop").await;
    for session in [&mut orchard, &mut balcony, &mut phone, &mut laptop] {
        enable_carbons(session).await;
    }

    // Romeo proposes from the orchard: both of Juliet's devices ring, and Romeo's balcony
    // learns of the outgoing call from a sent carbon.
    orchard
        .send(&signal("juliet@localhost", "propose", "call-1"))
        .await;
    for device in [&mut phone, &mut laptop] {
        let got = device
            .expect(|el| call_signal(el) == Some(pair("propose", "call-1")))
            .await;
        assert_eq!(got.attr("from"), Some("romeo@localhost/orchard"));
    }
    balcony
        .expect(|el| {
            carbon_of(el, "sent", "romeo@localhost")
                .and_then(call_signal)
                .is_some_and(|s| s == pair("propose", "call-1"))
        })
        .await;

    // The phone rings and then takes the call: Romeo's devices hear it (bare JID), and the
    // laptop stops ringing thanks to the sent carbon.
    phone
        .send(&signal("romeo@localhost", "ringing", "call-1"))
        .await;
    phone
        .send(&signal("romeo@localhost", "proceed", "call-1"))
        .await;
    for device in [&mut orchard, &mut balcony] {
        device
            .expect(|el| call_signal(el) == Some(pair("proceed", "call-1")))
            .await;
    }
    laptop
        .expect(|el| {
            carbon_of(el, "sent", "juliet@localhost")
                .and_then(call_signal)
                .is_some_and(|s| s == pair("proceed", "call-1"))
        })
        .await;

    // Romeo hangs up, to the phone's full JID: the laptop gets a received carbon.
    orchard
        .send(&signal("juliet@localhost/phone", "finish", "call-1"))
        .await;
    phone
        .expect(|el| call_signal(el) == Some(pair("finish", "call-1")))
        .await;
    laptop
        .expect(|el| {
            carbon_of(el, "received", "juliet@localhost")
                .and_then(call_signal)
                .is_some_and(|s| s == pair("finish", "call-1"))
        })
        .await;

    // Both archives tell the whole story, in order, for a device that was not there.
    let expected = vec![
        pair("propose", "call-1"),
        pair("ringing", "call-1"),
        pair("proceed", "call-1"),
        pair("finish", "call-1"),
    ];
    assert_eq!(archived_signals(&archive(&mut laptop).await), expected);
    assert_eq!(archived_signals(&archive(&mut balcony).await), expected);
}

#[tokio::test]
async fn a_call_to_a_callee_with_no_device_online_waits_offline_with_its_retraction() {
    let server = TestServer::start().await;
    server.add_user("romeo").await;
    server.add_user("juliet").await;
    let mut orchard = Session::online(&server, "romeo", "orchard").await;
    orchard
        .send(&signal("juliet@localhost", "propose", "call-2"))
        .await;
    orchard
        .send(&signal("juliet@localhost", "retract", "call-2"))
        .await;
    // A barrier: once this reaches Juliet's storage, the calls before it did too.
    let marker = Session::marker();
    orchard.send_marker("juliet@localhost", &marker).await;
    orchard.drain().await;

    let mut phone = Session::login(&server, "juliet", "phone").await;
    phone.send("<presence/>").await;
    let stored = phone.until_marker(&marker).await;
    let signals: Vec<_> = stored
        .iter()
        .filter(|el| el.has_child("delay", "urn:xmpp:delay"))
        .filter_map(call_signal)
        .collect();
    assert_eq!(
        signals,
        vec![pair("propose", "call-2"), pair("retract", "call-2")],
        "{stored:?}"
    );
}

#[tokio::test]
async fn receipts_and_markers_reach_the_other_devices_and_the_archive_chat_states_do_not() {
    let server = TestServer::start().await;
    server.add_user("romeo").await;
    server.add_user("juliet").await;
    let mut orchard = Session::online(&server, "romeo", "orchard").await;
    let mut phone = Session::online(&server, "juliet", "phone").await;
    let mut laptop = Session::online(&server, "juliet", "laptop").await;
    enable_carbons(&mut laptop).await;

    orchard
        .send(
            "<message to='juliet@localhost/phone' type='chat' id='m1'><body>hello</body>\
             <request xmlns='urn:xmpp:receipts'/><markable xmlns='urn:xmpp:chat-markers:0'/></message>",
        )
        .await;
    phone
        .expect(|el| el.get_child("body", "jabber:client").is_some())
        .await;
    // The phone confirms delivery and that Juliet read it (Conversations sends the marker as
    // a chat message, Dino as a normal one), and says it is composing (never archived).
    phone
        .send(&format!(
            "<message to='romeo@localhost/orchard' type='chat'><received xmlns='{RECEIPTS}' id='m1'/></message>"
        ))
        .await;
    phone
        .send(&format!(
            "<message to='romeo@localhost/orchard'><displayed xmlns='{MARKERS}' id='m1'/></message>"
        ))
        .await;
    phone
        .send("<message to='romeo@localhost/orchard' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
        .await;

    for (name, namespace) in [("received", RECEIPTS), ("displayed", MARKERS)] {
        orchard.expect(|el| el.has_child(name, namespace)).await;
        laptop
            .expect(|el| {
                carbon_of(el, "sent", "juliet@localhost")
                    .is_some_and(|m| m.has_child(name, namespace))
            })
            .await;
    }

    let archived = archive(&mut laptop).await;
    let kinds: Vec<&str> = archived
        .iter()
        .map(|m| {
            if m.has_child("body", "jabber:client") {
                "body"
            } else if m.has_child("received", RECEIPTS) {
                "receipt"
            } else if m.has_child("displayed", MARKERS) {
                "displayed"
            } else {
                "other"
            }
        })
        .collect();
    assert_eq!(kinds, vec!["body", "receipt", "displayed"], "{archived:?}");
    let romeo_archive = archive(&mut orchard).await;
    assert_eq!(romeo_archive.len(), 3, "{romeo_archive:?}");
}
