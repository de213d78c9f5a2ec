//! XEP-0484 FAST on the stream: logging in with a token (the HT mechanisms of
//! `crate::sasl::ht` against the tokens of `crate::storage::FastTokenStore`) and issuing,
//! rotating and invalidating tokens in the SASL2 `<success/>`.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use minidom::Element;
use rand::RngCore;
use tracing::{debug, warn};

use super::context::StreamContext;
use super::sasl_stream::SaslStream;
use super::throttle::Attempt;
use crate::sasl::{offered_ht_mechanisms, HtMechanism, HtRequest, SaslFailure, SaslSuccess};
use crate::storage::FastToken;
use crate::xml::ns;

/// Random bytes in a token: as strong as the HMAC-SHA-256 it keys.
const TOKEN_BYTES: usize = 32;

/// The HT mechanisms this stream offers: none unless FAST is enabled and the stream encrypted,
/// because without TLS a passive observer could replay a token login.
pub(super) fn offered<S: SaslStream>(stream: &S) -> Vec<HtMechanism> {
    if !stream.context().config.fast.enabled || !stream.is_secure() {
        return Vec::new();
    }
    offered_ht_mechanisms(&stream.channel_bindings())
}

/// `<fast xmlns='urn:xmpp:fast:0' count='…' invalidate='…'/>` of an `<authenticate/>`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct FastUse {
    pub count: Option<i64>,
    pub invalidate: bool,
}

impl FastUse {
    pub fn parse(el: &Element) -> Result<FastUse, SaslFailure> {
        let count = el
            .attr("count")
            .map(|c| c.trim().parse::<i64>().ok().filter(|n| *n >= 0))
            .map(|c| c.ok_or(SaslFailure::MalformedRequest))
            .transpose()?;
        let invalidate = matches!(el.attr("invalidate"), Some("true" | "1"));
        Ok(FastUse { count, invalidate })
    }
}

/// A successful token login: the exchange's result and the token that was used.
pub(super) struct TokenLogin {
    pub success: SaslSuccess,
    pub token: FastToken,
}

/// Checks a token login: the client's hash against the client's stored tokens (the `new` slot
/// first), then expiry and the replay counter.
/// `domain`: the stream's hosted domain, whose account the request's username names.
pub(super) async fn authenticate(
    ctx: &StreamContext,
    domain: &str,
    mechanism: HtMechanism,
    request: HtRequest,
    client_id: Option<&str>,
    fast: FastUse,
    attempt: &mut Attempt,
) -> Result<TokenLogin, SaslFailure> {
    // Tokens belong to one client; without its id there is nothing to check against.
    let Some(client_id) = client_id else {
        return Err(SaslFailure::NotAuthorized);
    };
    // A token is a password the server chose: guessing it is throttled like one.
    let username = request.username().to_string();
    let account = format!("{username}@{domain}");
    attempt.account(&account)?;
    attempt.turn().await;
    let store = &ctx.router.storage().fast;
    let tokens = store.fast_tokens(&account, client_id).await.map_err(|e| {
        warn!(error = %e, "FAST token lookup failed");
        SaslFailure::TemporaryAuthFailure
    })?;
    let now = now_ms();
    // A token only ever verifies with the mechanism it was issued for (XEP-0484 §4.3).
    let matched = tokens
        .into_iter()
        .filter(|t| t.mechanism == mechanism.name())
        .find_map(|t| request.verify(t.token.as_bytes()).map(|answer| (t, answer)));
    let Some((token, answer)) = matched else {
        return Err(SaslFailure::NotAuthorized);
    };
    if token.expires_at_ms <= now {
        // XEP-0484 §5.2: a token no longer trusted fails with credentials-expired, so the
        // client falls back to its password.
        return Err(SaslFailure::CredentialsExpired);
    }
    let fresh = store
        .use_fast_token(&account, client_id, &token.token, fast.count)
        .await
        .map_err(|e| {
            warn!(error = %e, "FAST token update failed");
            SaslFailure::TemporaryAuthFailure
        })?;
    if !fresh {
        debug!(count = ?fast.count, "FAST token replayed or rotated away");
        return Err(SaslFailure::NotAuthorized);
    }
    Ok(TokenLogin {
        success: SaslSuccess {
            username,
            additional_data: Some(answer),
        },
        token,
    })
}

/// The FAST part of a successful login: invalidates the used token if asked, issues a token
/// when the client requested one or the used one is in the second half of its life. Returns
/// the `<token/>` for `<success/>`, if any. Storage errors cost the token, not the login.
/// `account`: the bare JID that logged in.
pub(super) async fn after_success(
    ctx: &StreamContext,
    account: &str,
    client_id: Option<&str>,
    used: Option<&TokenLogin>,
    fast: FastUse,
    requested: Option<HtMechanism>,
) -> Option<Element> {
    let client_id = client_id?;
    let store = &ctx.router.storage().fast;
    if let (Some(used), true) = (used, fast.invalidate) {
        if let Err(e) = store
            .delete_fast_token(account, client_id, &used.token.token)
            .await
        {
            warn!(error = %e, "FAST token invalidation failed");
        }
    }
    let lifetime_ms = lifetime_ms(ctx);
    let now = now_ms();
    let mechanism = match (requested, used) {
        (Some(m), _) => m,
        // Invalidation never comes with an unrequested token (XEP-0484 §4.5).
        (None, Some(_)) if fast.invalidate => return None,
        (None, Some(used)) if used.token.expires_at_ms - now < lifetime_ms / 2 => {
            HtMechanism::from_name(&used.token.mechanism)?
        }
        _ => return None,
    };
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::thread_rng().fill_bytes(&mut bytes);
    let token = BASE64.encode(bytes);
    let expires_at_ms = now.saturating_add(lifetime_ms);
    if let Err(e) = store
        .issue_fast_token(
            account,
            client_id,
            &token,
            mechanism.name(),
            expires_at_ms,
            now,
        )
        .await
    {
        warn!(error = %e, "FAST token could not be stored");
        return None;
    }
    debug!(mechanism = mechanism.name(), "FAST token issued");
    let expiry = DateTime::<Utc>::from_timestamp_millis(expires_at_ms)?
        .to_rfc3339_opts(SecondsFormat::Secs, true);
    let mut el = Element::bare("token", ns::FAST);
    crate::stanza::set_attr(&mut el, "expiry", expiry);
    crate::stanza::set_attr(&mut el, "token", token);
    Some(el)
}

fn lifetime_ms(ctx: &StreamContext) -> i64 {
    i64::try_from(ctx.config.fast.token_lifetime_secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(1000)
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast(xml: &str) -> Result<FastUse, SaslFailure> {
        FastUse::parse(&xml.parse::<Element>().unwrap())
    }

    #[test]
    fn fast_element_attributes() {
        assert_eq!(
            fast("<fast xmlns='urn:xmpp:fast:0' count='7' invalidate='1'/>"),
            Ok(FastUse {
                count: Some(7),
                invalidate: true
            })
        );
        assert_eq!(
            fast("<fast xmlns='urn:xmpp:fast:0'/>"),
            Ok(FastUse::default())
        );
        for bad in ["-1", "x", "99999999999999999999"] {
            assert_eq!(
                fast(&format!("<fast xmlns='urn:xmpp:fast:0' count='{bad}'/>")),
                Err(SaslFailure::MalformedRequest)
            );
        }
    }
}
