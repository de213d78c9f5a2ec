//! PBKDF2-HMAC (RFC 8018 §5.2) for SCRAM's `Hi()` (RFC 5802 §2.2): one output block, as
//! SaltedPassword is exactly one hash long.
//!
//! A PLAIN login runs this once, and its thousands of iterations are most of that login's
//! CPU (issue 16). Each iteration is HMAC over the previous block, so here the HMAC key's
//! inner and outer states are computed once, and every iteration is exactly two compressions
//! of one fixed-layout block, with the SHA padding written once. The generic `pbkdf2` and
//! `hmac` crates clone a keyed hasher and run its buffering and padding logic on every
//! iteration: a third again on top of the compressions in a login's profile. The compression
//! functions are the `sha1` and `sha2` crates' own (SHA-NI where the CPU has it); the tests
//! hold the output to RFC 6070's vectors and to the `pbkdf2` crate's.

use sha2::digest::generic_array::GenericArray;

use super::keys;
use crate::storage::ScramHash;

/// The block size of SHA-1 and SHA-256.
const BLOCK: usize = 64;

/// A hash function's chaining state, as far as PBKDF2-HMAC needs it.
trait ChainState: Copy {
    const INITIAL: Self;
    /// The digest length.
    const LEN: usize;
    /// The hash, for what runs once per derivation (`keys::digest`, `keys::hmac`).
    const HASH: ScramHash;
    fn compress(&mut self, block: &[u8; BLOCK]);
    fn words(&self) -> &[u32];

    /// The first `LEN` bytes of `out` become the state as a digest (big-endian words).
    fn write_digest(&self, out: &mut [u8]) {
        for (chunk, word) in out.chunks_exact_mut(4).zip(self.words()) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
    }
}

#[derive(Clone, Copy)]
struct Sha256State([u32; 8]);

impl ChainState for Sha256State {
    const INITIAL: Self = Sha256State([
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ]);
    const LEN: usize = 32;
    const HASH: ScramHash = ScramHash::Sha256;

    fn compress(&mut self, block: &[u8; BLOCK]) {
        sha2::compress256(
            &mut self.0,
            std::slice::from_ref(GenericArray::from_slice(block)),
        );
    }

    fn words(&self) -> &[u32] {
        &self.0
    }
}

#[derive(Clone, Copy)]
struct Sha1State([u32; 5]);

impl ChainState for Sha1State {
    const INITIAL: Self = Sha1State([0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0]);
    const LEN: usize = 20;
    const HASH: ScramHash = ScramHash::Sha1;

    fn compress(&mut self, block: &[u8; BLOCK]) {
        sha1::compress(
            &mut self.0,
            std::slice::from_ref(GenericArray::from_slice(block)),
        );
    }

    fn words(&self) -> &[u32] {
        &self.0
    }
}

/// SCRAM's SaltedPassword: `Hi(password, salt, rounds)`, one block of PBKDF2-HMAC-`hash`.
/// `rounds` of 0 is taken as 1 (SCRAM never asks for fewer than 4096).
pub(crate) fn salted_password(
    hash: ScramHash,
    password: &[u8],
    salt: &[u8],
    rounds: u32,
) -> Vec<u8> {
    match hash {
        ScramHash::Sha1 => hi::<Sha1State>(password, salt, rounds),
        ScramHash::Sha256 => hi::<Sha256State>(password, salt, rounds),
    }
}

fn hi<S: ChainState>(password: &[u8], salt: &[u8], rounds: u32) -> Vec<u8> {
    // RFC 2104 §2: a key longer than the block is hashed first, a shorter one zero-padded.
    let mut key = [0u8; BLOCK];
    if password.len() > BLOCK {
        let digest = keys::digest(S::HASH, password);
        key[..digest.len()].copy_from_slice(&digest);
    } else {
        key[..password.len()].copy_from_slice(password);
    }
    let keyed = |pad: u8| {
        let mut state = S::INITIAL;
        state.compress(&key.map(|b| b ^ pad));
        state
    };
    let (inner, outer) = (keyed(0x36), keyed(0x5c));

    // U1 = HMAC(password, salt || INT(1)): the one message of variable length, run once.
    let mut first = salt.to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut result = keys::hmac(S::HASH, password, &first);
    let mut u = [0u8; BLOCK];
    u[..S::LEN].copy_from_slice(&result);

    // Every later message is one digest long, after one block of key: the block that holds
    // it carries the same SHA padding for the inner and the outer hash, written once.
    let bits = ((BLOCK + S::LEN) * 8) as u64;
    u[S::LEN] = 0x80;
    u[BLOCK - 8..].copy_from_slice(&bits.to_be_bytes());
    for _ in 1..rounds {
        let mut state = inner;
        state.compress(&u);
        state.write_digest(&mut u[..S::LEN]);
        let mut state = outer;
        state.compress(&u);
        state.write_digest(&mut u[..S::LEN]);
        for (r, x) in result.iter_mut().zip(&u[..S::LEN]) {
            *r ^= x;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use rand::{Rng, RngCore};
    use sha1::Sha1;
    use sha2::Sha256;

    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// RFC 6070 §2, PBKDF2-HMAC-SHA1 with dkLen 20.
    #[test]
    fn rfc6070_vectors() {
        let cases: [(&[u8], &[u8], u32, &str); 3] = [
            (
                b"password",
                b"salt",
                1,
                "0c60c80f961f0e71f3a9b524af6012062fe037a6",
            ),
            (
                b"password",
                b"salt",
                2,
                "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957",
            ),
            (
                b"password",
                b"salt",
                4096,
                "4b007901b765489abead49d926f721d065a429c1",
            ),
        ];
        for (password, salt, rounds, expected) in cases {
            let got = salted_password(ScramHash::Sha1, password, salt, rounds);
            assert_eq!(hex(&got), expected, "{rounds} rounds");
        }
    }

    /// The generic crates' answer, for both hashes, over passwords around the block size
    /// (a key longer than a block is hashed first), salts short and long, few rounds and many.
    #[test]
    fn agrees_with_the_pbkdf2_crate() {
        let mut rng = rand::thread_rng();
        let lengths = [0usize, 1, 20, 32, 55, 56, 63, 64, 65, 100, 200];
        for &password_len in &lengths {
            for &salt_len in &lengths {
                let mut password = vec![0u8; password_len];
                let mut salt = vec![0u8; salt_len];
                rng.fill_bytes(&mut password);
                rng.fill_bytes(&mut salt);
                let rounds = rng.gen_range(1..40);
                for rounds in [1, 2, rounds, 4096] {
                    let mut sha1 = [0u8; 20];
                    pbkdf2::pbkdf2_hmac::<Sha1>(&password, &salt, rounds, &mut sha1);
                    let mut sha256 = [0u8; 32];
                    pbkdf2::pbkdf2_hmac::<Sha256>(&password, &salt, rounds, &mut sha256);
                    let case = format!("password {password_len}, salt {salt_len}, {rounds} rounds");
                    assert_eq!(
                        salted_password(ScramHash::Sha1, &password, &salt, rounds),
                        sha1,
                        "SHA-1, {case}"
                    );
                    assert_eq!(
                        salted_password(ScramHash::Sha256, &password, &salt, rounds),
                        sha256,
                        "SHA-256, {case}"
                    );
                }
            }
        }
    }
}
