//! XEP-0092 Software Version of the server.

use std::sync::Arc;

use async_trait::async_trait;
use minidom::Element;

use crate::router::{IqHandler, IqRequest, IqResult, IqType, Module, Registry, Router};
use crate::stanza::StanzaError;
use crate::xml::ns;

pub struct Version;

impl Module for Version {
    fn name(&self) -> &'static str {
        "version"
    }

    fn register(self: Arc<Self>, registry: &mut Registry) {
        registry.server_iq(IqType::Get, ns::VERSION, "query", self);
        registry.server_feature(ns::VERSION);
    }
}

#[async_trait]
impl IqHandler for Version {
    fn unhandled_type(&self) -> StanzaError {
        StanzaError::not_allowed()
    }

    async fn handle_iq(&self, _router: &Arc<Router>, _request: IqRequest) -> IqResult {
        let mut query = Element::bare("query", ns::VERSION);
        for (name, value) in [("name", "corvid"), ("version", env!("CARGO_PKG_VERSION"))] {
            let mut child = Element::bare(name, ns::VERSION);
            child.append_text(value);
            query.append_child(child);
        }
        Ok(Some(query))
    }
}
