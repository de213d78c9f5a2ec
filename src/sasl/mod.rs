//! Server-side SASL for c2s streams (RFC 6120 §6): SCRAM-SHA-1, SCRAM-SHA-256 and their -PLUS
//! variants (RFC 5802, RFC 7677, channel binding per RFC 9266 / RFC 5929), and PLAIN (RFC 4616).
//!
//! Nothing here does I/O: the stream code looks the credentials up between steps, so a login is
//! 1. [`offered_mechanisms`] for `<mechanisms/>` and [`ChannelBindings::names`] for XEP-0440;
//! 2. [`Mechanism::from_name`] and [`decode_payload`] on `<auth/>`;
//! 3. SCRAM: [`ScramServer::client_first`], look up [`ScramServer::username`],
//!    [`ScramServer::server_first`] into `<challenge/>`, then [`ScramChallenged::client_final`]
//!    on `<response/>`;
//!    PLAIN: [`PlainRequest::parse`], look up [`PlainRequest::username`],
//!    [`PlainRequest::verify`];
//! 4. `<success/>` carrying [`encode_payload`] of [`SaslSuccess::additional_data`], or
//!    `<failure/>` with [`SaslFailure::condition`].
//!
//! Every byte handled here comes from the network: malformed input yields a [`SaslFailure`],
//! never a panic.

mod channel_binding;
pub mod ht;
mod keys;
mod pbkdf2;
pub mod plain;
pub mod scram;
mod ssdp;
pub mod work;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

pub use channel_binding::{
    tls_server_end_point, ChannelBindingType, ChannelBindings, TLS_EXPORTER_LABEL, TLS_EXPORTER_LEN,
};
pub use ht::{offered_ht_mechanisms, HtMechanism, HtRequest};
pub use keys::{derive_credentials, DEFAULT_ITERATIONS, MIN_ITERATIONS, SALT_LEN};
pub use plain::PlainRequest;
pub use scram::{init_decoy_secret, ScramChallenged, ScramServer};
pub use ssdp::downgrade_protection;

use crate::storage::ScramHash;

/// The `<failure/>` conditions of RFC 6120 §6.5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SaslFailure {
    #[error("the client aborted the exchange")]
    Aborted,
    #[error("the account is disabled")]
    AccountDisabled,
    #[error("the credentials have expired")]
    CredentialsExpired,
    #[error("this mechanism requires an encrypted stream")]
    EncryptionRequired,
    #[error("the payload is not valid base64")]
    IncorrectEncoding,
    #[error("the authorization identity is not allowed")]
    InvalidAuthzid,
    #[error("the mechanism is not offered")]
    InvalidMechanism,
    #[error("the request is malformed")]
    MalformedRequest,
    #[error("the mechanism is too weak")]
    MechanismTooWeak,
    #[error("authentication failed")]
    NotAuthorized,
    #[error("temporary authentication failure")]
    TemporaryAuthFailure,
}

impl SaslFailure {
    /// The child element name of `<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>`.
    pub fn condition(&self) -> &'static str {
        match self {
            SaslFailure::Aborted => "aborted",
            SaslFailure::AccountDisabled => "account-disabled",
            SaslFailure::CredentialsExpired => "credentials-expired",
            SaslFailure::EncryptionRequired => "encryption-required",
            SaslFailure::IncorrectEncoding => "incorrect-encoding",
            SaslFailure::InvalidAuthzid => "invalid-authzid",
            SaslFailure::InvalidMechanism => "invalid-mechanism",
            SaslFailure::MalformedRequest => "malformed-request",
            SaslFailure::MechanismTooWeak => "mechanism-too-weak",
            SaslFailure::NotAuthorized => "not-authorized",
            SaslFailure::TemporaryAuthFailure => "temporary-auth-failure",
        }
    }
}

/// Errors of the server's own operations (account creation), as opposed to a peer's failures.
#[derive(Debug, thiserror::Error)]
pub enum SaslError {
    #[error("the password contains characters that SASLprep (RFC 4013) prohibits")]
    InvalidPassword,
    #[error("{0} PBKDF2 iterations are fewer than the minimum of {MIN_ITERATIONS}")]
    TooFewIterations(u32),
    #[error("the system random number generator failed: {0}")]
    Random(#[from] rand::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    ScramSha256Plus,
    ScramSha1Plus,
    ScramSha256,
    ScramSha1,
    Plain,
}

impl Mechanism {
    /// In order of preference, which is the order they are advertised in.
    pub const ALL: [Mechanism; 5] = [
        Mechanism::ScramSha256Plus,
        Mechanism::ScramSha1Plus,
        Mechanism::ScramSha256,
        Mechanism::ScramSha1,
        Mechanism::Plain,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
            Mechanism::ScramSha1Plus => "SCRAM-SHA-1-PLUS",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::Plain => "PLAIN",
        }
    }

    /// Mechanism names are case-sensitive (RFC 4422 §3.1).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The hash and whether channel binding is required, for the SCRAM family.
    pub fn scram(self) -> Option<(ScramHash, bool)> {
        match self {
            Mechanism::ScramSha256Plus => Some((ScramHash::Sha256, true)),
            Mechanism::ScramSha1Plus => Some((ScramHash::Sha1, true)),
            Mechanism::ScramSha256 => Some((ScramHash::Sha256, false)),
            Mechanism::ScramSha1 => Some((ScramHash::Sha1, false)),
            Mechanism::Plain => None,
        }
    }

    pub fn is_plus(self) -> bool {
        matches!(self.scram(), Some((_, true)))
    }
}

/// What to put in `<mechanisms/>`. PLAIN sends the password itself, so it needs encryption and
/// the operator's consent; -PLUS needs a binding, which only TLS provides.
pub fn offered_mechanisms(
    encrypted: bool,
    allow_plain: bool,
    bindings: &ChannelBindings,
) -> Vec<Mechanism> {
    let plus = encrypted && !bindings.is_empty();
    Mechanism::ALL
        .into_iter()
        .filter(|m| match m {
            Mechanism::Plain => encrypted && allow_plain,
            m => plus || !m.is_plus(),
        })
        .collect()
}

/// The end of a successful exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslSuccess {
    /// The authenticated localpart, nodeprep'd: the account that was checked.
    pub username: String,
    /// For `<success/>`: SCRAM's server-final-message, nothing for PLAIN.
    pub additional_data: Option<Vec<u8>>,
}

/// Decodes the text of `<auth/>` or `<response/>` (RFC 6120 §6.4.2): no text is no data (the
/// client sent no initial response), `=` is empty data.
pub fn decode_payload(text: &str) -> Result<Option<Vec<u8>>, SaslFailure> {
    match text.trim() {
        "" => Ok(None),
        "=" => Ok(Some(Vec::new())),
        text => BASE64
            .decode(text)
            .map(Some)
            .map_err(|_| SaslFailure::IncorrectEncoding),
    }
}

/// The inverse of [`decode_payload`] for `<challenge/>` and `<success/>`.
pub fn encode_payload(data: Option<&[u8]>) -> String {
    match data {
        None => String::new(),
        Some([]) => "=".to_string(),
        Some(data) => BASE64.encode(data),
    }
}

/// SASLprep (RFC 4013, which SCRAM and PLAIN require) then nodeprep, so that every spelling of
/// one account name looks up, and is answered for, the same account.
fn prep_username(raw: &str) -> Result<String, SaslFailure> {
    let prepped = stringprep::saslprep(raw).map_err(|_| SaslFailure::NotAuthorized)?;
    let node = jid::NodePart::new(&prepped).map_err(|_| SaslFailure::NotAuthorized)?;
    Ok(node.as_str().to_string())
}

/// Clients may only ask to act as themselves: an empty authzid or their own bare JID.
fn check_authzid(authzid: Option<&str>, username: &str, domain: &str) -> Result<(), SaslFailure> {
    let Some(authzid) = authzid.filter(|a| !a.is_empty()) else {
        return Ok(());
    };
    let requested = jid::Jid::new(authzid).map_err(|_| SaslFailure::InvalidAuthzid)?;
    let node = jid::NodePart::new(username).map_err(|_| SaslFailure::InvalidAuthzid)?;
    let domain = jid::DomainPart::new(domain).map_err(|_| SaslFailure::InvalidAuthzid)?;
    if requested == jid::BareJid::from_parts(Some(&node), &domain) {
        Ok(())
    } else {
        Err(SaslFailure::InvalidAuthzid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mechanism_names_round_trip() {
        for m in Mechanism::ALL {
            assert_eq!(Mechanism::from_name(m.name()), Some(m));
        }
        assert_eq!(Mechanism::from_name("scram-sha-1"), None);
        assert_eq!(Mechanism::from_name("DIGEST-MD5"), None);
        assert_eq!(
            Mechanism::ScramSha1Plus.scram(),
            Some((ScramHash::Sha1, true))
        );
        assert!(!Mechanism::Plain.is_plus());
    }

    #[test]
    fn offers_depend_on_the_stream() {
        let cb = ChannelBindings {
            tls_exporter: Some(vec![0; 32]),
            tls_server_end_point: None,
        };
        let names = |v: Vec<Mechanism>| v.into_iter().map(Mechanism::name).collect::<Vec<_>>();
        assert_eq!(
            names(offered_mechanisms(true, true, &cb)),
            [
                "SCRAM-SHA-256-PLUS",
                "SCRAM-SHA-1-PLUS",
                "SCRAM-SHA-256",
                "SCRAM-SHA-1",
                "PLAIN"
            ]
        );
        assert_eq!(
            names(offered_mechanisms(true, false, &ChannelBindings::none())),
            ["SCRAM-SHA-256", "SCRAM-SHA-1"]
        );
        assert_eq!(
            names(offered_mechanisms(false, true, &ChannelBindings::none())),
            ["SCRAM-SHA-256", "SCRAM-SHA-1"]
        );
    }

    #[test]
    fn failure_conditions() {
        assert_eq!(SaslFailure::NotAuthorized.condition(), "not-authorized");
        assert_eq!(
            SaslFailure::MalformedRequest.condition(),
            "malformed-request"
        );
        assert_eq!(
            SaslFailure::TemporaryAuthFailure.condition(),
            "temporary-auth-failure"
        );
        assert_eq!(SaslFailure::InvalidAuthzid.condition(), "invalid-authzid");
    }

    #[test]
    fn payload_encoding() {
        assert_eq!(decode_payload(""), Ok(None));
        assert_eq!(decode_payload("="), Ok(Some(Vec::new())));
        assert_eq!(decode_payload("AGEAYg=="), Ok(Some(b"\0a\0b".to_vec())));
        assert_eq!(
            decode_payload("AGEAYg="),
            Err(SaslFailure::IncorrectEncoding)
        );
        assert_eq!(decode_payload("!!!"), Err(SaslFailure::IncorrectEncoding));
        assert_eq!(encode_payload(None), "");
        assert_eq!(encode_payload(Some(b"")), "=");
        assert_eq!(encode_payload(Some(b"\0a\0b")), "AGEAYg==");
    }

    #[test]
    fn usernames_are_normalised() {
        assert_eq!(prep_username("User").as_deref(), Ok("user"));
        assert_eq!(prep_username("a\u{AD}b").as_deref(), Ok("ab"));
        assert_eq!(prep_username("a@b"), Err(SaslFailure::NotAuthorized));
        assert_eq!(prep_username(""), Err(SaslFailure::NotAuthorized));
    }

    #[test]
    fn authzid_must_be_the_own_bare_jid() {
        assert_eq!(check_authzid(None, "juliet", "example.com"), Ok(()));
        assert_eq!(check_authzid(Some(""), "juliet", "example.com"), Ok(()));
        assert_eq!(
            check_authzid(Some("juliet@example.com"), "juliet", "example.com"),
            Ok(())
        );
        assert_eq!(
            check_authzid(Some("Juliet@EXAMPLE.com"), "juliet", "example.com"),
            Ok(())
        );
        for other in [
            "romeo@example.com",
            "juliet@example.org",
            "juliet@example.com/r",
            "x@",
        ] {
            assert_eq!(
                check_authzid(Some(other), "juliet", "example.com"),
                Err(SaslFailure::InvalidAuthzid),
                "{other}"
            );
        }
    }
}
