//! XEP-0198 Stream Management and XEP-0352 Client State Indication on a bound session.

use minidom::Element;
use tracing::debug;

use super::C2s;
use crate::stanza::Condition;
use crate::stream::cluster_resume;
use crate::stream::end::End;
use crate::stream::resumption::Bound;
use crate::stream::sm::{self, Nonza, SmGrant, SmState};
use crate::stream::transport::Transport;
use crate::xml::ns;
use crate::xml::StreamCondition;

impl<T: Transport> C2s<T> {
    /// XEP-0198 and XEP-0352 elements; anything else is not allowed on a client stream.
    pub(super) async fn handle_nonza(&mut self, b: &mut Bound, el: Element) -> Result<(), End> {
        if el.ns() == ns::CSI && matches!(el.name(), "active" | "inactive") {
            let csi = b.csi.get_or_insert_with(Default::default);
            if el.name() == "inactive" {
                csi.deactivate();
                return Ok(());
            }
            let held = csi.activate();
            debug!(held = held.len(), "client active again");
            return self.write_elements(b, held, false).await;
        }
        let nonza = match sm::parse(&el) {
            Some(Ok(nonza)) => nonza,
            Some(Err(e)) => {
                return Err(End::Error(StreamCondition::BadFormat, Some(e.to_string())))
            }
            None => {
                return Err(End::Error(
                    StreamCondition::UnsupportedStanzaType,
                    Some(format!("<{}/> in {}", el.name(), el.ns())),
                ))
            }
        };
        match (nonza, b.sm.as_mut()) {
            (Nonza::Enable { resume, max }, None) => self.enable_sm(b, resume, max).await,
            (Nonza::Ack { h }, Some(sm)) => {
                sm.request_outstanding = false;
                sm.ack(h).map_err(|too_high| {
                    End::ErrorWith(
                        StreamCondition::UndefinedCondition,
                        Box::new(too_high.to_element()),
                    )
                })
            }
            (Nonza::Request, Some(sm)) => {
                let ack = sm::ack(sm.inbound);
                self.send_el(&ack).await
            }
            // Enabling twice, resuming a bound session, acks without SM (XEP-0198 §3, §5).
            _ => {
                self.send_el(&sm::failed(Condition::UnexpectedRequest, None))
                    .await
            }
        }
    }

    /// `<enable/>` (XEP-0198 §3): counting starts now; with `resume`, the session can be taken
    /// over by a later connection for up to the granted timeout.
    async fn enable_sm(
        &mut self,
        b: &mut Bound,
        resume: bool,
        max: Option<u64>,
    ) -> Result<(), End> {
        let server_max = self.ctx.config.stream_management.resume_timeout_secs;
        let node = cluster_resume::node_number(&self.ctx.router);
        let grant = SmGrant::new(resume, max, server_max, node);
        let reply = sm::enabled(grant.id.as_deref(), grant.max_secs);
        self.install_sm(b, grant);
        self.send_el(&reply).await
    }

    /// Starts counting on the session, and makes it resumable under the granted id.
    pub(super) fn install_sm(&mut self, b: &mut Bound, grant: SmGrant) {
        if let Some(id) = &grant.id {
            b.slot = Some(self.ctx.resumption.register(id.clone(), b.jid.to_bare()));
            cluster_resume::attach(&self.ctx);
        }
        debug!(
            resume = grant.id.is_some(),
            granted = grant.max_secs,
            "stream management enabled"
        );
        b.sm = Some(Box::new(SmState::new(grant.id, grant.max_secs)));
    }
}
