//! From the first byte to a bound resource: stream headers, STARTTLS, SASL (RFC 6120 or
//! SASL2), then resource binding or Stream Management resumption.

use jid::FullJid;
use minidom::Element;

use super::C2s;
use crate::router::Reservation;
use crate::stanza::{self, StanzaError};
use crate::stream::auth::{self, AuthOutcome};
use crate::stream::bind2::InlineRequests;
use crate::stream::cluster_resume;
use crate::stream::context::StreamContext;
use crate::stream::end::End;
use crate::stream::features;
use crate::stream::register;
use crate::stream::sasl2::{self, Sasl2Outcome};
use crate::stream::transport::{Incoming, Transport};
use crate::xml::ns;
use crate::xml::StreamCondition;

/// What the negotiation ends with: the bound address, and what the client asked to have
/// switched on from the session's start (XEP-0386 inline features).
pub(super) struct Negotiated {
    pub jid: FullJid,
    pub inline: InlineRequests,
    /// The resource's place under the per-account cap, until the router has the session.
    pub reservation: Reservation,
}

impl<T: Transport> C2s<T> {
    /// Takes the stream from the first byte to a bound resource.
    pub(super) async fn negotiate(&mut self) -> Result<Negotiated, End> {
        let mut username: Option<String> = None;
        let mut failures = 0u32;
        let mut registration = register::PreAuth::default();
        loop {
            self.expect_stream_header().await?;
            if username.is_none() {
                refuse_if_draining(&self.ctx)?;
            }
            self.send_features(username.is_some()).await?;
            // Elements of this stream, until it restarts (after TLS or SASL) or binds.
            loop {
                let el = match self.next_frame().await? {
                    Incoming::Element(el) => el,
                    Incoming::Close => return Err(End::PeerClosed),
                    Incoming::Open(_) => {
                        return Err(End::Error(
                            StreamCondition::InvalidXml,
                            Some("unexpected stream header".into()),
                        ))
                    }
                };
                if el.is("starttls", ns::TLS) && username.is_none() {
                    if !self.transport.can_starttls() {
                        self.send_el(&Element::bare("failure", ns::TLS)).await?;
                        return Err(End::Disconnected);
                    }
                    self.send_el(&Element::bare("proceed", ns::TLS)).await?;
                    // The certificate of the domain the stream is for (RFC 6120 §13.7.2.1).
                    let domain = self.domain.clone();
                    self.transport.starttls(&domain).await?;
                    self.header_sent = false;
                    break;
                }
                if el.is("auth", ns::SASL) && username.is_none() {
                    refuse_if_draining(&self.ctx)?;
                    match auth::authenticate(self, el).await? {
                        AuthOutcome::Success(user) => {
                            username = Some(user);
                            self.transport.restart();
                            self.header_sent = false;
                            break;
                        }
                        AuthOutcome::Failure => {
                            count_failure(&mut failures)?;
                            continue;
                        }
                    }
                }
                // XEP-0388: no stream restart, features right after the success. Bound
                // inline (or resumed inline), the session starts; otherwise the client binds
                // itself.
                if el.is("authenticate", ns::SASL2) && username.is_none() {
                    refuse_if_draining(&self.ctx)?;
                    match sasl2::authenticate(self, el).await? {
                        Sasl2Outcome::Success(login) => {
                            let login = *login;
                            if let Some(jid) = login.bound {
                                self.send_stream_features(features::after_inline_bind())
                                    .await?;
                                return Ok(Negotiated {
                                    jid,
                                    inline: login.inline,
                                    reservation: login.reservation,
                                });
                            }
                            username = Some(login.username);
                            self.send_features(true).await?;
                        }
                        Sasl2Outcome::Failure => count_failure(&mut failures)?,
                    }
                    continue;
                }
                // XEP-0077: registration IQs are the one kind of stanza taken before SASL.
                if username.is_none() && register::is_request(&el) {
                    if register::handle(self, el, &mut registration).await? {
                        count_failure(&mut failures)?;
                    }
                    continue;
                }
                match &username {
                    Some(user) if is_bind_request(&el) => {
                        if let Some((jid, reservation)) = self.bind(user, &el).await? {
                            let inline = InlineRequests::default();
                            return Ok(Negotiated {
                                jid,
                                inline,
                                reservation,
                            });
                        }
                        continue;
                    }
                    Some(_) if el.is("iq", ns::CLIENT) && el.has_child("bind", ns::BIND) => {
                        // Binding is an IQ set (RFC 6120 §7.6.1). Any other type still gets an
                        // answer so the client is not left waiting, except an answer itself.
                        if !matches!(el.attr("type"), Some("result" | "error")) {
                            let error = StanzaError::bad_request()
                                .with_text("resource binding is an iq of type set");
                            let domain = self.domain.clone();
                            self.send_el(&stanza::error_reply(&el, &error, &domain))
                                .await?;
                        }
                        continue;
                    }
                    Some(user) if el.ns() == ns::SM => {
                        if let Some(jid) = self.sm_before_bind(user, &el).await? {
                            let inline = InlineRequests::default();
                            // Resumption takes over a session: no new resource.
                            let reservation = Reservation::uncounted();
                            return Ok(Negotiated {
                                jid,
                                inline,
                                reservation,
                            });
                        }
                        continue;
                    }
                    _ => {
                        return Err(End::Error(
                            StreamCondition::NotAuthorized,
                            Some("authenticate and bind a resource first".into()),
                        ))
                    }
                }
            }
        }
    }
}

const MAX_AUTH_ATTEMPTS: u32 = 5;

/// A draining node takes no logins: the client goes through the load balancer again and
/// reaches another node. Checked again before SASL for a stream that began before the drain.
fn refuse_if_draining(ctx: &StreamContext) -> Result<(), End> {
    if cluster_resume::is_draining(&ctx.router) {
        return Err(End::Error(
            StreamCondition::SystemShutdown,
            Some("this node is draining: connect to another one".into()),
        ));
    }
    Ok(())
}

/// Counts a failed authentication (RFC 6120 or SASL2 alike); too many end the stream.
fn count_failure(failures: &mut u32) -> Result<(), End> {
    *failures += 1;
    if *failures >= MAX_AUTH_ATTEMPTS {
        return Err(End::Error(
            StreamCondition::PolicyViolation,
            Some("too many failed authentication attempts".into()),
        ));
    }
    Ok(())
}

fn is_bind_request(el: &Element) -> bool {
    el.is("iq", ns::CLIENT) && el.attr("type") == Some("set") && el.has_child("bind", ns::BIND)
}
