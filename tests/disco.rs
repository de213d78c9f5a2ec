//! XEP-0030 over real sockets with an in-test module that contributes what clients discover:
//! an item of the server, and nodes on the server and on every account, answered by the
//! module and not by the disco module.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use common::xmpp::{error_condition, Session};
use common::TestServer;
use corvid::router::{
    DiscoQuery, DiscoTarget, Identity, Item, ItemSource, Module, NodeHandler, NodeInfo, Registry,
    Router,
};
use corvid::stanza::StanzaError;
use minidom::Element;

const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
/// A command-list-like node a module owns (the real XEP-0050 node belongs to the ad-hoc
/// module, tested in tests/adhoc.rs).
const COMMANDS: &str = "urn:example:commands";
const PRIVATE_NODE: &str = "urn:example:owner-only";
const UPLOAD: &str = "upload.localhost";

/// Stands in for a module with something to discover: a command list on the server and on
/// accounts, an upload service among the server's items, and a node only its owner may see.
struct Contributor;

impl Module for Contributor {
    fn name(&self) -> &'static str {
        "contributor"
    }

    fn register(self: Arc<Self>, registry: &mut Registry) {
        registry.disco_items(DiscoTarget::Server, self.clone());
        registry.disco_node(DiscoTarget::Server, COMMANDS, self.clone());
        registry.disco_node(DiscoTarget::Account, COMMANDS, self.clone());
        registry.disco_node(DiscoTarget::Account, PRIVATE_NODE, Arc::new(OwnerOnly));
    }
}

#[async_trait]
impl ItemSource for Contributor {
    async fn items(&self, _router: &Arc<Router>, _query: &DiscoQuery<'_>) -> Vec<Item> {
        vec![Item::new(UPLOAD).named("File upload")]
    }
}

#[async_trait]
impl NodeHandler for Contributor {
    async fn info(
        &self,
        _router: &Arc<Router>,
        _query: &DiscoQuery<'_>,
    ) -> Result<NodeInfo, StanzaError> {
        Ok(NodeInfo {
            identities: vec![Identity::new("automation", "command-list").named("Commands")],
            features: vec![COMMANDS.to_owned()],
        })
    }

    async fn items(
        &self,
        router: &Arc<Router>,
        query: &DiscoQuery<'_>,
    ) -> Result<Vec<Item>, StanzaError> {
        // Who the list belongs to: the account asked about, or the server.
        let owner = match query.account {
            Some(account) => account.to_string(),
            None => router.domain().to_owned(),
        };
        Ok(vec![
            Item::new(owner.clone()).with_node("ping").named("Ping"),
            Item::new(owner).with_node("uptime").named("Uptime"),
        ])
    }
}

/// A node whose answers depend on who asks.
struct OwnerOnly;

#[async_trait]
impl NodeHandler for OwnerOnly {
    async fn info(
        &self,
        _router: &Arc<Router>,
        query: &DiscoQuery<'_>,
    ) -> Result<NodeInfo, StanzaError> {
        if query.account != Some(&query.from.to_bare()) {
            return Err(StanzaError::forbidden());
        }
        Ok(NodeInfo {
            identities: Vec::new(),
            features: vec!["urn:example:secret".to_owned()],
        })
    }
}

async fn start() -> TestServer {
    let extra: Vec<Arc<dyn Module>> = vec![Arc::new(Contributor)];
    let server = TestServer::start_full(|_| {}, |s| s, extra).await;
    server.add_user("alice").await;
    server.add_user("bob").await;
    server
}

fn query(to: &str, ns: &str, node: Option<&str>) -> String {
    let node = node.map(|n| format!(" node='{n}'")).unwrap_or_default();
    format!("<iq to='{to}' type='get'><query xmlns='{ns}'{node}/></iq>")
}

fn result_query<'a>(answer: &'a Element, ns: &str) -> &'a Element {
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    answer.get_child("query", ns).expect("query in the result")
}

/// (jid, node, name) of each item.
fn items(answer: &Element) -> Vec<(String, Option<String>, Option<String>)> {
    result_query(answer, DISCO_ITEMS)
        .children()
        .filter(|c| c.is("item", DISCO_ITEMS))
        .map(|c| {
            (
                c.attr("jid").unwrap_or_default().to_owned(),
                c.attr("node").map(str::to_owned),
                c.attr("name").map(str::to_owned),
            )
        })
        .collect()
}

fn features(answer: &Element) -> Vec<String> {
    result_query(answer, DISCO_INFO)
        .children()
        .filter_map(|c| c.attr("var").map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_modules_node_on_the_server_is_answered_by_that_module() {
    let t = start().await;
    let mut alice = Session::login(&t, "alice", "a").await;

    let info = alice
        .iq(&query("localhost", DISCO_INFO, Some(COMMANDS)))
        .await;
    let q = result_query(&info, DISCO_INFO);
    assert_eq!(q.attr("node"), Some(COMMANDS));
    let identity = q.get_child("identity", DISCO_INFO).expect("identity");
    assert_eq!(
        (
            identity.attr("category"),
            identity.attr("type"),
            identity.attr("name")
        ),
        (Some("automation"), Some("command-list"), Some("Commands"))
    );
    assert_eq!(features(&info), [COMMANDS]);

    let list = alice
        .iq(&query("localhost", DISCO_ITEMS, Some(COMMANDS)))
        .await;
    assert_eq!(
        result_query(&list, DISCO_ITEMS).attr("node"),
        Some(COMMANDS)
    );
    let some = |s: &str| Some(s.to_owned());
    assert_eq!(
        items(&list),
        [
            ("localhost".to_owned(), some("ping"), some("Ping")),
            ("localhost".to_owned(), some("uptime"), some("Uptime")),
        ]
    );
}

#[tokio::test]
async fn a_modules_node_on_an_account_sees_the_account_and_the_requester() {
    let t = start().await;
    let mut alice = Session::login(&t, "alice", "a").await;
    let mut bob = Session::login(&t, "bob", "b").await;

    let list = bob
        .iq(&query("alice@localhost", DISCO_ITEMS, Some(COMMANDS)))
        .await;
    let jids: Vec<String> = items(&list).into_iter().map(|(jid, _, _)| jid).collect();
    assert_eq!(jids, ["alice@localhost", "alice@localhost"]);

    // The module decides who may see its node; its error reaches the client as is.
    let own = alice
        .iq(&query("alice@localhost", DISCO_INFO, Some(PRIVATE_NODE)))
        .await;
    assert_eq!(features(&own), ["urn:example:secret"]);
    let other = bob
        .iq(&query("alice@localhost", DISCO_INFO, Some(PRIVATE_NODE)))
        .await;
    assert_eq!(error_condition(&other).as_deref(), Some("forbidden"));
}

#[tokio::test]
async fn server_items_come_from_the_modules_that_provide_them() {
    let t = start().await;
    let mut alice = Session::login(&t, "alice", "a").await;
    let list = alice.iq(&query("localhost", DISCO_ITEMS, None)).await;
    let found = items(&list);
    assert!(
        found.contains(&(UPLOAD.to_owned(), None, Some("File upload".to_owned()))),
        "{found:?}"
    );
    // The MUC module lists its own service.
    assert!(
        found
            .iter()
            .any(|(jid, _, _)| jid == "conference.localhost"),
        "{found:?}"
    );
}

#[tokio::test]
async fn a_node_nobody_provides_is_item_not_found_and_set_is_not_allowed() {
    let t = start().await;
    let mut alice = Session::login(&t, "alice", "a").await;
    for (to, ns) in [
        ("localhost", DISCO_INFO),
        ("localhost", DISCO_ITEMS),
        ("alice@localhost", DISCO_INFO),
        ("alice@localhost", DISCO_ITEMS),
    ] {
        let answer = alice.iq(&query(to, ns, Some("urn:example:nobody"))).await;
        assert_eq!(
            error_condition(&answer).as_deref(),
            Some("item-not-found"),
            "{to} {ns}"
        );
    }
    // An account's node is not the server's.
    let answer = alice
        .iq(&query("localhost", DISCO_INFO, Some(PRIVATE_NODE)))
        .await;
    assert_eq!(error_condition(&answer).as_deref(), Some("item-not-found"));
    let set = alice
        .iq(&format!(
            "<iq to='localhost' type='set'><query xmlns='{DISCO_INFO}' node='{COMMANDS}'/></iq>"
        ))
        .await;
    assert_eq!(error_condition(&set).as_deref(), Some("not-allowed"));
}
