//! SASL on the stream (RFC 6120 §6): carries the `crate::sasl` mechanisms over `<auth/>`,
//! `<challenge/>`, `<response/>`, `<success/>` and `<failure/>`, looks credentials up in
//! storage, and has every exchange counted and paced by `super::throttle`.
//!
//! The challenge/response loop is shared with SASL2 (XEP-0388, `super::sasl2`), whose elements
//! have the same names and payloads in their own namespace; only the opening and the outcome
//! elements differ, and those are built by each caller.

use minidom::Element;
use tracing::{debug, warn};

use super::context::StreamContext;
use super::end::End;
use super::sasl_stream::SaslStream;
use super::throttle::Attempt;
use super::transport::Incoming;
use crate::sasl::{self, Mechanism, PlainRequest, SaslFailure, SaslSuccess, ScramServer};
use crate::storage::{LoginCredentials, ScramHash};
use crate::xml::ns;
use crate::xml::StreamCondition;

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

/// Runs one SASL exchange that starts with `auth`.
pub(super) async fn authenticate<S: SaslStream>(
    stream: &mut S,
    auth: Element,
) -> Result<AuthOutcome, End> {
    let Some(mut attempt) = stream.admit() else {
        return send_failure(stream, Wrapper::Rfc6120, SaslFailure::TemporaryAuthFailure).await;
    };
    let offered = stream.offered_mechanisms();
    let mechanism = auth
        .attr("mechanism")
        .and_then(Mechanism::from_name)
        .filter(|m| offered.contains(m));
    let result = match mechanism {
        _ if offered.is_empty() => Err(SaslFailure::EncryptionRequired),
        None => Err(SaslFailure::InvalidMechanism),
        Some(m) => {
            let initial = auth.text();
            run_mechanism(
                stream,
                Wrapper::Rfc6120,
                m,
                &initial,
                &offered,
                &mut attempt,
            )
            .await?
        }
    };
    hold_verdict(&mut attempt, &result).await;
    let failure = result.as_ref().err().map(|f| f.condition());
    stream
        .context()
        .router
        .metrics()
        .login(mechanism.map_or("", Mechanism::name), failure);
    match result {
        Ok(success) => {
            let account = stream.account(&success.username);
            let ctx = stream.context().clone();
            record_login(&ctx, &account).await;
            let mut el = Element::bare("success", ns::SASL);
            if let Some(data) = success.additional_data.as_deref() {
                el.append_text(sasl::encode_payload(Some(data)));
            }
            stream.send_element(&el).await?;
            let mechanism = mechanism.map_or("", Mechanism::name);
            debug!(username = %success.username, mechanism, "authenticated");
            Ok(AuthOutcome::Success(success.username))
        }
        Err(failure) => send_failure(stream, Wrapper::Rfc6120, failure).await,
    }
}

/// Refuses a token login's verdict of success (FAST, XEP-0484) for an account an administrator
/// disabled (XEP-0133), with `<account-disabled/>` (RFC 6120 §6.5.1). Password mechanisms read
/// the account's standing with its credentials (`refuse_if_disabled`). Checked before the
/// throttle counts the outcome, so it counts as a failure.
/// Takes no stream: nothing borrowed from the transport may live across the storage await.
pub(super) async fn admit_account(
    ctx: std::sync::Arc<StreamContext>,
    account: String,
    success: SaslSuccess,
) -> Exchange {
    match ctx.router.storage().admin.is_disabled(&account).await {
        Ok(false) => Ok(success),
        Ok(true) => {
            debug!(%account, "login refused: account disabled");
            Err(SaslFailure::AccountDisabled)
        }
        Err(e) => {
            warn!(error = %e, "account status lookup failed");
            Err(SaslFailure::TemporaryAuthFailure)
        }
    }
}

/// Keeps the time of a successful login (XEP-0133 "get user last login"). The store the server
/// runs on keeps it in memory and writes the times in batches (`storage::login_times`), so this
/// costs the login no database round trip.
pub(super) async fn record_login(ctx: &StreamContext, account: &str) {
    let now = i64::try_from(crate::ids::now_ms()).unwrap_or(i64::MAX);
    if let Err(e) = ctx.router.storage().admin.record_login(account, now).await {
        warn!(error = %e, "recording the login time failed");
    }
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
pub(super) async fn run_mechanism<S: SaslStream>(
    stream: &mut S,
    wrapper: Wrapper,
    mechanism: Mechanism,
    initial: &str,
    offered: &[Mechanism],
    attempt: &mut Attempt,
) -> Result<Exchange, End> {
    let initial = match initial_response(stream, wrapper, initial).await? {
        Ok(data) => data,
        Err(failure) => return Ok(Err(failure)),
    };
    Ok(match mechanism.scram() {
        Some((hash, plus)) => {
            scram(stream, wrapper, hash, plus, &initial, offered, attempt).await?
        }
        None => plain(stream, &initial, attempt).await,
    })
}

/// The initial response: inline in `<auth/>`, or asked for with an empty challenge when the
/// client sent none (RFC 6120 §6.4.2).
async fn initial_response<S: SaslStream>(
    stream: &mut S,
    wrapper: Wrapper,
    text: &str,
) -> Result<Result<Vec<u8>, SaslFailure>, End> {
    match sasl::decode_payload(text) {
        Ok(Some(data)) => Ok(Ok(data)),
        Err(failure) => Ok(Err(failure)),
        Ok(None) => {
            stream
                .send_element(&Element::bare("challenge", wrapper.ns()))
                .await?;
            read_response(stream, wrapper).await
        }
    }
}

async fn read_response<S: SaslStream>(
    stream: &mut S,
    wrapper: Wrapper,
) -> Result<Result<Vec<u8>, SaslFailure>, End> {
    match stream.read_frame().await? {
        Incoming::Element(el) if el.is("response", wrapper.ns()) => {
            Ok(sasl::decode_payload(&el.text()).map(Option::unwrap_or_default))
        }
        Incoming::Element(el) if el.is("abort", wrapper.ns()) => Ok(Err(SaslFailure::Aborted)),
        Incoming::Element(_) => Ok(Err(SaslFailure::MalformedRequest)),
        Incoming::Close => Err(End::PeerClosed),
        Incoming::Open(_) => Err(End::Error(StreamCondition::InvalidXml, None)),
    }
}

pub(super) type Exchange = Result<SaslSuccess, SaslFailure>;

async fn scram<S: SaslStream>(
    stream: &mut S,
    wrapper: Wrapper,
    hash: ScramHash,
    plus: bool,
    client_first: &[u8],
    offered: &[Mechanism],
    attempt: &mut Attempt,
) -> Result<Exchange, End> {
    let bindings = stream.channel_bindings();
    let plus_offered = offered.iter().any(|m| m.is_plus());
    let domain = stream.domain().to_owned();
    let mut server =
        match ScramServer::client_first(hash, plus, client_first, &bindings, plus_offered, &domain)
        {
            Ok(server) => server,
            Err(failure) => return Ok(Err(failure)),
        };
    // XEP-0474: what the features listed, exactly as `features::before_auth` and
    // `features::sasl2` list it (the same mechanisms in both; binding types only next to a
    // -PLUS mechanism).
    let mechanisms: Vec<&str> = offered.iter().map(|m| m.name()).collect();
    let types = bindings.names();
    let listed_types = (plus_offered && !types.is_empty()).then_some(types.as_slice());
    server.protect_downgrade(&mechanisms, listed_types);
    let account = stream.account(server.username());
    if let Err(refused) = attempt.account(&account) {
        return Ok(Err(refused.into()));
    }
    let ctx = stream.context().clone();
    let login = match lookup(&ctx, &account, hash).await {
        Ok(login) => login,
        Err(failure) => return Ok(Err(failure)),
    };
    let (server, server_first) = server.server_first(login.as_ref().map(|l| &l.credentials));
    let mut challenge = Element::bare("challenge", wrapper.ns());
    challenge.append_text(sasl::encode_payload(Some(&server_first)));
    stream.send_element(&challenge).await?;
    let client_final = match read_response(stream, wrapper).await? {
        Ok(data) => data,
        Err(failure) => return Ok(Err(failure)),
    };
    attempt.turn().await;
    let disabled = login.is_some_and(|l| l.disabled);
    Ok(refuse_if_disabled(
        server.client_final(&client_final),
        disabled,
    ))
}

async fn plain<S: SaslStream>(stream: &mut S, message: &[u8], attempt: &mut Attempt) -> Exchange {
    let request = PlainRequest::parse(message, stream.domain())?;
    let account = stream.account(request.username());
    attempt.account(&account)?;
    attempt.turn().await;
    let ctx = stream.context().clone();
    let (credentials, disabled) = match lookup(&ctx, &account, ScramHash::Sha256).await? {
        Some(login) => (Some(login.credentials), login.disabled),
        None => (None, false),
    };
    // PBKDF2 takes milliseconds of CPU: off the threads that move stanzas, and bounded.
    let verdict = sasl::work::run(move || request.verify(credentials.as_ref()))
        .await
        .unwrap_or(Err(SaslFailure::TemporaryAuthFailure));
    refuse_if_disabled(verdict, disabled)
}

/// A right password for an account an administrator disabled (XEP-0133) is refused with
/// `<account-disabled/>` (RFC 6120 §6.5.1); a wrong one stays `<not-authorized/>`, so the
/// answer says nothing about an account to someone without its password.
fn refuse_if_disabled(verdict: Exchange, disabled: bool) -> Exchange {
    let success = verdict?;
    if disabled {
        debug!(username = %success.username, "login refused: account disabled");
        return Err(SaslFailure::AccountDisabled);
    }
    Ok(success)
}

/// Takes the context rather than the stream: nothing borrowed from the transport may live
/// across the storage await (transports are `Send` but not `Sync`).
async fn lookup(
    ctx: &StreamContext,
    account: &str,
    hash: ScramHash,
) -> Result<Option<LoginCredentials>, SaslFailure> {
    ctx.router
        .storage()
        .accounts
        .login_credentials(account, hash)
        .await
        .map_err(|e| {
            warn!(error = %e, "credential lookup failed");
            SaslFailure::TemporaryAuthFailure
        })
}

/// Sends `<failure/>`; any throttle delay has been waited already.
pub(super) async fn send_failure<S: SaslStream>(
    stream: &mut S,
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
    stream.send_element(&el).await?;
    Ok(AuthOutcome::Failure)
}
