//! "Where is this JID?" is the directory's answer: a module registered with
//! `Registry::directory` (an in-test stand-in for a cluster directory) wraps this node's
//! session table and claims some resources live on another node. Stanzas from real clients
//! reach those resources through it, and modules (carbons here) see them, with neither the
//! router nor the modules knowing anything of it.

mod common;

use std::sync::{Arc, Mutex};

use common::xmpp::Session;
use common::TestServer;
use corvid::router::{
    Availability, Directory, Location, Module, NodeId, Outbound, Registry, Replaced, Resource,
    SessionFlag, SessionFlags, SharedStanza,
};
use jid::{BareJid, FullJid};
use minidom::Element;
use tokio::sync::Notify;

const NODE_TWO: NodeId = NodeId(2);

/// What the link to node two carried.
type Forwarded = Arc<Mutex<Vec<(String, Element)>>>;

/// Registers `NodeTwoDirectory` around the local table.
struct Cluster {
    /// Resources bound on node two, all available at priority 0; the carbons flag set on
    /// those listed with `true`.
    elsewhere: Vec<(FullJid, bool)>,
    forwarded: Forwarded,
}

impl Module for Cluster {
    fn name(&self) -> &'static str {
        "test-cluster"
    }

    fn register(self: Arc<Self>, registry: &mut Registry) {
        // The carbons module declares the same name; a cluster directory keeps whatever bits
        // the other node's modules set.
        let carbons = registry.session_flag(corvid::modules::carbons::ENABLED);
        let elsewhere = self
            .elsewhere
            .iter()
            .map(|(jid, with_carbons)| {
                let flags = SessionFlags::default().with(carbons, *with_carbons);
                (jid.clone(), flags)
            })
            .collect();
        let forwarded = self.forwarded.clone();
        registry.directory(Box::new(move |local| {
            Box::new(NodeTwoDirectory {
                local,
                elsewhere,
                forwarded,
            })
        }));
    }
}

struct NodeTwoDirectory {
    local: Box<dyn Directory>,
    elsewhere: Vec<(FullJid, SessionFlags)>,
    forwarded: Forwarded,
}

impl NodeTwoDirectory {
    fn remote(&self, jid: &FullJid) -> Option<SessionFlags> {
        self.elsewhere
            .iter()
            .find(|(remote, _)| remote == jid)
            .map(|(_, flags)| *flags)
    }

    fn remote_of<'a>(&'a self, user: &'a BareJid) -> impl Iterator<Item = Resource<'a>> {
        self.elsewhere
            .iter()
            .filter(move |(jid, _)| jid.to_bare() == *user)
            .map(|(jid, flags)| Resource {
                jid,
                availability: Availability::Available(0),
                flags: *flags,
                seq: 0,
                location: Location::OtherNode(NODE_TWO),
            })
    }

    fn forward(&self, to: &FullJid, stanza: Element) {
        self.forwarded
            .lock()
            .expect("lock")
            .push((to.to_string(), stanza));
    }
}

impl Directory for NodeTwoDirectory {
    fn bind(
        &self,
        jid: FullJid,
        tx: corvid::router::QueueSender<Outbound>,
        stalled: Arc<Notify>,
    ) -> (u64, Option<Replaced>) {
        self.local.bind(jid, tx, stalled)
    }

    fn unbind(&self, jid: &FullJid, seq: u64) -> Option<Availability> {
        self.local.unbind(jid, seq)
    }

    fn set_availability(&self, jid: &FullJid, availability: Availability) -> Option<Availability> {
        self.local.set_availability(jid, availability)
    }

    fn set_flag(&self, jid: &FullJid, flag: SessionFlag, on: bool) {
        self.local.set_flag(jid, flag, on);
    }

    fn locate(&self, jid: &FullJid) -> Location {
        match self.remote(jid) {
            Some(_) => Location::OtherNode(NODE_TWO),
            None => self.local.locate(jid),
        }
    }

    fn flags(&self, jid: &FullJid) -> SessionFlags {
        self.remote(jid).unwrap_or_else(|| self.local.flags(jid))
    }

    fn resources(&self, user: &BareJid, visit: &mut dyn FnMut(Resource<'_>)) {
        self.local.resources(user, visit);
        for resource in self.remote_of(user) {
            visit(resource);
        }
    }

    fn count(&self, user: &BareJid) -> usize {
        self.local.count(user) + self.remote_of(user).count()
    }

    fn has_any(&self, user: &BareJid) -> bool {
        self.local.has_any(user) || self.remote_of(user).next().is_some()
    }

    fn local_count(&self) -> usize {
        self.local.local_count()
    }

    fn deliver(&self, to: &FullJid, stanza: Element) -> Result<(), Element> {
        if self.remote(to).is_none() {
            return self.local.deliver(to, stanza);
        }
        self.forward(to, stanza);
        Ok(())
    }

    fn deliver_shared(&self, to: &FullJid, stanza: &Arc<SharedStanza>) -> bool {
        if self.remote(to).is_none() {
            return self.local.deliver_shared(to, stanza);
        }
        self.forward(to, stanza.element_to(to));
        true
    }
}

fn full(jid: &str) -> FullJid {
    FullJid::new(jid).expect("full jid")
}

async fn server(elsewhere: Vec<(FullJid, bool)>) -> (TestServer, Forwarded) {
    let forwarded = Forwarded::default();
    let cluster = Arc::new(Cluster {
        elsewhere,
        forwarded: forwarded.clone(),
    });
    let t = TestServer::start_full(|_| {}, |s| s, vec![cluster]).await;
    for user in ["alice", "bob", "carol"] {
        t.add_user(user).await;
    }
    (t, forwarded)
}

/// Waits until the link to node two carried something matching `wanted`.
async fn forwarded_matching(
    forwarded: &Forwarded,
    wanted: impl Fn(&str, &Element) -> bool,
) -> (String, Element) {
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        let found = forwarded
            .lock()
            .expect("lock")
            .iter()
            .find(|(to, el)| wanted(to, el))
            .cloned();
        if let Some(found) = found {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing matching reached node two: {:?}",
            forwarded.lock().expect("lock")
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_stanza_to_a_resource_on_another_node_leaves_through_the_directory() {
    let (t, forwarded) = server(vec![(full("bob@localhost/phone"), false)]).await;
    let mut alice = Session::online(&t, "alice", "pc").await;

    alice
        .send("<message to='bob@localhost/phone' type='chat' id='m1'><body>hi</body></message>")
        .await;
    let (to, message) = forwarded_matching(&forwarded, |_, el| el.attr("id") == Some("m1")).await;
    assert_eq!(to, "bob@localhost/phone");
    assert_eq!(message.attr("from"), Some("alice@localhost/pc"));

    // An IQ to that resource is forwarded as well, not refused as an unknown resource.
    alice
        .send("<iq to='bob@localhost/phone' type='get' id='q1'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let (to, _) = forwarded_matching(&forwarded, |_, el| el.attr("id") == Some("q1")).await;
    assert_eq!(to, "bob@localhost/phone");

    // A bare-JID chat message takes the resources the directory lists, wherever they are.
    alice
        .send("<message to='bob@localhost' type='chat' id='m2'><body>again</body></message>")
        .await;
    let (to, _) = forwarded_matching(&forwarded, |_, el| el.attr("id") == Some("m2")).await;
    assert_eq!(to, "bob@localhost/phone");

    let bounced = alice.drain().await;
    assert!(
        !bounced.iter().any(|el| el.attr("type") == Some("error")),
        "nothing bounced: {bounced:?}"
    );
}

#[tokio::test]
async fn modules_find_resources_and_their_flags_on_other_nodes_through_the_directory() {
    let (t, forwarded) = server(vec![(full("alice@localhost/tablet"), true)]).await;
    let mut alice = Session::online(&t, "alice", "pc").await;
    let mut carol = Session::online(&t, "carol", "pc").await;

    // Carbons ask the directory for alice's carbons-enabled sessions: the tablet on node two
    // gets the `<sent/>` copy.
    alice
        .send("<message to='carol@localhost' type='chat' id='c1'><body>hello</body></message>")
        .await;
    carol
        .expect(|el| el.name() == "message" && el.attr("id") == Some("c1"))
        .await;
    let (to, carbon) = forwarded_matching(&forwarded, |_, el| {
        el.get_child("sent", "urn:xmpp:carbons:2").is_some()
    })
    .await;
    assert_eq!(to, "alice@localhost/tablet");
    assert_eq!(carbon.attr("from"), Some("alice@localhost"));

    // Carol's message to alice's bare JID reaches both of alice's available resources.
    carol
        .send("<message to='alice@localhost' type='chat' id='c2'><body>hi both</body></message>")
        .await;
    alice
        .expect(|el| el.name() == "message" && el.attr("id") == Some("c2"))
        .await;
    let (to, _) = forwarded_matching(&forwarded, |_, el| el.attr("id") == Some("c2")).await;
    assert_eq!(to, "alice@localhost/tablet");
}
