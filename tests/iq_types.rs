//! A payload the server knows, sent in the IQ type it does not take: each protocol's own answer
//! (`not-allowed` for XEP-0030/0012/0092, `bad-request` elsewhere), and an outsider who may not
//! use the payload at all gets the same refusal whatever the type.

mod common;

use common::xmpp::{error_condition, Session};
use common::TestServer;

/// (to, type, payload, expected condition); `to` empty for an IQ without `to`.
const CASES: &[(&str, &str, &str, &str)] = &[
    (
        "localhost",
        "set",
        "<query xmlns='jabber:iq:version'/>",
        "not-allowed",
    ),
    (
        "localhost",
        "set",
        "<query xmlns='jabber:iq:last'/>",
        "not-allowed",
    ),
    (
        "localhost",
        "set",
        "<ping xmlns='urn:xmpp:ping'/>",
        "bad-request",
    ),
    ("", "set", "<ping xmlns='urn:xmpp:ping'/>", "bad-request"),
    (
        "localhost",
        "set",
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        "not-allowed",
    ),
    (
        "bob@localhost",
        "set",
        "<query xmlns='http://jabber.org/protocol/disco#items'/>",
        "not-allowed",
    ),
    (
        "",
        "get",
        "<enable xmlns='urn:xmpp:carbons:2'/>",
        "bad-request",
    ),
    (
        "bob@localhost",
        "get",
        "<enable xmlns='urn:xmpp:carbons:2'/>",
        "forbidden",
    ),
    (
        "",
        "get",
        "<enable xmlns='urn:xmpp:push:0' jid='push.example' node='n'/>",
        "bad-request",
    ),
    (
        "bob@localhost",
        "get",
        "<disable xmlns='urn:xmpp:push:0' jid='push.example'/>",
        "forbidden",
    ),
    (
        "",
        "set",
        "<blocklist xmlns='urn:xmpp:blocking'/>",
        "bad-request",
    ),
    (
        "",
        "get",
        "<block xmlns='urn:xmpp:blocking'/>",
        "bad-request",
    ),
    (
        "bob@localhost",
        "set",
        "<blocklist xmlns='urn:xmpp:blocking'/>",
        "service-unavailable",
    ),
    (
        "",
        "set",
        "<metadata xmlns='urn:xmpp:mam:2'/>",
        "bad-request",
    ),
    (
        "bob@localhost",
        "set",
        "<metadata xmlns='urn:xmpp:mam:2'/>",
        "forbidden",
    ),
    (
        "localhost",
        "get",
        "<unknown xmlns='urn:example:none'/>",
        "service-unavailable",
    ),
];

#[tokio::test]
async fn a_known_payload_in_the_wrong_type_gets_its_protocols_answer() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    t.add_user("bob").await;
    let mut alice = Session::login(&t, "alice", "a").await;
    for (to, iq_type, payload, expected) in CASES {
        let to = if to.is_empty() {
            String::new()
        } else {
            format!(" to='{to}'")
        };
        let answer = alice
            .iq(&format!("<iq type='{iq_type}'{to}>{payload}</iq>"))
            .await;
        assert_eq!(
            error_condition(&answer).as_deref(),
            Some(*expected),
            "{iq_type}{to} {payload}: {answer:?}"
        );
    }
}
