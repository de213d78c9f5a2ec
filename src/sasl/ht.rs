//! The Hashed Token mechanisms (draft-schmaus-kitten-sasl-ht) that XEP-0484 FAST logs in with:
//! one message from the client, `authcid NUL HMAC(token, "Initiator" || cb-data)`, answered
//! in the success's additional data by `HMAC(token, "Responder" || cb-data)`, which proves to
//! the client that the server knows the token too.
//!
//! Only HT-SHA-256 is implemented; the channel-binding suffixes are NONE (no binding),
//! ENDP (tls-server-end-point) and EXPR (tls-exporter). Like the rest of `crate::sasl`,
//! nothing here does I/O: the stream code looks the token up between [`HtRequest::parse`] and
//! [`HtRequest::verify`].

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{prep_username, ChannelBindingType, ChannelBindings, SaslFailure};

type HmacSha256 = Hmac<Sha256>;

const SHA256_LEN: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HtMechanism {
    Sha256Expr,
    Sha256Endp,
    Sha256None,
}

impl HtMechanism {
    /// Strongest binding first, which is the order they are advertised in.
    pub const ALL: [HtMechanism; 3] = [
        HtMechanism::Sha256Expr,
        HtMechanism::Sha256Endp,
        HtMechanism::Sha256None,
    ];

    pub fn name(self) -> &'static str {
        match self {
            HtMechanism::Sha256Expr => "HT-SHA-256-EXPR",
            HtMechanism::Sha256Endp => "HT-SHA-256-ENDP",
            HtMechanism::Sha256None => "HT-SHA-256-NONE",
        }
    }

    /// Case-sensitive, like every SASL mechanism name (RFC 4422 §3.1).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    pub fn binding(self) -> Option<ChannelBindingType> {
        match self {
            HtMechanism::Sha256Expr => Some(ChannelBindingType::TlsExporter),
            HtMechanism::Sha256Endp => Some(ChannelBindingType::TlsServerEndPoint),
            HtMechanism::Sha256None => None,
        }
    }
}

/// The HT mechanisms this stream can run: NONE always, a binding variant where the transport
/// has that binding.
pub fn offered_ht_mechanisms(bindings: &ChannelBindings) -> Vec<HtMechanism> {
    HtMechanism::ALL
        .into_iter()
        .filter(|m| m.binding().is_none_or(|ty| bindings.get(ty).is_some()))
        .collect()
}

/// A parsed client message, before the token is known.
#[derive(Debug)]
pub struct HtRequest {
    username: String,
    initiator_hash: Vec<u8>,
    cb_data: Vec<u8>,
}

impl HtRequest {
    /// Splits `authcid NUL initiator-hashed-token` and picks this stream's binding data for
    /// `mechanism`. A mechanism whose binding the stream lacks fails as not offered.
    pub fn parse(
        mechanism: HtMechanism,
        message: &[u8],
        bindings: &ChannelBindings,
    ) -> Result<Self, SaslFailure> {
        let cb_data = match mechanism.binding() {
            None => Vec::new(),
            Some(ty) => bindings
                .get(ty)
                .ok_or(SaslFailure::InvalidMechanism)?
                .to_vec(),
        };
        // The username is UTF-8 without NUL, so the first NUL ends it; the hash may hold any byte.
        let nul = message
            .iter()
            .position(|&b| b == 0)
            .ok_or(SaslFailure::MalformedRequest)?;
        let (authcid, rest) = message.split_at(nul);
        let initiator_hash = rest[1..].to_vec();
        if initiator_hash.len() != SHA256_LEN {
            return Err(SaslFailure::MalformedRequest);
        }
        let authcid = std::str::from_utf8(authcid).map_err(|_| SaslFailure::MalformedRequest)?;
        Ok(HtRequest {
            username: prep_username(authcid)?,
            initiator_hash,
            cb_data,
        })
    }

    /// The normalised localpart whose token to look up.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Checks the client's hash against `token` in constant time; on a match, returns the
    /// server's answer for `<additional-data/>`.
    pub fn verify(&self, token: &[u8]) -> Option<Vec<u8>> {
        let expected = hmac(token, b"Initiator", &self.cb_data);
        if bool::from(expected.ct_eq(&self.initiator_hash)) {
            Some(hmac(token, b"Responder", &self.cb_data))
        } else {
            None
        }
    }
}

fn hmac(key: &[u8], label: &[u8], cb_data: &[u8]) -> Vec<u8> {
    let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
        // HMAC takes keys of any length; this arm is unreachable.
        return Vec::new();
    };
    mac.update(label);
    mac.update(cb_data);
    mac.finalize().into_bytes().to_vec()
}

/// What a client computes: the message of a login with `token` (for tests and documentation).
pub fn client_message(username: &str, token: &[u8], cb_data: &[u8]) -> Vec<u8> {
    let mut out = username.as_bytes().to_vec();
    out.push(0);
    out.extend(hmac(token, b"Initiator", cb_data));
    out
}

/// What the client expects back in `<additional-data/>`.
pub fn server_final(token: &[u8], cb_data: &[u8]) -> Vec<u8> {
    hmac(token, b"Responder", cb_data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bindings() -> ChannelBindings {
        ChannelBindings {
            tls_exporter: Some(vec![1; 32]),
            tls_server_end_point: None,
        }
    }

    #[test]
    fn names_and_offers() {
        for m in HtMechanism::ALL {
            assert_eq!(HtMechanism::from_name(m.name()), Some(m));
        }
        assert_eq!(HtMechanism::from_name("ht-sha-256-none"), None);
        assert_eq!(
            offered_ht_mechanisms(&bindings()),
            [HtMechanism::Sha256Expr, HtMechanism::Sha256None]
        );
        assert_eq!(
            offered_ht_mechanisms(&ChannelBindings::none()),
            [HtMechanism::Sha256None]
        );
    }

    #[test]
    fn right_token_verifies_and_answers() {
        let msg = client_message("User", b"tok", &[1; 32]);
        let req = HtRequest::parse(HtMechanism::Sha256Expr, &msg, &bindings()).unwrap();
        assert_eq!(req.username(), "user");
        assert_eq!(req.verify(b"tok"), Some(server_final(b"tok", &[1; 32])));
        assert_eq!(req.verify(b"tok2"), None);
    }

    #[test]
    fn binding_data_is_part_of_the_proof() {
        // Hashed for another TLS session: no match on this one.
        let msg = client_message("user", b"tok", &[2; 32]);
        let req = HtRequest::parse(HtMechanism::Sha256Expr, &msg, &bindings()).unwrap();
        assert_eq!(req.verify(b"tok"), None);
        let msg = client_message("user", b"tok", &[]);
        assert_eq!(
            HtRequest::parse(HtMechanism::Sha256Endp, &msg, &bindings()).unwrap_err(),
            SaslFailure::InvalidMechanism
        );
    }

    #[test]
    fn malformed_messages() {
        let none = ChannelBindings::none();
        for bad in [&b"user"[..], b"user\0short", b"\0", b""] {
            assert_eq!(
                HtRequest::parse(HtMechanism::Sha256None, bad, &none).unwrap_err(),
                SaslFailure::MalformedRequest
            );
        }
        let mut msg = vec![0xff, 0xfe, 0];
        msg.extend([0u8; 32]);
        assert_eq!(
            HtRequest::parse(HtMechanism::Sha256None, &msg, &none).unwrap_err(),
            SaslFailure::MalformedRequest
        );
        let mut msg = b"\0".to_vec();
        msg.extend([0u8; 32]);
        assert_eq!(
            HtRequest::parse(HtMechanism::Sha256None, &msg, &none).unwrap_err(),
            SaslFailure::NotAuthorized
        );
    }
}
