//! XEP-0030 Service Discovery for the server (identity `server/im`) and for accounts
//! (`account/registered`, answered by the server on the user's behalf).

use std::sync::Arc;

use async_trait::async_trait;
use minidom::Element;

use crate::router::{IqHandler, IqRequest, IqResult, Module, Registry, Router};
use crate::stanza::{self, StanzaError};
use crate::xml::ns;

pub struct Disco;

impl Module for Disco {
    fn name(&self) -> &'static str {
        "disco"
    }

    fn register(self: Arc<Self>, registry: &mut Registry) {
        registry.server_iq(ns::DISCO_INFO, "query", self.clone());
        registry.server_iq(ns::DISCO_ITEMS, "query", self.clone());
        registry.account_iq(ns::DISCO_INFO, "query", self.clone());
        registry.account_iq(ns::DISCO_ITEMS, "query", self);
        for feature in [ns::DISCO_INFO, ns::DISCO_ITEMS] {
            registry.server_feature(feature);
            registry.account_feature(feature);
        }
    }
}

#[async_trait]
impl IqHandler for Disco {
    async fn handle_iq(&self, router: &Arc<Router>, request: IqRequest) -> IqResult {
        if request.is_set {
            return Err(StanzaError::not_allowed());
        }
        let payload = request.payload();
        let payload_ns = payload.ns();
        // Nodes are for services that publish them; we publish none yet.
        if payload.attr("node").is_some() {
            return Err(StanzaError::item_not_found());
        }
        if payload_ns == ns::DISCO_ITEMS {
            let mut query = Element::bare("query", ns::DISCO_ITEMS);
            match &request.account {
                Some(account) => {
                    for item in super::pep::disco_items(router, account, &request.from).await {
                        query.append_child(item);
                    }
                }
                // The server lists the services it hosts, which is how clients find MUC.
                None => {
                    for domain in router.component_domains() {
                        let mut item = Element::bare("item", ns::DISCO_ITEMS);
                        stanza::set_attr(&mut item, "jid", domain);
                        query.append_child(item);
                    }
                }
            }
            return Ok(Some(query));
        }
        let (category, kind, features) = match &request.account {
            None => ("server", "im", router.server_features()),
            Some(account) => {
                let exists = match account.node() {
                    Some(node) => router
                        .storage()
                        .accounts
                        .account_exists(node.as_str())
                        .await
                        .unwrap_or(false),
                    None => false,
                };
                if !exists {
                    return Err(StanzaError::service_unavailable());
                }
                ("account", "registered", router.account_features())
            }
        };
        let mut query = Element::bare("query", ns::DISCO_INFO);
        let mut identity = Element::bare("identity", ns::DISCO_INFO);
        stanza::set_attr(&mut identity, "category", category);
        stanza::set_attr(&mut identity, "type", kind);
        if request.account.is_none() {
            stanza::set_attr(&mut identity, "name", "corvid");
        }
        query.append_child(identity);
        // XEP-0163 §6.1: an account with a PEP service is also a pubsub/pep entity.
        if request.account.is_some() && features.contains(&super::pep::PEP_FEATURE) {
            let mut pep = Element::bare("identity", ns::DISCO_INFO);
            stanza::set_attr(&mut pep, "category", "pubsub");
            stanza::set_attr(&mut pep, "type", "pep");
            query.append_child(pep);
        }
        let mut features: Vec<&str> = features.to_vec();
        features.sort_unstable();
        for feature in features {
            let mut el = Element::bare("feature", ns::DISCO_INFO);
            stanza::set_attr(&mut el, "var", feature);
            query.append_child(el);
        }
        Ok(Some(query))
    }
}
