//! The SCRAM key schedule (RFC 5802 §3), shared by SCRAM itself, PLAIN and account creation.

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use sha1::Sha1;
use sha2::{Digest, Sha256};

pub(crate) use super::pbkdf2::salted_password;
use super::SaslError;
use crate::storage::{ScramCredentials, ScramHash};

/// RFC 7677 §4 asks for at least 4096; fewer would make stolen keys cheap to brute-force.
pub const MIN_ITERATIONS: u32 = 4096;
/// Also what an unknown user is answered with, so accounts should be created with it: a
/// different count would tell an attacker which usernames exist.
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// The salt length of new credentials and of the decoy salts of unknown users, which must
/// look alike.
pub const SALT_LEN: usize = 16;

/// Turns a password into the only things the server may keep: salt, iteration count,
/// StoredKey and ServerKey.
pub fn derive_credentials(
    password: &str,
    hash: ScramHash,
    iterations: u32,
) -> Result<ScramCredentials, SaslError> {
    if iterations < MIN_ITERATIONS {
        return Err(SaslError::TooFewIterations(iterations));
    }
    let password = stringprep::saslprep(password).map_err(|_| SaslError::InvalidPassword)?;
    let salt = random_bytes(SALT_LEN)?;
    Ok(credentials_with_salt(
        password.as_bytes(),
        hash,
        salt,
        iterations,
    ))
}

/// `password` must already be SASLprep'd.
pub(crate) fn credentials_with_salt(
    password: &[u8],
    hash: ScramHash,
    salt: Vec<u8>,
    iterations: u32,
) -> ScramCredentials {
    let salted = salted_password(hash, password, &salt, iterations);
    ScramCredentials {
        hash,
        stored_key: stored_key(hash, &salted),
        server_key: hmac(hash, &salted, b"Server Key"),
        salt,
        iterations,
    }
}

pub(crate) fn stored_key(hash: ScramHash, salted_password: &[u8]) -> Vec<u8> {
    digest(hash, &hmac(hash, salted_password, b"Client Key"))
}

pub(crate) fn hmac(hash: ScramHash, key: &[u8], data: &[u8]) -> Vec<u8> {
    match hash {
        ScramHash::Sha1 => hmac_with::<Hmac<Sha1>>(key, data),
        ScramHash::Sha256 => hmac_with::<Hmac<Sha256>>(key, data),
    }
}

fn hmac_with<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
    // Never fails: HMAC hashes or pads keys of any length (RFC 2104 §2).
    let mut mac = <M as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

pub(crate) fn digest(hash: ScramHash, data: &[u8]) -> Vec<u8> {
    match hash {
        ScramHash::Sha1 => Sha1::digest(data).to_vec(),
        ScramHash::Sha256 => Sha256::digest(data).to_vec(),
    }
}

pub(crate) fn output_len(hash: ScramHash) -> usize {
    match hash {
        ScramHash::Sha1 => 20,
        ScramHash::Sha256 => 32,
    }
}

/// Straight from the OS so that a fork or a seeding bug cannot repeat salts or nonces.
pub(crate) fn random_bytes(len: usize) -> Result<Vec<u8>, SaslError> {
    let mut out = vec![0; len];
    OsRng.try_fill_bytes(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_credentials_match_the_key_schedule() {
        let creds = derive_credentials("pencil", ScramHash::Sha256, 4096).unwrap();
        assert_eq!(creds.salt.len(), SALT_LEN);
        let again = credentials_with_salt(b"pencil", ScramHash::Sha256, creds.salt.clone(), 4096);
        assert_eq!(creds, again);
        assert_eq!(creds.stored_key.len(), 32);
        assert_eq!(creds.server_key.len(), 32);
    }

    #[test]
    fn salts_are_fresh() {
        let a = derive_credentials("pencil", ScramHash::Sha1, 4096).unwrap();
        let b = derive_credentials("pencil", ScramHash::Sha1, 4096).unwrap();
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.stored_key, b.stored_key);
        assert_eq!(a.stored_key.len(), 20);
    }

    #[test]
    fn password_is_saslprepped() {
        // RFC 4013 §3: U+00A0 (no-break space) maps to a plain space; U+00AD (soft hyphen) to
        // nothing.
        let a = derive_credentials("I\u{AD}X a", ScramHash::Sha256, 4096).unwrap();
        let b = credentials_with_salt(b"IX a", ScramHash::Sha256, a.salt.clone(), 4096);
        assert_eq!(a, b);
        let c = derive_credentials("a\u{A0}b", ScramHash::Sha256, 4096).unwrap();
        let d = credentials_with_salt(b"a b", ScramHash::Sha256, c.salt.clone(), 4096);
        assert_eq!(c, d);
    }

    #[test]
    fn rejects_prohibited_passwords_and_weak_counts() {
        assert!(matches!(
            derive_credentials("a\u{7}b", ScramHash::Sha256, 4096),
            Err(SaslError::InvalidPassword)
        ));
        assert!(matches!(
            derive_credentials("pencil", ScramHash::Sha256, 1000),
            Err(SaslError::TooFewIterations(1000))
        ));
    }
}
