//! SASL on the stream (RFC 6120 §6): carries the `crate::sasl` mechanisms over `<auth/>`,
//! `<challenge/>`, `<response/>`, `<success/>` and `<failure/>`, looks credentials up in
//! storage, and slows down repeated failures.
//!
//! The challenge/response loop is shared with SASL2 (XEP-0388, `super::sasl2`), whose elements
//! have the same names and payloads in their own namespace; only the opening and the outcome
//! elements differ, and those are built by each caller.

use minidom::Element;
use tracing::{debug, warn};

use super::c2s::{C2s, End};
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
    let offered = offered_mechanisms(c2s);
    if offered.is_empty() {
        return fail(c2s, Wrapper::Rfc6120, SaslFailure::EncryptionRequired).await;
    }
    let mechanism = auth
        .attr("mechanism")
        .and_then(Mechanism::from_name)
        .filter(|m| offered.contains(m));
    let Some(mechanism) = mechanism else {
        return fail(c2s, Wrapper::Rfc6120, SaslFailure::InvalidMechanism).await;
    };
    let result = run_mechanism(c2s, Wrapper::Rfc6120, mechanism, &auth.text(), &offered).await?;
    match result {
        Ok(success) => {
            record_success(c2s);
            let mut el = Element::bare("success", ns::SASL);
            if let Some(data) = success.additional_data.as_deref() {
                el.append_text(sasl::encode_payload(Some(data)));
            }
            c2s.send_el(&el).await?;
            debug!(username = %success.username, mechanism = mechanism.name(), "authenticated");
            Ok(AuthOutcome::Success(success.username))
        }
        Err(failure) => fail(c2s, Wrapper::Rfc6120, failure).await,
    }
}

/// The mechanism's part of an exchange, from the initial response (`initial`, the base64 text
/// the opening element carried, empty for none) to the verdict; challenges and responses go
/// over the stream in `wrapper`'s namespace.
pub(super) async fn run_mechanism<T: Transport>(
    c2s: &mut C2s<T>,
    wrapper: Wrapper,
    mechanism: Mechanism,
    initial: &str,
    offered: &[Mechanism],
) -> Result<Exchange, End> {
    let initial = match initial_response(c2s, wrapper, initial).await? {
        Ok(data) => data,
        Err(failure) => return Ok(Err(failure)),
    };
    Ok(match mechanism.scram() {
        Some((hash, plus)) => scram(c2s, wrapper, hash, plus, &initial, offered).await?,
        None => plain(c2s, &initial).await,
    })
}

pub(super) fn record_success<T: Transport>(c2s: &C2s<T>) {
    c2s.ctx.throttle.record_success(c2s.transport.peer().ip());
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
    match c2s.transport.next_frame().await? {
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
) -> Result<Exchange, End> {
    let bindings = c2s.transport.channel_bindings();
    let plus_offered = offered.iter().any(|m| m.is_plus());
    let domain = c2s.ctx.config.domain.clone();
    let server =
        match ScramServer::client_first(hash, plus, client_first, &bindings, plus_offered, &domain)
        {
            Ok(server) => server,
            Err(failure) => return Ok(Err(failure)),
        };
    let ctx = c2s.ctx.clone();
    let credentials = match lookup(&ctx, server.username(), hash).await {
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
    Ok(server.client_final(&client_final))
}

async fn plain<T: Transport>(c2s: &mut C2s<T>, message: &[u8]) -> Exchange {
    let request = PlainRequest::parse(message, &c2s.ctx.config.domain)?;
    let ctx = c2s.ctx.clone();
    let credentials = lookup(&ctx, request.username(), ScramHash::Sha256).await?;
    // PBKDF2 takes milliseconds of CPU: keep it off the threads that move stanzas.
    tokio::task::spawn_blocking(move || request.verify(credentials.as_ref()))
        .await
        .unwrap_or(Err(SaslFailure::TemporaryAuthFailure))
}

/// Takes the context rather than the stream: nothing borrowed from the transport may live
/// across the storage await (transports are `Send` but not `Sync`).
async fn lookup(
    ctx: &ServerContext,
    username: &str,
    hash: ScramHash,
) -> Result<Option<ScramCredentials>, SaslFailure> {
    ctx.router
        .storage()
        .accounts
        .credentials(username, hash)
        .await
        .map_err(|e| {
            warn!(error = %e, "credential lookup failed");
            SaslFailure::TemporaryAuthFailure
        })
}

/// Sends `<failure/>` after the throttle's delay for this address.
pub(super) async fn fail<T: Transport>(
    c2s: &mut C2s<T>,
    wrapper: Wrapper,
    failure: SaslFailure,
) -> Result<AuthOutcome, End> {
    if failure != SaslFailure::Aborted {
        let delay = c2s.ctx.throttle.record_failure(c2s.transport.peer().ip());
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
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
