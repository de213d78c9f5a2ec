//! XEP-0012 Last Activity: the server's uptime, and how long ago an offline user was last
//! seen (with the status they left with), for the user and contacts subscribed to them.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use chrono::Utc;
use minidom::Element;
use tracing::warn;

use crate::router::{IqHandler, IqRequest, IqResult, IqType, Module, Registry, Router};
use crate::stanza::{self, StanzaError};
use crate::xml::ns;

pub struct LastActivity {
    started: Instant,
}

impl Default for LastActivity {
    fn default() -> Self {
        LastActivity {
            started: Instant::now(),
        }
    }
}

impl Module for LastActivity {
    fn name(&self) -> &'static str {
        "last_activity"
    }

    fn register(self: Arc<Self>, registry: &mut Registry) {
        registry.server_iq(IqType::Get, ns::LAST_ACTIVITY, "query", self.clone());
        registry.account_iq(IqType::Get, ns::LAST_ACTIVITY, "query", self);
        registry.server_feature(ns::LAST_ACTIVITY);
        registry.account_feature(ns::LAST_ACTIVITY);
    }
}

fn answer(seconds: i64, status: &str) -> Element {
    let mut query = Element::bare("query", ns::LAST_ACTIVITY);
    stanza::set_attr(&mut query, "seconds", seconds.max(0).to_string());
    if !status.is_empty() {
        query.append_text(status);
    }
    query
}

#[async_trait]
impl IqHandler for LastActivity {
    fn unhandled_type(&self) -> StanzaError {
        StanzaError::not_allowed()
    }

    async fn handle_iq(&self, router: &Arc<Router>, request: IqRequest) -> IqResult {
        let Some(user) = &request.account else {
            let uptime = i64::try_from(self.started.elapsed().as_secs()).unwrap_or(i64::MAX);
            return Ok(Some(answer(uptime, "")));
        };
        if user.node().is_none() {
            return Err(StanzaError::service_unavailable());
        }
        let requester = request.from.to_bare();
        if requester != *user {
            // §4: only those allowed to see the user's presence may know when it was seen.
            let allowed = router
                .storage()
                .roster
                .roster_item(user.as_str(), &requester.to_string())
                .await
                .ok()
                .flatten()
                .is_some_and(|item| item.subscription.contact_sees_user());
            if !allowed {
                return Err(StanzaError::forbidden());
            }
        }
        if !router.available_resources(user).is_empty() {
            return Ok(Some(answer(0, "")));
        }
        match router
            .storage()
            .last_activity
            .last_activity(user.as_str())
            .await
        {
            Ok(Some(last)) => Ok(Some(answer(
                Utc::now().timestamp() - last.at_secs,
                &last.status,
            ))),
            Ok(None) => Err(StanzaError::item_not_found()),
            Err(e) => {
                warn!(error = %e, "reading last activity failed");
                Err(StanzaError::storage_failure())
            }
        }
    }
}
