//! XEP-0030 Service Discovery for the server (identity `server/im`) and for accounts
//! (`account/registered`, answered by the server on the user's behalf). What is discovered
//! comes from the modules (`Registry::disco_*`); this module only answers the queries.

use std::sync::Arc;

use async_trait::async_trait;
use jid::Jid;
use minidom::Element;
use xmpp_parsers::disco::{self, DiscoInfoResult, DiscoItemsResult};

use crate::router::{
    DiscoQuery, DiscoTarget, Identity, IqHandler, IqRequest, IqResult, IqType, Item, Module,
    Registry, Router,
};
use crate::stanza::{self, StanzaError};
use crate::xml::ns;

pub struct Disco;

impl Module for Disco {
    fn name(&self) -> &'static str {
        "disco"
    }

    fn register(self: Arc<Self>, registry: &mut Registry) {
        for payload_ns in [ns::DISCO_INFO, ns::DISCO_ITEMS] {
            registry.server_iq(IqType::Get, payload_ns, "query", self.clone());
            registry.account_iq(IqType::Get, payload_ns, "query", self.clone());
            registry.server_feature(payload_ns);
            registry.account_feature(payload_ns);
        }
        registry.disco_identity(
            DiscoTarget::Server,
            Identity::new("server", "im").named("corvid"),
        );
        registry.disco_identity(DiscoTarget::Account, Identity::new("account", "registered"));
    }
}

#[async_trait]
impl IqHandler for Disco {
    fn unhandled_type(&self) -> StanzaError {
        StanzaError::not_allowed()
    }

    async fn handle_iq(&self, router: &Arc<Router>, request: IqRequest) -> IqResult {
        let payload = request.payload();
        let target = match request.account {
            None => DiscoTarget::Server,
            Some(_) => DiscoTarget::Account,
        };
        let contributions = router.discovery().of(target);
        // No `to`: the sender's own account (RFC 6120 §10.3.3), so its domain.
        let addressed = request.stanza.attr("to").or(Some(request.from.as_str()));
        let domain = router.hosted_domain_of(addressed);
        let query = DiscoQuery {
            from: &request.from,
            account: request.account.as_ref(),
            domain: &domain,
            node: payload.attr("node"),
        };
        let items = payload.is("query", ns::DISCO_ITEMS);
        if let Some(node) = query.node {
            let Some(handler) = contributions.node(node) else {
                return Err(StanzaError::item_not_found());
            };
            let mut answer = if items {
                items_query(&handler.items(router, &query).await?)
            } else {
                let info = handler.info(router, &query).await?;
                let mut identities: Vec<&Identity> = info.identities.iter().collect();
                identities.sort_unstable();
                let features = info.features.iter().map(String::as_str).collect();
                info_query(&identities, features, Vec::new())
            };
            stanza::set_attr(&mut answer, "node", node);
            return Ok(Some(answer));
        }
        if items {
            return Ok(Some(items_query(
                &contributions.items(router, &query).await,
            )));
        }
        if !account_exists(router, &request).await {
            return Err(StanzaError::service_unavailable());
        }
        let forms = match target {
            DiscoTarget::Server => super::server_info::forms(router.config(), &domain),
            _ => Vec::new(),
        };
        Ok(Some(info_query(
            &contributions.identities(),
            contributions.features().to_vec(),
            forms,
        )))
    }
}

/// The server always exists; an account only once registered.
async fn account_exists(router: &Router, request: &IqRequest) -> bool {
    let Some(account) = &request.account else {
        return true;
    };
    match account.node() {
        Some(_) => router
            .storage()
            .accounts
            .account_exists(account.as_str())
            .await
            .unwrap_or(false),
        None => false,
    }
}

fn info_query(
    identities: &[&Identity],
    features: Vec<&str>,
    extensions: Vec<xmpp_parsers::data_forms::DataForm>,
) -> Element {
    DiscoInfoResult {
        node: None,
        identities: identities
            .iter()
            .map(|identity| disco::Identity {
                category: identity.category.clone(),
                type_: identity.kind.clone(),
                lang: None,
                name: identity.name.clone(),
            })
            .collect(),
        features: features.into_iter().map(str::to_owned).collect(),
        extensions,
    }
    .into()
}

/// Items whose `jid` is not an address are left out: a module contributed something no
/// client could use.
fn items_query(items: &[Item]) -> Element {
    DiscoItemsResult {
        node: None,
        items: items
            .iter()
            .filter_map(|item| {
                Some(disco::Item {
                    jid: Jid::new(&item.jid).ok()?,
                    node: item.node.clone(),
                    name: item.name.clone(),
                })
            })
            .collect(),
        rsm: None,
    }
    .into()
}
