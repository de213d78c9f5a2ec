//! The server side of SCRAM (RFC 5802, RFC 7677), with channel binding.
//!
//! Two states, each a type, so that the credentials lookup can happen in between and no step
//! can be repeated: [`ScramServer`] (client-first received, credentials wanted) and
//! [`ScramChallenged`] (server-first sent, client-final wanted).

use std::fmt;
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use subtle::{Choice, ConstantTimeEq};

use super::keys::{self, DEFAULT_ITERATIONS, SALT_LEN};
use super::SaslSuccess;
use super::{check_authzid, prep_username, ChannelBindingType, ChannelBindings, SaslFailure};
use crate::storage::{ScramCredentials, ScramHash};

/// 144 bits of server nonce; a multiple of 3 so that its base64 (which never contains the
/// separating comma) has no padding.
const SERVER_NONCE_BYTES: usize = 18;

/// Keys the decoy salts of unknown users. Random per process unless [`init_decoy_secret`] set a
/// stable one first.
static DECOY_SECRET: OnceLock<[u8; 32]> = OnceLock::new();

/// Sets the secret the decoy salts of unknown users are derived from. With a random per-process
/// secret (the default) a decoy salt changes on restart and differs between cluster nodes while
/// a real one does not, which tells a patient attacker that the account does not exist; a
/// configured secret closes that. Returns the secret back if one is already in use.
pub fn init_decoy_secret(secret: [u8; 32]) -> Result<(), [u8; 32]> {
    DECOY_SECRET.set(secret)
}

fn decoy_secret() -> Result<&'static [u8; 32], SaslFailure> {
    if let Some(secret) = DECOY_SECRET.get() {
        return Ok(secret);
    }
    let mut fresh = [0; 32];
    let random = keys::random_bytes(fresh.len()).map_err(|_| SaslFailure::TemporaryAuthFailure)?;
    fresh.copy_from_slice(&random);
    Ok(DECOY_SECRET.get_or_init(|| fresh))
}

/// A client-first-message has been accepted; the caller now looks up the credentials of
/// [`ScramServer::username`] and calls [`ScramServer::server_first`].
pub struct ScramServer {
    hash: ScramHash,
    username: String,
    /// gs2 header as sent plus the binding data: what `c=` must encode.
    cbind_input: Vec<u8>,
    client_first_bare: String,
    nonce: String,
    decoy_secret: &'static [u8; 32],
    /// XEP-0474's `h` for the server-first-message, when the stream says what it advertised.
    downgrade_protection: Option<String>,
}

impl ScramServer {
    /// Parses the client-first-message of `SCRAM-<hash>[-PLUS]`.
    ///
    /// `plus_offered` is whether any -PLUS mechanism was advertised on this stream: a client
    /// that says it could bind but thinks we cannot (`y`) was then shown a stripped mechanism
    /// list, which RFC 5802 §6 says to treat as an attack. `domain` is the stream's domain,
    /// against which an authzid is checked.
    pub fn client_first(
        hash: ScramHash,
        plus: bool,
        msg: &[u8],
        bindings: &ChannelBindings,
        plus_offered: bool,
        domain: &str,
    ) -> Result<ScramServer, SaslFailure> {
        let nonce_bytes = keys::random_bytes(SERVER_NONCE_BYTES)
            .map_err(|_| SaslFailure::TemporaryAuthFailure)?;
        let server_nonce = BASE64.encode(nonce_bytes);
        let binding = BindingPolicy {
            plus,
            bindings,
            plus_offered,
        };
        Self::parse(hash, binding, msg, domain, &server_nonce)
    }

    /// For the published test vectors, whose server nonce is fixed.
    #[cfg(test)]
    fn client_first_with_nonce(
        hash: ScramHash,
        msg: &[u8],
        server_nonce: &str,
    ) -> Result<ScramServer, SaslFailure> {
        let binding = BindingPolicy {
            plus: false,
            bindings: &ChannelBindings::none(),
            plus_offered: false,
        };
        Self::parse(hash, binding, msg, "example.com", server_nonce)
    }

    fn parse(
        hash: ScramHash,
        binding: BindingPolicy<'_>,
        msg: &[u8],
        domain: &str,
        server_nonce: &str,
    ) -> Result<ScramServer, SaslFailure> {
        let msg = std::str::from_utf8(msg).map_err(|_| SaslFailure::MalformedRequest)?;
        let (gs2, bare) = split_gs2_header(msg)?;
        let cb_data = binding.data_for(gs2.cbind)?;
        let first = parse_client_first_bare(bare)?;
        let username = prep_username(&first.username)?;
        check_authzid(gs2.authzid.as_deref(), &username, domain)?;
        let mut cbind_input = gs2.raw.as_bytes().to_vec();
        cbind_input.extend_from_slice(cb_data);
        Ok(ScramServer {
            hash,
            username,
            cbind_input,
            client_first_bare: bare.to_string(),
            nonce: format!("{}{}", first.nonce, server_nonce),
            decoy_secret: decoy_secret()?,
            downgrade_protection: None,
        })
    }

    /// The nodeprep'd localpart whose credentials the caller must look up.
    pub fn username(&self) -> &str {
        &self.username
    }

    pub fn hash(&self) -> ScramHash {
        self.hash
    }

    /// Adds XEP-0474 downgrade protection: `h=` in the server-first-message, the hash of the
    /// `mechanisms` and the XEP-0440 `channel_bindings` (when those were listed) that the
    /// stream advertised.
    pub fn protect_downgrade(&mut self, mechanisms: &[&str], channel_bindings: Option<&[&str]>) {
        self.downgrade_protection = Some(super::downgrade_protection(
            self.hash,
            mechanisms,
            channel_bindings,
        ));
    }

    /// Builds the server-first-message. `None` (no such user, or credentials of another hash)
    /// still gets a plausible, stable salt and the default iteration count, so that the answer
    /// does not reveal whether the account exists; the exchange then fails at the last step.
    pub fn server_first(self, creds: Option<&ScramCredentials>) -> (ScramChallenged, Vec<u8>) {
        let creds = creds.filter(|c| c.hash == self.hash);
        let known = Choice::from(u8::from(creds.is_some()));
        let creds = match creds {
            Some(creds) => creds.clone(),
            None => self.decoy_credentials(),
        };
        let mut server_first = format!(
            "r={},s={},i={}",
            self.nonce,
            BASE64.encode(&creds.salt),
            creds.iterations
        );
        // An extension attribute (RFC 5802 §7), signed with the rest of the message.
        if let Some(h) = &self.downgrade_protection {
            server_first.push_str(",h=");
            server_first.push_str(h);
        }
        let auth_message_prefix = format!("{},{},", self.client_first_bare, server_first);
        let challenged = ScramChallenged {
            hash: self.hash,
            username: self.username,
            cbind_input: self.cbind_input,
            nonce: self.nonce,
            auth_message_prefix,
            stored_key: creds.stored_key,
            server_key: creds.server_key,
            known,
        };
        (challenged, server_first.into_bytes())
    }

    /// Keys that no proof can match (`known` is false anyway) and a salt that is the same on
    /// every attempt for this name, like a real account's.
    fn decoy_credentials(&self) -> ScramCredentials {
        let label = |what: &str| format!("{}\0{}\0{}", self.hash.as_str(), what, self.username);
        let mut salt = keys::hmac(
            ScramHash::Sha256,
            self.decoy_secret,
            label("salt").as_bytes(),
        );
        salt.truncate(SALT_LEN);
        ScramCredentials {
            hash: self.hash,
            salt,
            iterations: DEFAULT_ITERATIONS,
            stored_key: keys::hmac(self.hash, self.decoy_secret, label("stored").as_bytes()),
            server_key: keys::hmac(self.hash, self.decoy_secret, label("server").as_bytes()),
        }
    }
}

impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramServer")
            .field("hash", &self.hash)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The server-first-message has been sent; [`ScramChallenged::client_final`] checks the answer.
pub struct ScramChallenged {
    hash: ScramHash,
    username: String,
    cbind_input: Vec<u8>,
    nonce: String,
    auth_message_prefix: String,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
    known: Choice,
}

impl ScramChallenged {
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Verifies the client-final-message. On success the additional data is the
    /// server-final-message (`v=<ServerSignature>`) for `<success/>`.
    pub fn client_final(self, msg: &[u8]) -> Result<SaslSuccess, SaslFailure> {
        let msg = std::str::from_utf8(msg).map_err(|_| SaslFailure::MalformedRequest)?;
        let last = parse_client_final(msg)?;
        let cbind = decode_base64(last.channel_binding)?;
        let proof = decode_base64(last.proof)?;
        if proof.len() != keys::output_len(self.hash) {
            return Err(SaslFailure::MalformedRequest);
        }
        // Both are public values, so plain comparisons leak nothing.
        if cbind != self.cbind_input || last.nonce != self.nonce {
            return Err(SaslFailure::NotAuthorized);
        }
        let auth_message = format!("{}{}", self.auth_message_prefix, last.without_proof);
        if !bool::from(self.proof_matches(&proof, auth_message.as_bytes())) {
            return Err(SaslFailure::NotAuthorized);
        }
        let signature = keys::hmac(self.hash, &self.server_key, auth_message.as_bytes());
        Ok(SaslSuccess {
            username: self.username,
            additional_data: Some(format!("v={}", BASE64.encode(signature)).into_bytes()),
        })
    }

    /// RFC 5802 §3: ClientKey = proof XOR HMAC(StoredKey, AuthMessage); H(ClientKey) must be
    /// StoredKey. Constant time, so the comparison does not leak how much of a guess was right.
    fn proof_matches(&self, proof: &[u8], auth_message: &[u8]) -> Choice {
        let signature = keys::hmac(self.hash, &self.stored_key, auth_message);
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        keys::digest(self.hash, &client_key).ct_eq(&self.stored_key) & self.known
    }
}

impl fmt::Debug for ScramChallenged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramChallenged")
            .field("hash", &self.hash)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// What the stream allows for the gs2 cbind-flag.
struct BindingPolicy<'a> {
    plus: bool,
    bindings: &'a ChannelBindings,
    plus_offered: bool,
}

impl<'a> BindingPolicy<'a> {
    /// The binding data `c=` must carry after the gs2 header.
    fn data_for(&self, flag: CbindFlag<'_>) -> Result<&'a [u8], SaslFailure> {
        match flag {
            // A -PLUS mechanism without binding, or a binding under a plain mechanism, is a
            // client contradicting itself.
            CbindFlag::None | CbindFlag::ClientOnly if self.plus => {
                Err(SaslFailure::MalformedRequest)
            }
            CbindFlag::Bound(_) if !self.plus => Err(SaslFailure::MalformedRequest),
            CbindFlag::ClientOnly if self.plus_offered => Err(SaslFailure::NotAuthorized),
            CbindFlag::None | CbindFlag::ClientOnly => Ok(&[]),
            CbindFlag::Bound(name) => ChannelBindingType::from_name(name)
                .and_then(|ty| self.bindings.get(ty))
                .ok_or(SaslFailure::NotAuthorized),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CbindFlag<'a> {
    /// `n`: the client does not support channel binding.
    None,
    /// `y`: the client supports it but believes the server does not.
    ClientOnly,
    /// `p=<cb-name>`.
    Bound(&'a str),
}

struct Gs2Header<'a> {
    /// Including the final comma, as it goes into `c=`.
    raw: &'a str,
    cbind: CbindFlag<'a>,
    authzid: Option<String>,
}

/// Splits `gs2-cbind-flag "," [authzid] ","` off the client-first-message.
fn split_gs2_header(msg: &str) -> Result<(Gs2Header<'_>, &str), SaslFailure> {
    let mut parts = msg.splitn(3, ',');
    let (Some(flag), Some(authzid), Some(bare)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(SaslFailure::MalformedRequest);
    };
    let cbind = match flag {
        "n" => CbindFlag::None,
        "y" => CbindFlag::ClientOnly,
        _ => match flag.strip_prefix("p=") {
            Some(name) if is_cb_name(name) => CbindFlag::Bound(name),
            _ => return Err(SaslFailure::MalformedRequest),
        },
    };
    let authzid = match authzid {
        "" => None,
        _ => match authzid.strip_prefix("a=") {
            Some(name) => Some(decode_saslname(name)?),
            None => return Err(SaslFailure::MalformedRequest),
        },
    };
    let raw = &msg[..msg.len() - bare.len()];
    Ok((
        Gs2Header {
            raw,
            cbind,
            authzid,
        },
        bare,
    ))
}

/// RFC 5056 §7: cb-name = 1*(ALPHA / DIGIT / "." / "-").
fn is_cb_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

struct ClientFirstBare {
    username: String,
    nonce: String,
}

/// `[reserved-mext ","] username "," nonce ["," extensions]`.
fn parse_client_first_bare(bare: &str) -> Result<ClientFirstBare, SaslFailure> {
    let mut attrs = bare.split(',');
    let username = attrs.next().and_then(|a| a.strip_prefix("n="));
    let nonce = attrs.next().and_then(|a| a.strip_prefix("r="));
    // `m=` lands here too: it would come first, where `n=` is required, and RFC 5802 §5.1 says
    // to fail on it since we know no mandatory extension.
    let (Some(username), Some(nonce)) = (username, nonce) else {
        return Err(SaslFailure::MalformedRequest);
    };
    if username.is_empty() || !is_nonce(nonce) || !attrs.all(is_extension) {
        return Err(SaslFailure::MalformedRequest);
    }
    Ok(ClientFirstBare {
        username: decode_saslname(username)?,
        nonce: nonce.to_string(),
    })
}

struct ClientFinal<'a> {
    without_proof: &'a str,
    channel_binding: &'a str,
    nonce: &'a str,
    proof: &'a str,
}

/// `channel-binding "," nonce ["," extensions] "," proof`.
fn parse_client_final(msg: &str) -> Result<ClientFinal<'_>, SaslFailure> {
    let (without_proof, proof) = msg.rsplit_once(',').ok_or(SaslFailure::MalformedRequest)?;
    let proof = proof
        .strip_prefix("p=")
        .ok_or(SaslFailure::MalformedRequest)?;
    let mut attrs = without_proof.split(',');
    let channel_binding = attrs.next().and_then(|a| a.strip_prefix("c="));
    let nonce = attrs.next().and_then(|a| a.strip_prefix("r="));
    let (Some(channel_binding), Some(nonce)) = (channel_binding, nonce) else {
        return Err(SaslFailure::MalformedRequest);
    };
    if !attrs.all(is_extension) {
        return Err(SaslFailure::MalformedRequest);
    }
    Ok(ClientFinal {
        without_proof,
        channel_binding,
        nonce,
        proof,
    })
}

/// `printable = %x21-2B / %x2D-7E`, at least one.
fn is_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// An optional extension `attr-val` (a letter other than the reserved `m`, then `=`).
fn is_extension(attr: &str) -> bool {
    let bytes = attr.as_bytes();
    bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[0] != b'm' && bytes[1] == b'='
}

/// Undoes the `=2C` / `=3D` escaping of `,` and `=` (RFC 5802 §5.1); any other `=` is invalid.
fn decode_saslname(name: &str) -> Result<String, SaslFailure> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(SaslFailure::MalformedRequest),
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

fn decode_base64(text: &str) -> Result<Vec<u8>, SaslFailure> {
    BASE64
        .decode(text)
        .map_err(|_| SaslFailure::MalformedRequest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector_creds(hash: ScramHash, salt_b64: &str) -> ScramCredentials {
        let salt = BASE64.decode(salt_b64).unwrap();
        keys::credentials_with_salt(b"pencil", hash, salt, 4096)
    }

    fn run_vector(
        hash: ScramHash,
        client_first: &str,
        server_nonce: &str,
        salt_b64: &str,
        server_first: &str,
        client_final: &str,
        server_final: &str,
    ) {
        let creds = vector_creds(hash, salt_b64);
        let server =
            ScramServer::client_first_with_nonce(hash, client_first.as_bytes(), server_nonce)
                .unwrap();
        assert_eq!(server.username(), "user");
        let (challenged, first) = server.server_first(Some(&creds));
        assert_eq!(std::str::from_utf8(&first).unwrap(), server_first);
        let success = challenged.client_final(client_final.as_bytes()).unwrap();
        assert_eq!(success.username, "user");
        assert_eq!(success.additional_data.unwrap(), server_final.as_bytes());
    }

    #[test]
    fn rfc5802_scram_sha1_vector() {
        run_vector(
            ScramHash::Sha1,
            "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
            "3rfcNHYJY1ZVvWVs7j",
            "QSXCR+Q6sek8bf92",
            "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
        );
    }

    #[test]
    fn rfc7677_scram_sha256_vector() {
        run_vector(
            ScramHash::Sha256,
            "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            "W22ZaJ0SNY7soEsUEjb6gQ==",
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        );
    }

    #[test]
    fn rfc7677_vector_with_a_wrong_proof_fails() {
        let creds = vector_creds(ScramHash::Sha256, "W22ZaJ0SNY7soEsUEjb6gQ==");
        let server = ScramServer::client_first_with_nonce(
            ScramHash::Sha256,
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        )
        .unwrap();
        let (challenged, _) = server.server_first(Some(&creds));
        let result = challenged.client_final(
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              p=eHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        );
        assert_eq!(result, Err(SaslFailure::NotAuthorized));
    }

    fn first(msg: &str) -> Result<ScramServer, SaslFailure> {
        ScramServer::client_first_with_nonce(ScramHash::Sha256, msg.as_bytes(), "srv")
    }

    #[test]
    fn gs2_header_is_kept_verbatim() {
        let s = first("n,a=user@example.com,n=user,r=abc").unwrap();
        assert_eq!(s.cbind_input, b"n,a=user@example.com,");
        assert_eq!(s.nonce, "abcsrv");
        let s = first("y,,n=user,r=abc").unwrap();
        assert_eq!(s.cbind_input, b"y,,");
    }

    #[test]
    fn usernames_are_unescaped_and_prepped() {
        assert_eq!(first("n,,n=User,r=abc").unwrap().username(), "user");
        assert_eq!(first("n,,n=a=3Db=2C,r=abc").unwrap().username(), "a=b,");
        assert_eq!(
            first("n,,n=a@b,r=abc").unwrap_err(),
            SaslFailure::NotAuthorized
        );
        assert_eq!(decode_saslname("a=2Cb=3Dc").unwrap(), "a,b=c");
        assert_eq!(decode_saslname("a=2"), Err(SaslFailure::MalformedRequest));
        assert_eq!(decode_saslname("a=2c"), Err(SaslFailure::MalformedRequest));
        assert_eq!(decode_saslname("=€€"), Err(SaslFailure::MalformedRequest));
    }

    #[test]
    fn authzid_of_someone_else_is_refused() {
        assert_eq!(
            first("n,a=admin@example.com,n=user,r=abc").unwrap_err(),
            SaslFailure::InvalidAuthzid
        );
        assert!(first("n,a=,n=user,r=abc").is_ok());
    }

    #[test]
    fn malformed_client_first_messages() {
        for msg in [
            "",
            "n",
            "n,",
            "n,,",
            "x,,n=user,r=abc",
            "p,,n=user,r=abc",
            "p=,,n=user,r=abc",
            "n,b=user,n=user,r=abc",
            "n,,m=ext,n=user,r=abc",
            "n,,n=user",
            "n,,n=user,r=",
            "n,,n=,r=abc",
            "n,,r=abc,n=user",
            "n,,n=user,r=a b\u{7f}",
            "n,,n=user,r=abc,1=x",
            "n,,n=user,r=abc,m=x",
            "n,,n=user,r=abc,,",
        ] {
            assert_eq!(
                first(msg).unwrap_err(),
                SaslFailure::MalformedRequest,
                "{msg:?}"
            );
        }
        assert!(first("n,,n=user,r=abc,x=ext").is_ok());
        let not_utf8 = ScramServer::client_first_with_nonce(ScramHash::Sha1, b"n,,n=\xff,r=a", "s");
        assert_eq!(not_utf8.unwrap_err(), SaslFailure::MalformedRequest);
    }

    fn challenged() -> ScramChallenged {
        let creds = vector_creds(ScramHash::Sha256, "W22ZaJ0SNY7soEsUEjb6gQ==");
        first("n,,n=user,r=abc")
            .unwrap()
            .server_first(Some(&creds))
            .0
    }

    #[test]
    fn malformed_client_final_messages() {
        let proof = BASE64.encode([0u8; 32]);
        for msg in [
            String::new(),
            "garbage".to_string(),
            "c=biws".to_string(),
            "c=biws,r=abcsrv".to_string(),
            format!("r=abcsrv,c=biws,p={proof}"),
            format!("c=biws,p={proof}"),
            format!("c=biws,r=abcsrv,p=!!{proof}"),
            "c=biws,r=abcsrv,p=AAAA".to_string(),
            format!("c=%%%,r=abcsrv,p={proof}"),
            format!("c=biws,r=abcsrv,,p={proof}"),
            format!("c=biws,r=abcsrv,p={proof},x=y"),
        ] {
            assert_eq!(
                challenged().client_final(msg.as_bytes()).unwrap_err(),
                SaslFailure::MalformedRequest,
                "{msg:?}"
            );
        }
        assert_eq!(
            challenged().client_final(b"c=biws,\xff").unwrap_err(),
            SaslFailure::MalformedRequest
        );
    }

    #[test]
    fn wrong_nonce_or_binding_is_not_authorized() {
        let proof = BASE64.encode([0u8; 32]);
        for msg in [
            format!("c=biws,r=abc,p={proof}"),
            format!("c=biws,r=abcsrvX,p={proof}"),
            format!("c=eSws,r=abcsrv,p={proof}"),
            format!("c=biws,r=abcsrv,p={proof}"),
        ] {
            assert_eq!(
                challenged().client_final(msg.as_bytes()).unwrap_err(),
                SaslFailure::NotAuthorized,
                "{msg:?}"
            );
        }
    }

    fn policy(plus: bool, plus_offered: bool, bindings: &ChannelBindings) -> BindingPolicy<'_> {
        BindingPolicy {
            plus,
            bindings,
            plus_offered,
        }
    }

    #[test]
    fn binding_policy() {
        let none = ChannelBindings::none();
        let exporter = ChannelBindings {
            tls_exporter: Some(vec![7; 32]),
            tls_server_end_point: None,
        };
        let ok: &[u8] = &[];
        assert_eq!(
            policy(false, false, &none).data_for(CbindFlag::None),
            Ok(ok)
        );
        assert_eq!(
            policy(false, false, &none).data_for(CbindFlag::ClientOnly),
            Ok(ok)
        );
        assert_eq!(
            policy(false, true, &exporter).data_for(CbindFlag::ClientOnly),
            Err(SaslFailure::NotAuthorized)
        );
        assert_eq!(
            policy(false, true, &exporter).data_for(CbindFlag::None),
            Ok(ok)
        );
        assert_eq!(
            policy(true, true, &exporter).data_for(CbindFlag::Bound("tls-exporter")),
            Ok(&[7u8; 32][..])
        );
        for (plus, flag, failure) in [
            (true, CbindFlag::None, SaslFailure::MalformedRequest),
            (true, CbindFlag::ClientOnly, SaslFailure::MalformedRequest),
            (
                false,
                CbindFlag::Bound("tls-exporter"),
                SaslFailure::MalformedRequest,
            ),
            (
                true,
                CbindFlag::Bound("tls-server-end-point"),
                SaslFailure::NotAuthorized,
            ),
            (
                true,
                CbindFlag::Bound("tls-unique"),
                SaslFailure::NotAuthorized,
            ),
        ] {
            assert_eq!(
                policy(plus, true, &exporter).data_for(flag),
                Err(failure),
                "{flag:?}"
            );
        }
    }

    #[test]
    fn unknown_users_get_a_stable_plausible_salt() {
        let answer = |name: &str| {
            let (_, msg) = first(&format!("n,,n={name},r=abc"))
                .unwrap()
                .server_first(None);
            String::from_utf8(msg).unwrap()
        };
        let a = answer("ghost");
        assert_eq!(a, answer("Ghost"));
        assert_ne!(a, answer("phantom"));
        let salt = a.split(",s=").nth(1).unwrap().split(',').next().unwrap();
        assert_eq!(BASE64.decode(salt).unwrap().len(), SALT_LEN);
        assert!(a.ends_with(",i=4096"));
    }

    #[test]
    fn credentials_of_another_hash_are_treated_as_unknown() {
        let creds = vector_creds(ScramHash::Sha1, "QSXCR+Q6sek8bf92");
        let (_, msg) = first("n,,n=user,r=abc").unwrap().server_first(Some(&creds));
        assert!(!String::from_utf8(msg).unwrap().contains("QSXCR+Q6sek8bf92"));
    }
}
