//! XEP-0388 SASL2: `<authenticate/>` carries the mechanism, the initial response, who the
//! client is (`<user-agent/>`) and what it wants done inline (XEP-0386 Bind2, XEP-0484 FAST,
//! stream management); `<success/>` answers all of it at once and the stream goes on without a
//! restart.
//!
//! The password mechanisms run the challenge/response loop of `super::auth`; the token
//! mechanisms are `super::fast`; resource binding is `super::bind2`.

use jid::{BareJid, FullJid};
use minidom::Element;
use tracing::debug;

use super::auth::{self, AuthOutcome, Exchange, Wrapper};
use super::bind2::{self, BindRequest, InlineRequests};
use super::cluster_resume;
use super::end::End;
use super::fast::{self, FastUse, TokenLogin};
use super::random_id::random_id;
use super::resumption::Resumed;
use super::sasl_stream::SaslStream;
use super::sm::{self, Nonza, SmGrant};
use super::throttle::Attempt;
use crate::router::{Reservation, TooManyResources};
use crate::sasl::{self, HtMechanism, HtRequest, Mechanism, SaslFailure};
use crate::stanza::Condition;
use crate::xml::ns;

/// Longest `<user-agent id='…'/>` accepted: a UUID is 36 characters; the id is stored with
/// every FAST token, so it must not be unbounded.
const MAX_CLIENT_ID_CHARS: usize = 128;

/// A client stream, which SASL2 can also resume a session on (XEP-0198 inline).
pub(super) trait Sasl2Stream: SaslStream {
    /// Keeps the session taken over by an inline `<resume/>`, from the moment it was taken:
    /// if the stream ends before the session runs, it is parked again, not lost.
    fn keep_resumed(&mut self, resumed: Resumed);
}

pub(super) enum Sasl2Outcome {
    Success(Box<Sasl2Login>),
    /// A `<failure/>` was sent; the client may try again.
    Failure,
}

pub(super) struct Sasl2Login {
    /// The authenticated (normalised) username.
    pub username: String,
    /// The resource Bind2 bound, when the client asked for one.
    pub bound: Option<FullJid>,
    pub inline: InlineRequests,
    /// The bound resource's place under the per-account cap.
    pub reservation: Reservation,
}

/// The parsed `<authenticate/>`.
struct Request {
    mechanism: String,
    /// Base64 text of `<initial-response/>`, empty when there is none.
    initial: String,
    /// `<user-agent id='…'/>`: the stable id of this client installation.
    client_id: Option<String>,
    bind: Option<BindRequest>,
    /// `<request-token xmlns='urn:xmpp:fast:0' mechanism='…'/>`, by name.
    request_token: Option<String>,
    fast: FastUse,
    sm_resume: Option<Element>,
}

// The initial response may hold a password (PLAIN) or a token hash: never in logs.
impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("mechanism", &self.mechanism)
            .field("client_id", &self.client_id)
            .field("bind", &self.bind)
            .field("request_token", &self.request_token)
            .field("fast", &self.fast)
            .finish_non_exhaustive()
    }
}

impl Request {
    fn parse(el: &Element) -> Result<Request, SaslFailure> {
        let mechanism = el
            .attr("mechanism")
            .ok_or(SaslFailure::InvalidMechanism)?
            .to_string();
        // XEP-0388 §2.2: no element is no initial response, an empty one is empty data (which
        // RFC 6120 writes as "=").
        let initial = match el
            .get_child("initial-response", ns::SASL2)
            .map(|r| r.text())
        {
            Some(text) if text.trim().is_empty() => "=".to_string(),
            Some(text) => text,
            None => String::new(),
        };
        let client_id = match el
            .get_child("user-agent", ns::SASL2)
            .and_then(|ua| ua.attr("id"))
            .map(str::trim)
        {
            Some(id) if id.chars().count() > MAX_CLIENT_ID_CHARS => {
                return Err(SaslFailure::MalformedRequest)
            }
            Some("") | None => None,
            Some(id) => Some(id.to_string()),
        };
        let fast = match el.get_child("fast", ns::FAST) {
            Some(f) => FastUse::parse(f)?,
            None => FastUse::default(),
        };
        Ok(Request {
            mechanism,
            initial,
            client_id,
            bind: el.get_child("bind", ns::BIND2).map(BindRequest::parse),
            request_token: el
                .get_child("request-token", ns::FAST)
                .and_then(|r| r.attr("mechanism"))
                .map(str::to_string),
            fast,
            sm_resume: el.get_child("resume", ns::SM).cloned(),
        })
    }
}

/// Runs one SASL2 exchange that starts with `authenticate`.
pub(super) async fn authenticate<S: Sasl2Stream>(
    stream: &mut S,
    authenticate: Element,
) -> Result<Sasl2Outcome, End> {
    // Held until this function returns, after the answer went out: the throttle's slot and
    // the account's turn cover the whole verdict.
    let Some(mut attempt) = stream.admit() else {
        return failed(stream, SaslFailure::TemporaryAuthFailure).await;
    };
    let offered = stream.offered_mechanisms();
    let request = match Request::parse(&authenticate) {
        _ if offered.is_empty() => Err(SaslFailure::EncryptionRequired),
        parsed => parsed,
    };
    let ht_offered = fast::offered(stream);
    let mut token_login = None;
    let result: Exchange = match &request {
        Err(failure) => Err(*failure),
        Ok(request) => {
            let name = request.mechanism.as_str();
            if let Some(m) = Mechanism::from_name(name).filter(|m| offered.contains(m)) {
                let initial = &request.initial;
                auth::run_mechanism(stream, Wrapper::Sasl2, m, initial, &offered, &mut attempt)
                    .await?
            } else if let Some(m) = HtMechanism::from_name(name).filter(|m| ht_offered.contains(m))
            {
                match token(stream, m, request, &mut attempt).await {
                    Ok(login) => {
                        let success = login.success.clone();
                        let account = stream.account(&success.username);
                        token_login = Some(login);
                        auth::admit_account(stream.context().clone(), account, success).await
                    }
                    Err(failure) => Err(failure),
                }
            } else {
                Err(SaslFailure::InvalidMechanism)
            }
        }
    };
    auth::hold_verdict(&mut attempt, &result).await;
    login_metric(stream, &request, &result);
    let (success, request) = match (result, request) {
        (Ok(success), Ok(request)) => (success, request),
        (Err(failure), _) | (_, Err(failure)) => return failed(stream, failure).await,
    };
    let ctx = stream.context().clone();
    auth::record_login(&ctx, &stream.account(&success.username)).await;
    let name = request.mechanism.as_str();
    let username = success.username;
    let domain = stream.domain().to_owned();
    let account = stream.account(&username);
    let client_id = request.client_id.as_deref();

    let mut el = Element::bare("success", ns::SASL2);
    if let Some(data) = success.additional_data.as_deref() {
        let mut additional = Element::bare("additional-data", ns::SASL2);
        additional.append_text(sasl::encode_payload(Some(data)));
        el.append_child(additional);
    }
    // XEP-0198 inline (XEP-0388 §…): a resumed session takes the place of a new binding; a
    // failed resumption says so and binding goes ahead.
    let (resumed, resume_answer) = match &request.sm_resume {
        Some(resume) => inline_resume(stream, &username, resume).await,
        None => (None, None),
    };
    let bound = match &resumed {
        Some(jid) => Some(jid.clone()),
        None => request
            .bind
            .as_ref()
            .and_then(|b| bind2::bind(&username, &domain, b, client_id, random_id)),
    };
    let reservation = match (&bound, &resumed) {
        (Some(jid), None) => match stream.context().router.reserve_resource(jid) {
            Ok(reservation) => reservation,
            Err(refusal) => return resource_refused(stream, refusal).await,
        },
        _ => Reservation::uncounted(),
    };
    let mut identifier = Element::bare("authorization-identifier", ns::SASL2);
    identifier.append_text(match &bound {
        Some(jid) => jid.to_string(),
        None => account.clone(),
    });
    el.append_child(identifier);
    if let Some(answer) = resume_answer {
        el.append_child(answer);
    }
    let sm_enable = match &request.bind {
        Some(b) if bound.is_some() && resumed.is_none() => b.sm_enable.as_ref(),
        _ => None,
    };
    let server_max = stream
        .context()
        .config
        .stream_management
        .resume_timeout_secs;
    let sm = sm_enable.and_then(|enable| match sm::parse(enable) {
        Some(Ok(Nonza::Enable { resume, max })) => Some(SmGrant::new(
            resume,
            max,
            server_max,
            cluster_resume::node_number(&stream.context().router),
        )),
        _ => None,
    });
    if bound.is_some() && resumed.is_none() {
        let enabled = sm
            .as_ref()
            .map(|g| sm::enabled(g.id.as_deref(), g.max_secs));
        el.append_child(bind2::bound_element(enabled));
    }
    let requested = request
        .request_token
        .as_deref()
        .and_then(HtMechanism::from_name)
        .filter(|m| ht_offered.contains(m));
    let ctx = stream.context().clone();
    let token = fast::after_success(
        &ctx,
        &account,
        client_id,
        token_login.as_ref(),
        request.fast,
        requested,
    )
    .await;
    if let Some(token) = token {
        el.append_child(token);
    }
    stream.send_element(&el).await?;
    debug!(%username, mechanism = name, bound = bound.is_some(), "authenticated (SASL2)");

    let features = match request.bind {
        Some(b) if bound.is_some() && resumed.is_none() => b.features,
        _ => Vec::new(),
    };
    Ok(Sasl2Outcome::Success(Box::new(Sasl2Login {
        username,
        bound,
        inline: InlineRequests { features, sm },
        reservation,
    })))
}

/// Bind2 cannot bind: the account has all the resources it may have. The credentials were
/// fine, so this is no failed login for the throttle; XEP-0388 lets a `<failure/>` carry an
/// application condition, here RFC 6120's `<resource-constraint/>` for resource binding.
async fn resource_refused<S: SaslStream>(
    stream: &mut S,
    refusal: TooManyResources,
) -> Result<Sasl2Outcome, End> {
    debug!(%refusal, "Bind2 refused");
    let mut el = Element::bare("failure", ns::SASL2);
    el.append_child(Element::bare("temporary-auth-failure", ns::SASL));
    el.append_child(Element::bare("resource-constraint", ns::STANZAS_ERRORS));
    let mut text = Element::bare("text", ns::SASL2);
    text.append_text(refusal.to_string());
    el.append_child(text);
    stream.send_element(&el).await?;
    Ok(Sasl2Outcome::Failure)
}

/// Tries the `<resume/>` sent inside `<authenticate/>`: on success the detached session is
/// handed to `stream` (its `<resumed/>` is the returned answer, so the session does not send it
/// again); otherwise the answer is `<failed/>`.
async fn inline_resume<S: Sasl2Stream>(
    stream: &mut S,
    username: &str,
    resume: &Element,
) -> (Option<FullJid>, Option<Element>) {
    let Some(Ok(Nonza::Resume { previd, h })) = sm::parse(resume) else {
        return (None, Some(sm::failed(Condition::BadRequest, None)));
    };
    let account = stream.account(username);
    let Ok(account) = BareJid::new(&account) else {
        return (None, Some(sm::failed(Condition::ItemNotFound, None)));
    };
    let ctx = stream.context().clone();
    match cluster_resume::take(&ctx, &previd, &account, h).await {
        Ok(bound) => {
            let jid = bound.jid.clone();
            let inbound = bound.sm.as_ref().map_or(0, |sm| sm.inbound);
            stream.keep_resumed(Resumed {
                bound,
                h,
                announced: true,
            });
            (Some(jid), Some(sm::resumed(&previd, inbound)))
        }
        Err(known_h) => (None, Some(sm::failed(Condition::ItemNotFound, known_h))),
    }
}

/// A token login: one message, no challenge (the HT mechanisms are client-first).
async fn token<S: SaslStream>(
    stream: &mut S,
    mechanism: HtMechanism,
    request: &Request,
    attempt: &mut Attempt,
) -> Result<TokenLogin, SaslFailure> {
    let message = sasl::decode_payload(&request.initial)?.ok_or(SaslFailure::MalformedRequest)?;
    let bindings = stream.channel_bindings();
    let ctx = stream.context().clone();
    let ht = HtRequest::parse(mechanism, &message, &bindings)?;
    let domain = stream.domain().to_owned();
    fast::authenticate(
        &ctx,
        &domain,
        mechanism,
        ht,
        request.client_id.as_deref(),
        request.fast,
        attempt,
    )
    .await
}

/// Counts the outcome by mechanism: only names this server knows become labels, so a client
/// cannot grow the metric with names of its own.
fn login_metric<S: SaslStream>(
    stream: &S,
    request: &Result<Request, SaslFailure>,
    result: &Exchange,
) {
    let name = request.as_ref().map_or("", |r| r.mechanism.as_str());
    let known = Mechanism::from_name(name).is_some() || HtMechanism::from_name(name).is_some();
    let label = if known { name } else { "other" };
    let failure = result.as_ref().err().map(|f| f.condition());
    stream.context().router.metrics().login(label, failure);
}

async fn failed<S: SaslStream>(stream: &mut S, failure: SaslFailure) -> Result<Sasl2Outcome, End> {
    match auth::send_failure(stream, Wrapper::Sasl2, failure).await? {
        AuthOutcome::Failure | AuthOutcome::Success(_) => Ok(Sasl2Outcome::Failure),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Result<Request, SaslFailure> {
        Request::parse(&xml.parse::<Element>().unwrap())
    }

    #[test]
    fn authenticate_parses() {
        let r = parse(
            "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='HT-SHA-256-NONE'>\
             <initial-response>AA==</initial-response>\
             <user-agent id=' abc '><software>x</software></user-agent>\
             <bind xmlns='urn:xmpp:bind:0'><tag>t</tag></bind>\
             <request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/>\
             <fast xmlns='urn:xmpp:fast:0' count='3'/>\
             <resume xmlns='urn:xmpp:sm:3' previd='p' h='1'/></authenticate>",
        )
        .unwrap();
        assert_eq!(r.mechanism, "HT-SHA-256-NONE");
        assert_eq!(r.initial, "AA==");
        assert_eq!(r.client_id.as_deref(), Some("abc"));
        assert_eq!(r.bind.unwrap().tag.as_deref(), Some("t"));
        assert_eq!(r.request_token.as_deref(), Some("HT-SHA-256-NONE"));
        assert_eq!(r.fast.count, Some(3));
        assert_eq!(r.sm_resume.unwrap().attr("previd"), Some("p"));
    }

    #[test]
    fn authenticate_refusals() {
        assert_eq!(
            parse("<authenticate xmlns='urn:xmpp:sasl:2'/>").unwrap_err(),
            SaslFailure::InvalidMechanism
        );
        let long = "x".repeat(MAX_CLIENT_ID_CHARS + 1);
        assert_eq!(
            parse(&format!(
                "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'>\
                 <user-agent id='{long}'/></authenticate>"
            ))
            .unwrap_err(),
            SaslFailure::MalformedRequest
        );
    }
}
