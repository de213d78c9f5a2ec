//! XEP-0199 XMPP Ping: the server answers pings to itself and, on the user's behalf, to bare JIDs.

use std::sync::Arc;

use async_trait::async_trait;

use crate::router::{IqHandler, IqRequest, IqResult, IqType, Module, Registry, Router};
use crate::xml::ns;

pub struct Ping;

impl Module for Ping {
    fn name(&self) -> &'static str {
        "ping"
    }

    fn register(self: Arc<Self>, registry: &mut Registry) {
        registry.server_iq(IqType::Get, ns::PING, "ping", self.clone());
        registry.account_iq(IqType::Get, ns::PING, "ping", self);
        registry.server_feature(ns::PING);
    }
}

#[async_trait]
impl IqHandler for Ping {
    async fn handle_iq(&self, _router: &Arc<Router>, _request: IqRequest) -> IqResult {
        Ok(None)
    }
}
