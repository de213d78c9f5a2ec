//! The end of the negotiation: RFC 6120 §7 resource binding, or XEP-0198 §5 resumption of a
//! detached session in its place.

use jid::{BareJid, FullJid};
use minidom::Element;
use tracing::debug;

use super::C2s;
use crate::router::Reservation;
use crate::stanza::Condition;
use crate::stanza::{self, StanzaError};
use crate::stream::cluster_resume;
use crate::stream::end::End;
use crate::stream::random_id::random_id;
use crate::stream::resumption::Resumed;
use crate::stream::sasl_stream::SaslStream;
use crate::stream::sm::{self, Nonza};
use crate::stream::transport::Transport;
use crate::xml::ns;
use crate::xml::StreamCondition;

impl<T: Transport> C2s<T> {
    /// RFC 6120 §7: binds the requested resource, or a generated one. None when the account
    /// has all the resources it may have: the client was told so and may close or retry.
    pub(super) async fn bind(
        &mut self,
        username: &str,
        iq: &Element,
    ) -> Result<Option<(FullJid, Reservation)>, End> {
        let requested = iq
            .get_child("bind", ns::BIND)
            .and_then(|b| b.get_child("resource", ns::BIND))
            .map(|r| r.text())
            .filter(|r| !r.trim().is_empty());
        let resource = requested.unwrap_or_else(random_id);
        let full = format!("{username}@{}/{resource}", self.domain);
        let Ok(jid) = FullJid::new(&full) else {
            let error = StanzaError::bad_request().with_text("invalid resource");
            let reply = stanza::error_reply(iq, &error, &self.domain);
            self.send_el(&reply).await?;
            return Err(End::Error(
                StreamCondition::NotAuthorized,
                Some("no valid resource bound".into()),
            ));
        };
        let reservation = match self.ctx.router.reserve_resource(&jid) {
            Ok(reservation) => reservation,
            Err(refusal) => {
                debug!(%jid, %refusal, "resource refused");
                // RFC 6120 §7.6.2.1.
                let error = StanzaError::resource_constraint().with_text(refusal.to_string());
                let reply = stanza::error_reply(iq, &error, &self.domain);
                self.send_el(&reply).await?;
                return Ok(None);
            }
        };
        let mut jid_el = Element::bare("jid", ns::BIND);
        jid_el.append_text(jid.to_string());
        let mut bind = Element::bare("bind", ns::BIND);
        bind.append_child(jid_el);
        let mut reply = Element::bare("iq", ns::CLIENT);
        if let Some(id) = iq.attr("id") {
            stanza::set_attr(&mut reply, "id", id);
        }
        stanza::set_attr(&mut reply, "type", "result");
        reply.append_child(bind);
        self.send_el(&reply).await?;
        Ok(Some((jid, reservation)))
    }

    /// Stream Management before a resource is bound: `<resume/>` takes over a session
    /// (XEP-0198 §5); anything else is too early. Returns the resumed JID, or None when the
    /// client was told `<failed/>` and may go on to bind.
    pub(super) async fn sm_before_bind(
        &mut self,
        user: &str,
        el: &Element,
    ) -> Result<Option<FullJid>, End> {
        let (previd, h) = match sm::parse(el) {
            Some(Ok(Nonza::Resume { previd, h })) => (previd, h),
            Some(Err(e)) => {
                debug!(error = %e, "bad Stream Management element before bind");
                self.send_el(&sm::failed(Condition::BadRequest, None))
                    .await?;
                return Ok(None);
            }
            _ => {
                self.send_el(&sm::failed(Condition::UnexpectedRequest, None))
                    .await?;
                return Ok(None);
            }
        };
        let account = self.account(user);
        let Ok(account) = BareJid::new(&account) else {
            self.send_el(&sm::failed(Condition::ItemNotFound, None))
                .await?;
            return Ok(None);
        };
        match cluster_resume::take(&self.ctx, &previd, &account, h).await {
            Ok(bound) => {
                let jid = bound.jid.clone();
                self.resumed = Some(Resumed {
                    bound,
                    h,
                    announced: false,
                });
                Ok(Some(jid))
            }
            Err(known_h) => {
                debug!(previd, "resumption failed: unknown or expired");
                self.send_el(&sm::failed(Condition::ItemNotFound, known_h))
                    .await?;
                Ok(None)
            }
        }
    }
}
