//! SASL on the stream (RFC 6120 §6): carries the `crate::sasl` mechanisms over `<auth/>`,
//! `<challenge/>`, `<response/>`, `<success/>` and `<failure/>`, looks credentials up in
//! storage, and has every exchange counted and paced by `super::throttle`.
//!
//! The challenge/response loop is shared with SASL2 (XEP-0388, `super::sasl2`), whose elements
//! have the same names and payloads in their own namespace; only the opening and the outcome
//! elements differ, and those are built by each caller.

use minidom::Element;
use tracing::{debug, warn};

use super::c2s::{C2s, End};
use super::throttle::Attempt;
use super::transport::{Incoming, Transport};
use crate::sasl::{self, Mechanism, PlainRequest, SaslFailure, SaslSuccess, ScramServer};
use crate::server::ServerContext;
use crate::storage::{ScramCredentials, ScramHash};
use crate::xml::ns;

/// Which protocol frames the exchange: the namespace of `<challenge/>`, `<response/>`,
/// `<abort/>` and `<failure/>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wrapper {
    Rfc6120,
    Sasl2,
}

impl Wrapper {
    fn ns(self) -> &'static str {
        match self {
            Wrapper::Rfc6120 => ns::SASL,
            Wrapper::Sasl2 => ns::SASL2,
        }
    }
}

pub(super) enum AuthOutcome {
    /// Authenticated as this (already normalised) username.
    Success(String),
    /// A `<failure/>` was sent; the client may try again.
    Failure,
}

/// What this stream may authenticate with: nothing at all before encryption when the server
/// requires it (the client must STARTTLS first, or use wss://).
pub(super) fn offered_mechanisms<T: Transport>(c2s: &C2s<T>) -> Vec<Mechanism> {
    let config = &c2s.ctx.config;
    if config.c2s.require_encryption && !c2s.transport.is_secure() {
        return Vec::new();
    }
    let auth = &config.auth;
    let encrypted = c2s.transport.is_secure() || auth.allow_plain_without_tls;
    sasl::offered_mechanisms(
        encrypted,
        auth.allow_plain,
        &c2s.transport.channel_bindings(),
    )
}

/// Runs one SASL exchange that starts with `auth`.
pub(super) async fn authenticate<T: Transport>(
    c2s: &mut C2s<T>,
    auth: Element,
) -> Result<AuthOutcome, End> {
    let Some(mut attempt) = admit(c2s) else {
        return send_failure(c2s, Wrapper::Rfc6120, SaslFailure::TemporaryAuthFailure).await;
    };
    let offered = offered_mechanisms(c2s);
    let mechanism = auth
        .attr("mechanism")
        .and_then(Mechanism::from_name)
        .filter(|m| offered.contains(m));
    let result = match mechanism {
        _ if offered.is_empty() => Err(SaslFailure::EncryptionRequired),
        None => Err(SaslFailure::InvalidMechanism),
        Some(m) => {
            let initial = auth.text();
            run_mechanism(c2s, Wrapper::Rfc6120, m, &initial, &offered, &mut attempt).await?
        }
    };
    hold_verdict(&mut attempt, &result).await;
    match result {
        Ok(success) => {
            let mut el = Element::bare("success", ns::SASL);
            if let Some(data) = success.additional_data.as_deref() {
                el.append_text(sasl::encode_payload(Some(data)));
            }
            c2s.send_el(&el).await?;
            let mechanism = mechanism.map_or("", Mechanism::name);
            debug!(username = %success.username, mechanism, "authenticated");
            Ok(AuthOutcome::Success(success.username))
        }
        Err(failure) => send_failure(c2s, Wrapper::Rfc6120, failure).await,
    }
}

/// Starts a throttled exchange from this stream's address; `None` when the throttle refuses
/// it, to be answered `<temporary-auth-failure/>` at once.
pub(super) fn admit<T: Transport>(c2s: &C2s<T>) -> Option<Attempt> {
    c2s.ctx.throttle.admit(c2s.transport.peer().ip()).ok()
}

/// Counts the exchange's outcome and waits the throttle's delay, which is the same whatever
/// the outcome, before the caller answers.
pub(super) async fn hold_verdict<S>(attempt: &mut Attempt, result: &Result<S, SaslFailure>) {
    let delay = attempt.conclude(result);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

/// The mechanism's part of an exchange, from the initial response (`initial`, the base64 text
/// the opening element carried, empty for none) to the verdict; challenges and responses go
/// over the stream in `wrapper`'s namespace. The mechanism tells `attempt` the account as soon
/// as it is known, and waits for the account's turn just before checking.
pub(super) async fn run_mechanism<T: Transport>(
    c2s: &mut C2s<T>,
    wrapper: Wrapper,
    mechanism: Mechanism,
    initial: &str,
    offered: &[Mechanism],
    attempt: &mut Attempt,
) -> Result<Exchange, End> {
    let initial = match initial_response(c2s, wrapper, initial).await? {
        Ok(data) => data,
        Err(failure) => return Ok(Err(failure)),
    };
    Ok(match mechanism.scram() {
        Some((hash, plus)) => scram(c2s, wrapper, hash, plus, &initial, offered, attempt).await?,
        None => plain(c2s, &initial, attempt).await,
    })
}

/// The initial response: inline in `<auth/>`, or asked for with an empty challenge when the
/// client sent none (RFC 6120 §6.4.2).
async fn initial_response<T: Transport>(
    c2s: &mut C2s<T>,
    wrapper: Wrapper,
    text: &str,
) -> Result<Result<Vec<u8>, SaslFailure>, End> {
    match sasl::decode_payload(text) {
        Ok(Some(data)) => Ok(Ok(data)),
        Err(failure) => Ok(Err(failure)),
        Ok(None) => {
            c2s.send_el(&Element::bare("challenge", wrapper.ns()))
                .await?;
            read_response(c2s, wrapper).await
        }
    }
}

async fn read_response<T: Transport>(
    c2s: &mut C2s<T>,
    wrapper: Wrapper,
) -> Result<Result<Vec<u8>, SaslFailure>, End> {
    match c2s.next_frame().await? {
        Incoming::Element(el) if el.is("response", wrapper.ns()) => {
            Ok(sasl::decode_payload(&el.text()).map(Option::unwrap_or_default))
        }
        Incoming::Element(el) if el.is("abort", wrapper.ns()) => Ok(Err(SaslFailure::Aborted)),
        Incoming::Element(_) => Ok(Err(SaslFailure::MalformedRequest)),
        Incoming::Close => Err(End::PeerClosed),
        Incoming::Open(_) => Err(End::Error("invalid-xml", None)),
    }
}

pub(super) type Exchange = Result<SaslSuccess, SaslFailure>;

async fn scram<T: Transport>(
    c2s: &mut C2s<T>,
    wrapper: Wrapper,
    hash: ScramHash,
    plus: bool,
    client_first: &[u8],
    offered: &[Mechanism],
    attempt: &mut Attempt,
) -> Result<Exchange, End> {
    let bindings = c2s.transport.channel_bindings();
    let plus_offered = offered.iter().any(|m| m.is_plus());
    let domain = c2s.domain.clone();
    let server =
        match ScramServer::client_first(hash, plus, client_first, &bindings, plus_offered, &domain)
        {
            Ok(server) => server,
            Err(failure) => return Ok(Err(failure)),
        };
    let account = c2s.account(server.username());
    if let Err(refused) = attempt.account(&account) {
        return Ok(Err(refused.into()));
    }
    let ctx = c2s.ctx.clone();
    let credentials = match lookup(&ctx, &account, hash).await {
        Ok(creds) => creds,
        Err(failure) => return Ok(Err(failure)),
    };
    let (server, server_first) = server.server_first(credentials.as_ref());
    let mut challenge = Element::bare("challenge", wrapper.ns());
    challenge.append_text(sasl::encode_payload(Some(&server_first)));
    c2s.send_el(&challenge).await?;
    let client_final = match read_response(c2s, wrapper).await? {
        Ok(data) => data,
        Err(failure) => return Ok(Err(failure)),
    };
    attempt.turn().await;
    Ok(server.client_final(&client_final))
}

async fn plain<T: Transport>(c2s: &mut C2s<T>, message: &[u8], attempt: &mut Attempt) -> Exchange {
    let request = PlainRequest::parse(message, &c2s.domain)?;
    let account = c2s.account(request.username());
    attempt.account(&account)?;
    attempt.turn().await;
    let ctx = c2s.ctx.clone();
    let credentials = lookup(&ctx, &account, ScramHash::Sha256).await?;
    // PBKDF2 takes milliseconds of CPU: keep it off the threads that move stanzas.
    tokio::task::spawn_blocking(move || request.verify(credentials.as_ref()))
        .await
        .unwrap_or(Err(SaslFailure::TemporaryAuthFailure))
}

/// Takes the context rather than the stream: nothing borrowed from the transport may live
/// across the storage await (transports are `Send` but not `Sync`).
async fn lookup(
    ctx: &ServerContext,
    account: &str,
    hash: ScramHash,
) -> Result<Option<ScramCredentials>, SaslFailure> {
    ctx.router
        .storage()
        .accounts
        .credentials(account, hash)
        .await
        .map_err(|e| {
            warn!(error = %e, "credential lookup failed");
            SaslFailure::TemporaryAuthFailure
        })
}

/// Sends `<failure/>`; any throttle delay has been waited already.
pub(super) async fn send_failure<T: Transport>(
    c2s: &mut C2s<T>,
    wrapper: Wrapper,
    failure: SaslFailure,
) -> Result<AuthOutcome, End> {
    debug!(
        condition = failure.condition(),
        ?wrapper,
        "authentication failed"
    );
    let mut el = Element::bare("failure", wrapper.ns());
    el.append_child(Element::bare(failure.condition(), ns::SASL));
    if wrapper == Wrapper::Sasl2 {
        // XEP-0388 failures may explain themselves; RFC 6120's <text/> is optional too, but
        // only SASL2 clients are known to show it.
        let mut text = Element::bare("text", ns::SASL2);
        text.append_text(failure.to_string());
        el.append_child(text);
    }
    c2s.send_el(&el).await?;
    Ok(AuthOutcome::Failure)
}
