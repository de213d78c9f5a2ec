//! The router's door to other domains: a module registered with `remote_domains` (an in-test
//! stand-in for federation's outbound side) gets every stanza for a domain that is neither
//! hosted here nor served by a component, with `from` stamped; what it sends back in through
//! `Router::route` reaches local users with the usual rules (roster state included). Without
//! one, the same stanzas are bounced (tests/routing.rs).

mod common;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use common::xmpp::{is_roster_push, pushed_item, Session};
use common::TestServer;
use corvid::router::{Component, Module, Registry, Router};
use corvid::stanza::Kind;
use jid::Jid;
use minidom::Element;

const REMOTE: &str = "example.net";

/// Records what leaves for other domains, and answers a ping as a remote server would.
#[derive(Default)]
struct Egress {
    sent: Mutex<Vec<(Kind, String, Element)>>,
}

impl Egress {
    fn sent(&self) -> Vec<(Kind, String, Element)> {
        self.sent.lock().expect("lock").clone()
    }
}

impl Module for Egress {
    fn name(&self) -> &'static str {
        "test-egress"
    }

    fn register(self: Arc<Self>, registry: &mut Registry) {
        registry.remote_domains(self);
    }
}

#[async_trait]
impl Component for Egress {
    async fn handle(&self, router: &Arc<Router>, kind: Kind, to: Jid, stanza: Element) {
        self.sent
            .lock()
            .expect("lock")
            .push((kind, to.to_string(), stanza.clone()));
        if kind == Kind::Iq && stanza.attr("type") == Some("get") {
            let from = stanza.attr("from").expect("stamped from");
            let answer: Element = format!(
                "<iq xmlns='jabber:client' type='result' from='{to}' to='{from}' id='{}'/>",
                stanza.attr("id").unwrap_or_default()
            )
            .parse()
            .expect("answer");
            router
                .route(Kind::Iq, Jid::new(from).expect("jid"), answer)
                .await;
        }
    }
}

async fn server() -> (TestServer, Arc<Egress>) {
    let egress = Arc::new(Egress::default());
    let t = TestServer::start_full(|_| {}, |s| s, vec![egress.clone()]).await;
    t.add_user("alice").await;
    (t, egress)
}

#[tokio::test]
async fn stanzas_for_other_domains_leave_through_the_registered_door_and_answers_come_back() {
    let (t, egress) = server().await;
    let mut alice = Session::online(&t, "alice", "pc").await;

    alice
        .send("<message to='bob@example.net' type='chat' id='m1'><body>hi</body></message>")
        .await;
    let answer = alice
        .iq("<iq to='example.net' type='get'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    assert_eq!(answer.attr("from"), Some(REMOTE));

    let sent = egress.sent();
    let (kind, to, message) = &sent[0];
    assert_eq!((*kind, to.as_str()), (Kind::Message, "bob@example.net"));
    assert_eq!(message.attr("from"), Some("alice@localhost/pc"));
    assert_eq!(message.attr("id"), Some("m1"));
    assert!(
        !sent
            .iter()
            .any(|(_, _, el)| el.attr("type") == Some("error")),
        "nothing bounced: {sent:?}"
    );
}

#[tokio::test]
async fn a_subscription_to_a_remote_contact_goes_out_and_its_approval_comes_back_in() {
    let (t, egress) = server().await;
    let mut alice = Session::online(&t, "alice", "pc").await;
    alice
        .send("<presence type='subscribe' to='bob@example.net'/>")
        .await;
    let push = alice.expect(is_roster_push).await;
    let item = pushed_item(&push).expect("item");
    assert_eq!(item.attr("ask"), Some("subscribe"));

    let sent = egress.sent();
    let (kind, to, request) = sent.last().expect("sent");
    assert_eq!((*kind, to.as_str()), (Kind::Presence, "bob@example.net"));
    // RFC 6121 §3.1.2: a subscription request carries the bare JID.
    assert_eq!(request.attr("from"), Some("alice@localhost"));

    // The remote contact approves: the router applies it like any other (§3.1.5).
    let approval: Element = "<presence xmlns='jabber:client' type='subscribed' \
         from='bob@example.net' to='alice@localhost'/>"
        .parse()
        .expect("presence");
    let router = t.server.ctx.router.clone();
    router
        .route(
            Kind::Presence,
            Jid::new("alice@localhost").expect("jid"),
            approval,
        )
        .await;
    let push = alice.expect(is_roster_push).await;
    let item = pushed_item(&push).expect("item");
    assert_eq!(item.attr("subscription"), Some("to"), "{push:?}");
}
