//! XEP-0077 in-band registration before authentication, with the invite token of XEP-0445
//! (`<preauth xmlns='urn:xmpp:pars:0'/>`, XEP-0401 §5): the negotiation hands the client's
//! registration IQs here, and the client then authenticates as usual. Offered only on an
//! encrypted stream, so no password ever crosses in clear. What may be registered is decided
//! by `crate::registration`, which the invite page shares.

use std::net::IpAddr;

use minidom::Element;
use tracing::debug;

use super::context::StreamContext;
use super::end::End;
use super::sasl_stream::SaslStream;
use crate::config::RegistrationMode;
use crate::invites;
use crate::registration::query::{self, Request};
use crate::registration::{
    self, NewAccount, RegistrationError, NS_IBR_TOKEN, NS_PARS, NS_REGISTER, NS_REGISTER_FEATURE,
};
use crate::stanza::{self, StanzaError};
use crate::xml::ns;

/// What registration needs of a stream besides what SASL does.
pub(super) trait RegisterStream: SaslStream {
    /// The client's address, counted by open registration's limits.
    fn peer_ip(&self) -> IpAddr;
}

/// What the stream remembers between registration IQs.
#[derive(Debug, Default)]
pub(super) struct PreAuth {
    /// A token the client presented with `<preauth/>` that was valid then.
    token: Option<String>,
}

/// The stream features that offer registration on `domain`, if it is offered there now.
pub fn features(mode: RegistrationMode, secure: bool) -> Vec<Element> {
    if !secure || !mode.offers_registration() {
        return Vec::new();
    }
    let mut features = vec![Element::bare("register", NS_REGISTER_FEATURE)];
    if mode == RegistrationMode::Invite {
        features.push(Element::bare("register", NS_IBR_TOKEN));
    }
    features
}

/// Whether `el` is an IQ this file answers before authentication.
pub(super) fn is_request(el: &Element) -> bool {
    el.is("iq", ns::CLIENT)
        && matches!(el.attr("type"), Some("get" | "set"))
        && (el.has_child("query", NS_REGISTER) || el.has_child("preauth", NS_PARS))
}

/// Answers one registration IQ. Returns whether it was a failed attempt to create an account
/// or to present a token, which the negotiation counts like a failed login.
pub(super) async fn handle<S: RegisterStream>(
    stream: &mut S,
    el: Element,
    state: &mut PreAuth,
) -> Result<bool, End> {
    let domain = stream.domain().to_owned();
    let mode = stream.context().config.registration_mode(&domain);
    let outcome = if !mode.offers_registration() {
        Err(StanzaError::not_allowed().with_text(RegistrationError::Closed.to_string()))
    } else if !stream.is_secure() {
        Err(StanzaError::not_allowed()
            .with_text("registration is offered only on an encrypted stream"))
    } else if let Some(preauth) = el.get_child("preauth", NS_PARS) {
        let token = preauth.attr("token").unwrap_or_default().to_owned();
        preauth_token(stream, token, state).await
    } else if el.attr("type") == Some("get") {
        let ctx = stream.context().clone();
        let fixed = match &state.token {
            Some(token) => fixed_username(&ctx, token).await,
            None => None,
        };
        let text = match (mode, &state.token) {
            (RegistrationMode::Invite, None) => {
                "This server registers accounts with an invite only: present its token first."
            }
            _ => "Choose a username and password to register with this server.",
        };
        Ok(Some(query::fields(text, fixed.as_deref())))
    } else {
        let payload = el.get_child("query", NS_REGISTER).cloned();
        create(stream, payload, state, &domain).await
    };
    let failed = outcome.is_err();
    let reply = match outcome {
        Ok(payload) => stanza::iq_result(&el, payload, &domain),
        Err(error) => {
            debug!(condition = ?error.condition, "registration refused");
            stanza::error_reply(&el, &error, &domain)
        }
    };
    stream.send_element(&reply).await?;
    Ok(failed)
}

async fn preauth_token<S: RegisterStream>(
    stream: &mut S,
    token: String,
    state: &mut PreAuth,
) -> Result<Option<Element>, StanzaError> {
    let ctx = stream.context().clone();
    let now = crate::ids::now_ms() as i64;
    match invites::usable(ctx.router.storage(), &token, now).await {
        Ok(Ok(invite)) if invite.domain == stream.domain() => {
            state.token = Some(token);
            Ok(None)
        }
        Ok(Ok(_)) => Err(StanzaError::item_not_found().with_text("unknown invite")),
        Ok(Err(why)) => Err(StanzaError::item_not_found().with_text(why.to_string())),
        Err(_) => Err(StanzaError::storage_failure()),
    }
}

/// Takes the context, not the stream: nothing borrowed from the transport may live across
/// the storage await (transports are `Send` but not `Sync`).
async fn fixed_username(ctx: &StreamContext, token: &str) -> Option<String> {
    let now = crate::ids::now_ms() as i64;
    invites::usable(ctx.router.storage(), token, now)
        .await
        .ok()?
        .ok()?
        .username
}

async fn create<S: RegisterStream>(
    stream: &mut S,
    payload: Option<Element>,
    state: &mut PreAuth,
    domain: &str,
) -> Result<Option<Element>, StanzaError> {
    let Some(payload) = payload else {
        return Err(StanzaError::bad_request());
    };
    let (username, password) = match query::parse(&payload) {
        Request::Remove => {
            return Err(StanzaError::not_allowed().with_text("authenticate to remove an account"))
        }
        Request::Set { username, password } => (username, password),
    };
    let ctx = stream.context().clone();
    let request = NewAccount {
        domain,
        username: username.as_deref().unwrap_or_default(),
        password: password.as_deref().unwrap_or_default(),
        token: state.token.as_deref(),
        source: stream.peer_ip(),
    };
    match registration::register(&ctx.router, &ctx.registrations, request).await {
        Ok(_) => {
            // The token did its work; a second account needs a second invite.
            state.token = None;
            Ok(None)
        }
        Err(e) => Err(e.stanza_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_only_where_registration_is_offered_and_encrypted() {
        assert!(features(RegistrationMode::Closed, true).is_empty());
        assert!(features(RegistrationMode::Open, false).is_empty());
        assert_eq!(features(RegistrationMode::Open, true).len(), 1);
        let invite = features(RegistrationMode::Invite, true);
        assert!(invite[1].is("register", NS_IBR_TOKEN));
    }
}
