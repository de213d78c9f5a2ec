//! What a bound client sends: stanzas are checked, stamped with the session's address and
//! routed; nonzas go to `super::nonzas`.

use minidom::Element;

use super::C2s;
use crate::stanza::{self, Kind};
use crate::stream::end::End;
use crate::stream::resumption::Bound;
use crate::stream::transport::Transport;
use crate::xml::ns;
use crate::xml::StreamCondition;

impl<T: Transport> C2s<T> {
    /// Validates and stamps a stanza from the client, then hands it to the router. Stream
    /// Management and CSI nonzas are answered here.
    pub(super) async fn handle_client_stanza(
        &mut self,
        b: &mut Bound,
        mut el: Element,
    ) -> Result<(), End> {
        let Some(kind) = Kind::of(&el) else {
            return self.handle_nonza(b, el).await;
        };
        let jid = &b.jid;
        if let Some(from) = el.attr("from") {
            let claimed = crate::address::parse(from).ok();
            let own = claimed.as_ref().is_some_and(|c| match c.try_as_full() {
                Ok(full) => full == jid,
                Err(bare) => *bare == jid.to_bare(),
            });
            if !own {
                return Err(End::Error(
                    StreamCondition::InvalidFrom,
                    Some(format!("'{from}' is not this session's address")),
                ));
            }
        }
        stanza::set_attr(&mut el, "from", jid.to_string());
        if kind == Kind::Message {
            // XEP-0280 wrappers are the server's alone: one a client sends claims a copy of
            // someone else's message (a forged carbon), so it never leaves this stream.
            while el.remove_child("received", ns::CARBONS).is_some() {}
            while el.remove_child("sent", ns::CARBONS).is_some() {}
        }
        if let Some(sm) = b.sm.as_mut() {
            sm.count_inbound();
        }
        if kind == Kind::Iq {
            if el.attr("id").is_none() {
                return Err(End::Error(
                    StreamCondition::InvalidXml,
                    Some("<iq/> without id".into()),
                ));
            }
            if is_session_request(&el, &self.domain) {
                let reply = stanza::iq_result(&el, None, &self.domain);
                return self.write_elements(b, vec![reply], false).await;
            }
        }
        Box::pin(self.ctx.router.route_from_client(jid, el)).await;
        Ok(())
    }
}

/// RFC 3921's session establishment, which older clients still send; it is a no-op now.
fn is_session_request(el: &Element, domain: &str) -> bool {
    el.attr("type") == Some("set")
        && el.has_child("session", ns::SESSION)
        && el.attr("to").is_none_or(|to| to == domain)
}
