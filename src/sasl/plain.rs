//! PLAIN (RFC 4616), checked against the stored SCRAM credentials: the password is run through
//! the same key schedule and the resulting StoredKey compared, so no password-equivalent is kept.

use std::fmt;

use subtle::ConstantTimeEq;

use super::keys::{self, DEFAULT_ITERATIONS, SALT_LEN};
use super::{check_authzid, prep_username, SaslFailure, SaslSuccess};
use crate::storage::{ScramCredentials, ScramHash};

/// A parsed PLAIN message; the caller looks up the credentials of [`PlainRequest::username`]
/// (SCRAM-SHA-256 if the account has them, else SCRAM-SHA-1) and calls [`PlainRequest::verify`].
pub struct PlainRequest {
    username: String,
    password: String,
}

// The password must never reach a log.
impl fmt::Debug for PlainRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlainRequest")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl PlainRequest {
    /// Parses `[authzid] NUL authcid NUL passwd`. `domain` is the stream's domain, against
    /// which an authzid is checked.
    pub fn parse(msg: &[u8], domain: &str) -> Result<PlainRequest, SaslFailure> {
        let mut fields = msg.split(|b| *b == 0);
        let (Some(authzid), Some(authcid), Some(password), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(SaslFailure::MalformedRequest);
        };
        let [authzid, authcid, password] = [authzid, authcid, password]
            .map(|field| std::str::from_utf8(field).map_err(|_| SaslFailure::MalformedRequest));
        let (authzid, authcid, password) = (authzid?, authcid?, password?);
        if authcid.is_empty() || password.is_empty() {
            return Err(SaslFailure::MalformedRequest);
        }
        let username = prep_username(authcid)?;
        check_authzid(Some(authzid), &username, domain)?;
        // derive_credentials refuses passwords that fail SASLprep, so no account has one.
        let password = stringprep::saslprep(password)
            .map_err(|_| SaslFailure::NotAuthorized)?
            .into_owned();
        Ok(PlainRequest { username, password })
    }

    /// The nodeprep'd localpart whose credentials the caller must look up.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Checks the password. This runs PBKDF2 (milliseconds of CPU), so an async caller may want
    /// `spawn_blocking`. An unknown user (`None`) costs the same work, so response time does not
    /// reveal which accounts exist.
    pub fn verify(self, creds: Option<&ScramCredentials>) -> Result<SaslSuccess, SaslFailure> {
        let matches = match creds {
            Some(creds) => stored_key_matches(self.password.as_bytes(), creds),
            None => {
                let decoy = decoy_credentials();
                // The outcome is irrelevant; the work is the point.
                let _ = stored_key_matches(self.password.as_bytes(), &decoy);
                false
            }
        };
        if !matches {
            return Err(SaslFailure::NotAuthorized);
        }
        Ok(SaslSuccess {
            username: self.username,
            additional_data: None,
        })
    }
}

fn stored_key_matches(password: &[u8], creds: &ScramCredentials) -> bool {
    let salted = keys::salted_password(creds.hash, password, &creds.salt, creds.iterations);
    let stored_key = keys::stored_key(creds.hash, &salted);
    stored_key.ct_eq(&creds.stored_key).into()
}

fn decoy_credentials() -> ScramCredentials {
    ScramCredentials {
        hash: ScramHash::Sha256,
        salt: vec![0; SALT_LEN],
        iterations: DEFAULT_ITERATIONS,
        stored_key: Vec::new(),
        server_key: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::derive_credentials;

    fn creds(hash: ScramHash) -> ScramCredentials {
        derive_credentials("pencil", hash, 4096).unwrap()
    }

    fn verify(msg: &[u8], creds: Option<&ScramCredentials>) -> Result<SaslSuccess, SaslFailure> {
        PlainRequest::parse(msg, "example.com")?.verify(creds)
    }

    #[test]
    fn right_password_passes_with_either_hash() {
        for hash in [ScramHash::Sha256, ScramHash::Sha1] {
            let ok = verify(b"\0User\0pencil", Some(&creds(hash))).unwrap();
            assert_eq!(ok.username, "user");
            assert_eq!(ok.additional_data, None);
        }
        assert!(verify(
            b"user@example.com\0user\0pencil",
            Some(&creds(ScramHash::Sha256))
        )
        .is_ok());
    }

    #[test]
    fn wrong_password_or_unknown_user_fails() {
        let creds = creds(ScramHash::Sha256);
        assert_eq!(
            verify(b"\0user\0Pencil", Some(&creds)),
            Err(SaslFailure::NotAuthorized)
        );
        assert_eq!(
            verify(b"\0user\0pencil", None),
            Err(SaslFailure::NotAuthorized)
        );
    }

    #[test]
    fn password_is_saslprepped_before_checking() {
        let creds = creds(ScramHash::Sha256);
        // U+00AD (soft hyphen) maps to nothing under SASLprep.
        assert!(verify("\0user\0pen\u{AD}cil".as_bytes(), Some(&creds)).is_ok());
        assert_eq!(
            verify(b"\0user\0pen\x07cil", Some(&creds)),
            Err(SaslFailure::NotAuthorized)
        );
    }

    #[test]
    fn malformed_messages() {
        for msg in [
            &b""[..],
            b"user",
            b"\0user",
            b"\0user\0",
            b"\0\0pencil",
            b"\0user\0pencil\0",
            b"\0us\xffer\0pencil",
            b"\0user\0pen\xffcil",
        ] {
            assert_eq!(
                PlainRequest::parse(msg, "example.com").unwrap_err(),
                SaslFailure::MalformedRequest,
                "{msg:?}"
            );
        }
    }

    #[test]
    fn authzid_of_someone_else_is_refused() {
        assert_eq!(
            PlainRequest::parse(b"admin@example.com\0user\0pencil", "example.com").unwrap_err(),
            SaslFailure::InvalidAuthzid
        );
    }

    #[test]
    fn debug_hides_the_password() {
        let request = PlainRequest::parse(b"\0user\0pencil", "example.com").unwrap();
        assert!(!format!("{request:?}").contains("pencil"));
    }
}
