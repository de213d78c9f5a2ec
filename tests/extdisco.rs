//! XEP-0215 External Service Discovery over real sockets: the feature appears only when
//! services are configured, local users get the list (filtered by type), restricted services
//! carry coturn TURN REST credentials that verify with the shared secret, and §3.3
//! credential requests answer for known services and item-not-found for others.

mod common;

use base64::Engine;
use chrono::{DateTime, Utc};
use common::xmpp::Session;
use common::*;
use corvid::config::{
    Config, ExternalService, ExternalServiceType, ExternalTransport, RestrictedService,
};
use corvid::xml::ns;
use hmac::{Hmac, Mac};
use minidom::Element;
use sha1::Sha1;

const EXTDISCO: &str = "urn:xmpp:extdisco:2";
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const SECRET: &str = "coturn-static-auth-secret";
const TTL: u64 = 3600;

fn configure(config: &mut Config) {
    config.external_services = vec![
        ExternalService {
            kind: ExternalServiceType::Stun,
            host: "stun.example.net".into(),
            port: 3478,
            transport: Some(ExternalTransport::Udp),
            restricted: None,
        },
        ExternalService {
            kind: ExternalServiceType::Turn,
            host: "turn.example.net".into(),
            port: 3478,
            transport: Some(ExternalTransport::Udp),
            restricted: Some(RestrictedService {
                secret: SECRET.into(),
                ttl_secs: TTL,
            }),
        },
        ExternalService {
            kind: ExternalServiceType::Turn,
            host: "turn.example.net".into(),
            port: 443,
            transport: Some(ExternalTransport::Tcp),
            restricted: Some(RestrictedService {
                secret: SECRET.into(),
                ttl_secs: TTL,
            }),
        },
        ExternalService {
            kind: ExternalServiceType::Turns,
            host: "turn.example.net".into(),
            port: 5349,
            transport: Some(ExternalTransport::Tcp),
            restricted: Some(RestrictedService {
                secret: SECRET.into(),
                ttl_secs: TTL,
            }),
        },
    ];
}

fn error_condition(el: &Element) -> Option<String> {
    el.get_child("error", ns::CLIENT).and_then(|e| {
        e.children()
            .find(|c| c.ns() == ns::STANZAS_ERRORS && c.name() != "text")
            .map(|c| c.name().to_string())
    })
}

async fn server_features(session: &mut Session) -> Vec<String> {
    let answer = session
        .iq(&format!(
            "<iq type='get' to='{DOMAIN}'><query xmlns='{DISCO_INFO}'/></iq>"
        ))
        .await;
    assert_eq!(answer.attr("type"), Some("result"));
    answer
        .get_child("query", DISCO_INFO)
        .expect("disco#info result")
        .children()
        .filter_map(|c| c.attr("var").map(str::to_owned))
        .collect()
}

/// The `<service/>` children of `payload` in the answer, or a panic naming the answer.
fn services<'a>(answer: &'a Element, payload: &str) -> Vec<&'a Element> {
    assert_eq!(
        answer.attr("type"),
        Some("result"),
        "{}",
        corvid::xml::to_string(answer)
    );
    answer
        .get_child(payload, EXTDISCO)
        .unwrap_or_else(|| panic!("no <{payload}/> in {}", corvid::xml::to_string(answer)))
        .children()
        .filter(|c| c.is("service", EXTDISCO))
        .collect()
}

fn summary(service: &Element) -> (String, String, String, String) {
    let attr = |name: &str| service.attr(name).unwrap_or_default().to_owned();
    (attr("type"), attr("host"), attr("port"), attr("transport"))
}

/// Checks the coturn `use-auth-secret` scheme: `<expiry>:<bare JID>`, the HMAC-SHA1 of it
/// under the secret, and `expires` the same instant as XEP-0082 text, within the TTL.
fn assert_valid_credentials(service: &Element, bare_jid: &str) {
    assert_eq!(service.attr("restricted"), Some("1"));
    let username = service.attr("username").expect("username");
    let password = service.attr("password").expect("password");
    let expires = service.attr("expires").expect("expires");
    let (expiry, user) = username.split_once(':').expect("expiry:user");
    assert_eq!(user, bare_jid);
    let expiry: i64 = expiry.parse().expect("unix time");
    let now = Utc::now().timestamp();
    assert!(expiry > now, "expired already: {expiry} <= {now}");
    assert!(expiry <= now + TTL as i64, "beyond the TTL: {expiry}");
    assert!(
        expiry >= now + TTL as i64 - 60,
        "far short of the TTL: {expiry}"
    );
    let parsed = DateTime::parse_from_rfc3339(expires).expect("XEP-0082 datetime");
    assert_eq!(parsed.timestamp(), expiry);
    assert!(expires.ends_with('Z'), "UTC: {expires}");
    let mut mac = Hmac::<Sha1>::new_from_slice(SECRET.as_bytes()).expect("hmac");
    mac.update(username.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(password, expected);
}

#[tokio::test]
async fn the_feature_is_advertised_only_when_services_are_configured() {
    let bare = TestServer::start().await;
    bare.add_user("alice").await;
    let mut alice = Session::online(&bare, "alice", "phone").await;
    assert!(!server_features(&mut alice)
        .await
        .contains(&EXTDISCO.to_owned()));
    // Nor is the protocol answered: there is nothing to discover.
    let answer = alice
        .iq(&format!(
            "<iq type='get' to='{DOMAIN}'><services xmlns='{EXTDISCO}'/></iq>"
        ))
        .await;
    assert_eq!(
        error_condition(&answer).as_deref(),
        Some("service-unavailable")
    );

    let configured = TestServer::start_with(configure).await;
    configured.add_user("alice").await;
    let mut alice = Session::online(&configured, "alice", "phone").await;
    assert!(server_features(&mut alice)
        .await
        .contains(&EXTDISCO.to_owned()));
}

#[tokio::test]
async fn services_are_listed_whole_and_by_type() {
    let t = TestServer::start_with(configure).await;
    t.add_user("alice").await;
    let mut alice = Session::online(&t, "alice", "phone").await;

    let all = alice
        .iq(&format!(
            "<iq type='get' to='{DOMAIN}'><services xmlns='{EXTDISCO}'/></iq>"
        ))
        .await;
    let listed: Vec<_> = services(&all, "services")
        .into_iter()
        .map(summary)
        .collect();
    let expected = |kind: &str, host: &str, port: &str, transport: &str| {
        (kind.into(), host.into(), port.into(), transport.into())
    };
    assert_eq!(
        listed,
        vec![
            expected("stun", "stun.example.net", "3478", "udp"),
            expected("turn", "turn.example.net", "3478", "udp"),
            expected("turn", "turn.example.net", "443", "tcp"),
            expected("turns", "turn.example.net", "5349", "tcp"),
        ]
    );
    // The STUN server is open: no credentials are handed out for it.
    let stun = services(&all, "services")[0];
    for attr in ["restricted", "username", "password", "expires"] {
        assert_eq!(stun.attr(attr), None, "{attr} on an open service");
    }

    let turn = alice
        .iq(&format!(
            "<iq type='get' to='{DOMAIN}'><services xmlns='{EXTDISCO}' type='turn'/></iq>"
        ))
        .await;
    let listed: Vec<_> = services(&turn, "services")
        .into_iter()
        .map(summary)
        .collect();
    assert_eq!(
        listed,
        vec![
            expected("turn", "turn.example.net", "3478", "udp"),
            expected("turn", "turn.example.net", "443", "tcp"),
        ]
    );

    // A type nobody configured is an empty list, not an error.
    let none = alice
        .iq(&format!(
            "<iq type='get' to='{DOMAIN}'><services xmlns='{EXTDISCO}' type='ftp'/></iq>"
        ))
        .await;
    assert!(services(&none, "services").is_empty());

    // Asked without 'to', the request is for the server too.
    let implicit = alice
        .iq(&format!(
            "<iq type='get'><services xmlns='{EXTDISCO}' type='stun'/></iq>"
        ))
        .await;
    assert_eq!(services(&implicit, "services").len(), 1);
}

#[tokio::test]
async fn restricted_services_carry_turn_rest_credentials_that_verify() {
    let t = TestServer::start_with(configure).await;
    t.add_user("alice").await;
    let mut alice = Session::online(&t, "alice", "phone").await;
    let bare = alice.bare().to_owned();

    let all = alice
        .iq(&format!(
            "<iq type='get' to='{DOMAIN}'><services xmlns='{EXTDISCO}'/></iq>"
        ))
        .await;
    let restricted: Vec<_> = services(&all, "services")
        .into_iter()
        .filter(|s| s.attr("type") != Some("stun"))
        .collect();
    assert_eq!(restricted.len(), 3);
    for service in restricted {
        assert_valid_credentials(service, &bare);
    }
}

#[tokio::test]
async fn credentials_for_a_known_service_and_item_not_found_for_others() {
    let t = TestServer::start_with(configure).await;
    t.add_user("alice").await;
    let mut alice = Session::online(&t, "alice", "phone").await;
    let bare = alice.bare().to_owned();
    let ask = |service: &str| {
        format!(
            "<iq type='get' to='{DOMAIN}'><credentials xmlns='{EXTDISCO}'>{service}</credentials></iq>"
        )
    };

    let answer = alice
        .iq(&ask("<service type='turns' host='turn.example.net'/>"))
        .await;
    let got = services(&answer, "credentials");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].attr("port"), Some("5349"));
    assert_valid_credentials(got[0], &bare);

    // Without a port, every service of that type on the host matches (§3.3)...
    let answer = alice
        .iq(&ask("<service type='turn' host='turn.example.net'/>"))
        .await;
    let got = services(&answer, "credentials");
    let ports: Vec<_> = got.iter().map(|s| summary(s).2).collect();
    assert_eq!(ports, ["3478", "443"]);
    for service in got {
        assert_valid_credentials(service, &bare);
    }

    // ...and the port picks between them.
    let answer = alice
        .iq(&ask(
            "<service type='turn' host='turn.example.net' port='3478'/>",
        ))
        .await;
    let got = services(&answer, "credentials");
    assert_eq!(got.len(), 1);
    assert_eq!(summary(got[0]).2, "3478");
    assert_valid_credentials(got[0], &bare);

    for unknown in [
        "<service type='turn' host='elsewhere.example.net'/>",
        "<service type='turn' host='turn.example.net' port='9999'/>",
        "<service type='stun' host='turn.example.net'/>",
    ] {
        let answer = alice.iq(&ask(unknown)).await;
        assert_eq!(answer.attr("type"), Some("error"), "{unknown}");
        assert_eq!(
            error_condition(&answer).as_deref(),
            Some("item-not-found"),
            "{unknown}"
        );
    }

    let answer = alice.iq(&ask("<service type='turn'/>")).await;
    assert_eq!(error_condition(&answer).as_deref(), Some("bad-request"));
    let answer = alice.iq(&ask("")).await;
    assert_eq!(error_condition(&answer).as_deref(), Some("bad-request"));
}

#[tokio::test]
async fn each_user_gets_credentials_of_their_own() {
    let t = TestServer::start_with(configure).await;
    t.add_user("alice").await;
    t.add_user("bob").await;
    let mut alice = Session::online(&t, "alice", "phone").await;
    let mut bob = Session::online(&t, "bob", "laptop").await;
    let ask = format!(
        "<iq type='get' to='{DOMAIN}'><credentials xmlns='{EXTDISCO}'><service type='turns' host='turn.example.net'/></credentials></iq>"
    );
    let for_alice = alice.iq(&ask).await;
    let for_bob = bob.iq(&ask).await;
    let alice_service = services(&for_alice, "credentials")[0];
    let bob_service = services(&for_bob, "credentials")[0];
    assert_valid_credentials(alice_service, "alice@localhost");
    assert_valid_credentials(bob_service, "bob@localhost");
    assert_ne!(alice_service.attr("password"), bob_service.attr("password"));
}
