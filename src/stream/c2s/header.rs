//! Stream headers and features: the peer's header checked, ours sent (once per stream), and
//! the features offered at each stage of the negotiation.

use minidom::Element;

use super::C2s;
use crate::stream::end::End;
use crate::stream::fast;
use crate::stream::features;
use crate::stream::random_id::random_id;
use crate::stream::sasl_stream::SaslStream;
use crate::stream::transport::{Incoming, Transport};
use crate::xml::StreamCondition;
use crate::xml::{self, ns, StreamHeader};

impl<T: Transport> C2s<T> {
    /// Reads the peer's stream header and answers with ours (RFC 6120 §4.7).
    pub(super) async fn expect_stream_header(&mut self) -> Result<StreamHeader, End> {
        let header = match self.next_frame().await? {
            Incoming::Open(header) => header,
            Incoming::Close => return Err(End::PeerClosed),
            Incoming::Element(_) => {
                return Err(End::Error(
                    StreamCondition::InvalidXml,
                    Some("expected a stream header".into()),
                ))
            }
        };
        let requested = header.to.as_deref().map(|to| {
            // RFC 7622 §3.2: a trailing label separator is not part of the name.
            let to = to.strip_suffix('.').unwrap_or(to);
            crate::address::parse(to)
                .ok()
                .filter(|jid| jid.node().is_none() && jid.resource().is_none())
                .map(|jid| jid.domain().to_string())
                .unwrap_or_else(|| to.to_owned())
        });
        let known = match &requested {
            None => true,
            Some(to) if self.domain_chosen => *to == self.domain,
            Some(to) if self.ctx.config.is_hosted(to) => {
                self.domain = to.clone();
                true
            }
            Some(_) => false,
        };
        self.domain_chosen = true;
        self.open_stream().await?;
        if !known {
            return Err(End::Error(
                StreamCondition::HostUnknown,
                Some(format!(
                    "this stream is not for a domain served here ({})",
                    self.domain
                )),
            ));
        }
        match header.version.as_deref() {
            Some(v) if v.starts_with("1.") => Ok(header),
            _ => Err(End::Error(
                StreamCondition::UnsupportedVersion,
                Some("XMPP 1.0 streams only".into()),
            )),
        }
    }

    pub(super) async fn open_stream(&mut self) -> Result<(), End> {
        if !self.header_sent {
            let id = random_id();
            let domain = self.domain.clone();
            self.transport.open_stream(&id, &domain).await?;
            self.header_sent = true;
        }
        Ok(())
    }

    pub(super) async fn send_features(&mut self, authenticated: bool) -> Result<(), End> {
        let children = if authenticated {
            features::after_auth(self.ctx.config.c2s.max_stanza_size)
        } else {
            let mechanisms = self.offered_mechanisms();
            let sasl2 = features::sasl2(
                &mechanisms,
                &fast::offered(self),
                self.ctx.router.inline_features(),
            );
            let mut classic = features::before_auth(
                self.transport.can_starttls(),
                self.ctx.config.c2s.require_encryption,
                mechanisms,
                self.transport.channel_bindings(),
            );
            classic.extend(sasl2);
            let mode = self.ctx.config.registration_mode(&self.domain);
            classic.extend(crate::stream::register::features(
                mode,
                self.transport.is_secure(),
            ));
            classic
        };
        self.send_stream_features(children).await
    }

    pub(super) async fn send_stream_features(&mut self, children: Vec<Element>) -> Result<(), End> {
        let features = Element::builder("features", ns::STREAM)
            .append_all(children)
            .build();
        let bytes = xml::stream_element_to_bytes(&features, self.declares_stream_prefix());
        self.transport.send(&[&bytes]).await?;
        Ok(())
    }

    /// Whether a `stream:` element must bind its own prefix. The transport gives its
    /// declaration as text; the writer only needs to know if there is one.
    pub(super) fn declares_stream_prefix(&self) -> bool {
        !self.transport.stream_prefix_declaration().is_empty()
    }
}
