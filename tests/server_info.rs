//! What clients probe the server for, over real sockets: entity time (XEP-0202), contact
//! addresses (XEP-0157) and the outage status addresses (XEP-0455) in its disco#info.

mod common;

use common::xmpp::{error_condition, Session};
use common::TestServer;
use corvid::config::{ContactAddresses, HostConfig};
use minidom::Element;

const B: &str = "b.example";
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const DATA_FORMS: &str = "jabber:x:data";

/// `var -> values` of the disco#info form with `form_type`, if there is one.
fn form(info: &Element, form_type: &str) -> Option<Vec<(String, Vec<String>)>> {
    let query = info.get_child("query", DISCO_INFO)?;
    let forms: Vec<&Element> = query
        .children()
        .filter(|x| x.is("x", DATA_FORMS))
        .filter(|x| {
            x.children().any(|f| {
                f.attr("var") == Some("FORM_TYPE")
                    && f.get_child("value", DATA_FORMS)
                        .map(|v| v.text())
                        .as_deref()
                        == Some(form_type)
            })
        })
        .collect();
    assert!(
        forms.len() <= 1,
        "one form per FORM_TYPE (XEP-0128): {info:?}"
    );
    let form = forms.first()?;
    assert_eq!(form.attr("type"), Some("result"));
    Some(
        form.children()
            .filter(|f| f.attr("var") != Some("FORM_TYPE"))
            .map(|f| {
                (
                    f.attr("var").unwrap_or_default().to_owned(),
                    f.children().map(|v| v.text()).collect(),
                )
            })
            .collect(),
    )
}

async fn disco_info(session: &mut Session, to: &str) -> Element {
    let answer = session
        .iq(&format!(
            "<iq to='{to}' type='get'><query xmlns='{DISCO_INFO}'/></iq>"
        ))
        .await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    answer
}

fn pairs(list: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
    list.iter()
        .map(|(var, values)| {
            (
                var.to_string(),
                values.iter().map(|v| v.to_string()).collect(),
            )
        })
        .collect()
}

#[tokio::test]
async fn contact_addresses_per_domain_and_outage_status_are_in_the_servers_disco_info() {
    let t = TestServer::start_with(|config| {
        config.contact = ContactAddresses {
            admin: vec![
                "mailto:admin@localhost".into(),
                "xmpp:admin@localhost".into(),
            ],
            abuse: vec!["mailto:abuse@localhost".into()],
            ..ContactAddresses::default()
        };
        config.outage.status_addresses = vec!["https://status.example.org/xmpp.json".into()];
        config.hosts.insert(
            B.into(),
            HostConfig {
                contact: Some(ContactAddresses {
                    security: vec!["https://b.example/security.txt".into()],
                    ..ContactAddresses::default()
                }),
                ..HostConfig::default()
            },
        );
    })
    .await;
    t.add_user("alice").await;
    let mut alice = Session::online(&t, "alice", "a").await;

    let info = disco_info(&mut alice, "localhost").await;
    assert_eq!(
        form(&info, "http://jabber.org/network/serverinfo"),
        Some(pairs(&[
            ("abuse-addresses", &["mailto:abuse@localhost"]),
            (
                "admin-addresses",
                &["mailto:admin@localhost", "xmpp:admin@localhost"]
            ),
        ]))
    );
    assert_eq!(
        form(&info, "urn:xmpp:sos:0"),
        Some(pairs(&[(
            "external-status-addresses",
            &["https://status.example.org/xmpp.json"]
        )]))
    );

    // The second domain shows its own contacts, not the main domain's.
    let info = disco_info(&mut alice, B).await;
    assert_eq!(
        form(&info, "http://jabber.org/network/serverinfo"),
        Some(pairs(&[(
            "security-addresses",
            &["https://b.example/security.txt"]
        )]))
    );

    // An account's disco#info is not the server's: no server forms there.
    let info = disco_info(&mut alice, "alice@localhost").await;
    assert_eq!(form(&info, "http://jabber.org/network/serverinfo"), None);
}

#[tokio::test]
async fn nothing_configured_means_no_forms() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    let mut alice = Session::online(&t, "alice", "a").await;
    let info = disco_info(&mut alice, "localhost").await;
    assert_eq!(form(&info, "http://jabber.org/network/serverinfo"), None);
    assert_eq!(form(&info, "urn:xmpp:sos:0"), None);
}

#[tokio::test]
async fn entity_time_of_the_server_and_of_a_client() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    t.add_user("bob").await;
    let mut alice = Session::online(&t, "alice", "a").await;
    let mut bob = Session::online(&t, "bob", "b").await;

    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let answer = alice
        .iq("<iq to='localhost' type='get'><time xmlns='urn:xmpp:time'/></iq>")
        .await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    let time = answer.get_child("time", "urn:xmpp:time").expect("<time/>");
    assert_eq!(
        time.get_child("tzo", "urn:xmpp:time")
            .map(|t| t.text())
            .as_deref(),
        Some("+00:00")
    );
    let utc = time
        .get_child("utc", "urn:xmpp:time")
        .expect("<utc/>")
        .text();
    let utc = chrono::DateTime::parse_from_rfc3339(&utc).expect("XEP-0082 date-time");
    let after = chrono::Utc::now() + chrono::Duration::seconds(1);
    assert!(before <= utc && utc <= after, "{utc}");
    let features = disco_info(&mut alice, "localhost").await;
    assert!(features
        .get_child("query", DISCO_INFO)
        .unwrap()
        .children()
        .any(|f| f.attr("var") == Some("urn:xmpp:time")));
    // A set is not how entity time works.
    let set = alice
        .iq("<iq to='localhost' type='set'><time xmlns='urn:xmpp:time'/></iq>")
        .await;
    assert_eq!(error_condition(&set).as_deref(), Some("not-allowed"));

    // To a client's full JID the query is the client's to answer, as usual.
    alice
        .send("<iq to='bob@localhost/b' type='get' id='t1'><time xmlns='urn:xmpp:time'/></iq>")
        .await;
    let asked = bob.expect(|el| el.name() == "iq").await;
    assert_eq!(asked.attr("from"), Some("alice@localhost/a"));
    bob.send(
        "<iq to='alice@localhost/a' type='result' id='t1'><time xmlns='urn:xmpp:time'>\
         <tzo>+02:00</tzo><utc>2026-01-01T00:00:00Z</utc></time></iq>",
    )
    .await;
    let answer = alice
        .expect(|el| el.name() == "iq" && el.attr("id") == Some("t1"))
        .await;
    assert_eq!(answer.attr("from"), Some("bob@localhost/b"));
    assert!(answer.has_child("time", "urn:xmpp:time"));
}
