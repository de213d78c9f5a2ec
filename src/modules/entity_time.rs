//! XEP-0202 Entity Time of the server. Queries to a user's full JID are the client's to
//! answer and reach it like any IQ.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{Offset, Utc};
use minidom::Element;
use xmpp_parsers::time::TimeResult;

use crate::router::{IqHandler, IqRequest, IqResult, IqType, Module, Registry, Router};
use crate::stanza::StanzaError;
use crate::xml::ns;

pub struct EntityTime;

impl Module for EntityTime {
    fn name(&self) -> &'static str {
        "entity-time"
    }

    fn register(self: Arc<Self>, registry: &mut Registry) {
        registry.server_iq(IqType::Get, ns::TIME, "time", self);
        registry.server_feature(ns::TIME);
    }
}

#[async_trait]
impl IqHandler for EntityTime {
    fn unhandled_type(&self) -> StanzaError {
        StanzaError::not_allowed()
    }

    /// The server keeps UTC: its offset says nothing useful about where its users are.
    async fn handle_iq(&self, _router: &Arc<Router>, _request: IqRequest) -> IqResult {
        let answer = TimeResult {
            tz_offset: Utc.fix(),
            utc: Utc::now(),
        };
        Ok(Some(Element::from(answer)))
    }
}
