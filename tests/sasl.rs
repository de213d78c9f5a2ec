//! Full SASL exchanges between corvid's server side and the xmpp-rs `sasl` crate's client, an
//! independent implementation, plus a hand-rolled client for what that crate lacks.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use corvid::sasl::{
    decode_payload, derive_credentials, encode_payload, offered_mechanisms, ChannelBindings,
    Mechanism, PlainRequest, SaslFailure, SaslSuccess, ScramServer,
};
use corvid::storage::{ScramCredentials, ScramHash};
use hmac::{Hmac, Mac};
use sasl::client::mechanisms::{Plain, Scram};
use sasl::client::Mechanism as _;
use sasl::common::scram::{ScramProvider, Sha1, Sha256};
use sasl::common::{ChannelBinding, Credentials};
use sha2::Digest;

const DOMAIN: &str = "example.com";

fn account(hash: ScramHash) -> ScramCredentials {
    derive_credentials("pencil", hash, 4096).unwrap()
}

fn exporter() -> Vec<u8> {
    (0..32).collect()
}

fn tls13_bindings() -> ChannelBindings {
    ChannelBindings {
        tls_exporter: Some(exporter()),
        tls_server_end_point: Some(vec![0xee; 32]),
    }
}

fn scram_client<S: ScramProvider>(password: &str, cb: ChannelBinding) -> Scram<S> {
    let creds = Credentials::default()
        .with_username("user")
        .with_password(password)
        .with_channel_binding(cb);
    Scram::<S>::from_credentials(creds).unwrap()
}

/// A login as the c2s code will run it, payloads going through base64 as on the wire. The
/// client's verification of the server signature is part of success.
fn login(
    client: &mut dyn sasl::client::Mechanism,
    bindings: &ChannelBindings,
    account: Option<&ScramCredentials>,
) -> Result<SaslSuccess, SaslFailure> {
    let offered = offered_mechanisms(true, true, bindings);
    let mechanism = Mechanism::from_name(client.name()).ok_or(SaslFailure::InvalidMechanism)?;
    if !offered.contains(&mechanism) {
        return Err(SaslFailure::InvalidMechanism);
    }
    let plus_offered = offered.iter().any(|m| m.is_plus());
    let (hash, plus) = mechanism.scram().ok_or(SaslFailure::InvalidMechanism)?;
    let auth = wire(&client.initial())?;
    let server = ScramServer::client_first(hash, plus, &auth, bindings, plus_offered, DOMAIN)?;
    let creds = account.filter(|_| server.username() == "user");
    let (server, challenge) = server.server_first(creds);
    let response = client
        .response(&wire(&challenge)?)
        .unwrap_or_else(|e| panic!("the client rejected a server-first-message: {e}"));
    let success = server.client_final(&wire(&response)?)?;
    let data = success.additional_data.as_deref().unwrap();
    client.success(&wire(data)?).unwrap();
    Ok(success)
}

fn wire(data: &[u8]) -> Result<Vec<u8>, SaslFailure> {
    Ok(decode_payload(&encode_payload(Some(data)))?.unwrap())
}

#[test]
fn scram_sha1() {
    let ok = login(
        &mut scram_client::<Sha1>("pencil", ChannelBinding::None),
        &ChannelBindings::none(),
        Some(&account(ScramHash::Sha1)),
    );
    assert_eq!(ok.unwrap().username, "user");
}

#[test]
fn scram_sha256() {
    let ok = login(
        &mut scram_client::<Sha256>("pencil", ChannelBinding::None),
        &ChannelBindings::none(),
        Some(&account(ScramHash::Sha256)),
    );
    assert_eq!(ok.unwrap().username, "user");
}

#[test]
fn scram_sha256_plus_tls_exporter() {
    let mut client = scram_client::<Sha256>("pencil", ChannelBinding::TlsExporter(exporter()));
    assert_eq!(client.name(), "SCRAM-SHA-256-PLUS");
    let ok = login(
        &mut client,
        &tls13_bindings(),
        Some(&account(ScramHash::Sha256)),
    );
    assert_eq!(ok.unwrap().username, "user");
}

#[test]
fn scram_sha1_plus_tls_exporter() {
    let mut client = scram_client::<Sha1>("pencil", ChannelBinding::TlsExporter(exporter()));
    assert!(login(
        &mut client,
        &tls13_bindings(),
        Some(&account(ScramHash::Sha1))
    )
    .is_ok());
}

#[test]
fn scram_without_binding_on_a_tls_stream_is_fine() {
    // `n`: the client cannot bind at all, which is no sign of a downgrade.
    let mut client = scram_client::<Sha256>("pencil", ChannelBinding::None);
    assert!(login(
        &mut client,
        &tls13_bindings(),
        Some(&account(ScramHash::Sha256))
    )
    .is_ok());
}

#[test]
fn wrong_password() {
    let mut client = scram_client::<Sha256>("pencil!", ChannelBinding::None);
    let result = login(
        &mut client,
        &ChannelBindings::none(),
        Some(&account(ScramHash::Sha256)),
    );
    assert_eq!(result, Err(SaslFailure::NotAuthorized));
    let mut client = scram_client::<Sha1>("Pencil", ChannelBinding::TlsExporter(exporter()));
    let result = login(
        &mut client,
        &tls13_bindings(),
        Some(&account(ScramHash::Sha1)),
    );
    assert_eq!(result, Err(SaslFailure::NotAuthorized));
}

#[test]
fn unknown_user_fails_only_at_the_end_after_a_normal_server_first() {
    let mut client = scram_client::<Sha256>("pencil", ChannelBinding::None);
    let first = client.initial();
    let server = ScramServer::client_first(
        ScramHash::Sha256,
        false,
        &first,
        &ChannelBindings::none(),
        false,
        DOMAIN,
    )
    .unwrap();
    let (server, challenge) = server.server_first(None);
    let challenge = String::from_utf8(challenge).unwrap();
    let fields: Vec<&str> = challenge.split(',').collect();
    assert_eq!(fields.len(), 3, "{challenge}");
    assert!(fields[0].starts_with("r="));
    assert_eq!(
        BASE64.decode(&fields[1][2..]).unwrap().len(),
        corvid::sasl::SALT_LEN
    );
    assert_eq!(fields[2], "i=4096");
    // The client cannot tell and answers as usual.
    let response = client.response(challenge.as_bytes()).unwrap();
    assert_eq!(
        server.client_final(&response),
        Err(SaslFailure::NotAuthorized)
    );
}

#[test]
fn y_flag_while_plus_is_offered_is_a_downgrade() {
    let mut client = scram_client::<Sha256>("pencil", ChannelBinding::Unsupported);
    let result = login(
        &mut client,
        &tls13_bindings(),
        Some(&account(ScramHash::Sha256)),
    );
    assert_eq!(result, Err(SaslFailure::NotAuthorized));
    // Without -PLUS on offer the client is simply right.
    let mut client = scram_client::<Sha256>("pencil", ChannelBinding::Unsupported);
    let result = login(
        &mut client,
        &ChannelBindings::none(),
        Some(&account(ScramHash::Sha256)),
    );
    assert!(result.is_ok());
}

#[test]
fn channel_binding_mismatch() {
    // What a client sees when a man in the middle terminates TLS: another exporter value.
    let mut client = scram_client::<Sha256>("pencil", ChannelBinding::TlsExporter(vec![1; 32]));
    let result = login(
        &mut client,
        &tls13_bindings(),
        Some(&account(ScramHash::Sha256)),
    );
    assert_eq!(result, Err(SaslFailure::NotAuthorized));
}

#[test]
fn binding_type_the_session_lacks() {
    let tls12 = ChannelBindings {
        tls_exporter: None,
        tls_server_end_point: Some(vec![0xee; 32]),
    };
    let mut client = scram_client::<Sha256>("pencil", ChannelBinding::TlsExporter(exporter()));
    let result = login(&mut client, &tls12, Some(&account(ScramHash::Sha256)));
    assert_eq!(result, Err(SaslFailure::NotAuthorized));
    let mut client = scram_client::<Sha256>("pencil", ChannelBinding::TlsUnique(exporter()));
    let result = login(
        &mut client,
        &tls13_bindings(),
        Some(&account(ScramHash::Sha256)),
    );
    assert_eq!(result, Err(SaslFailure::NotAuthorized));
}

#[test]
fn plus_is_not_offered_without_bindings() {
    let mut client = scram_client::<Sha256>("pencil", ChannelBinding::TlsExporter(exporter()));
    let result = login(
        &mut client,
        &ChannelBindings::none(),
        Some(&account(ScramHash::Sha256)),
    );
    assert_eq!(result, Err(SaslFailure::InvalidMechanism));
}

/// The `sasl` crate has no tls-server-end-point, so this client is written out from RFC 5802.
struct ManualScram {
    gs2_header: String,
    cb_data: Vec<u8>,
    client_first_bare: String,
}

impl ManualScram {
    fn new(gs2_header: &str, cb_data: &[u8]) -> Self {
        ManualScram {
            gs2_header: gs2_header.to_string(),
            cb_data: cb_data.to_vec(),
            client_first_bare: "n=user,r=manualnonce".to_string(),
        }
    }

    fn first(&self) -> Vec<u8> {
        format!("{}{}", self.gs2_header, self.client_first_bare).into_bytes()
    }

    /// Returns the client-final-message and the expected server-final-message.
    fn last(&self, password: &str, server_first: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let server_first = std::str::from_utf8(server_first).unwrap();
        let field = |k: &str| {
            server_first
                .split(',')
                .find_map(|f| f.strip_prefix(k))
                .unwrap()
                .to_string()
        };
        let salt = BASE64.decode(field("s=")).unwrap();
        let iterations: u32 = field("i=").parse().unwrap();
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password.as_bytes(), &salt, iterations, &mut salted);
        let client_key = hmac256(&salted, b"Client Key");
        let stored_key = sha2::Sha256::digest(&client_key);
        let mut cbind = self.gs2_header.clone().into_bytes();
        cbind.extend_from_slice(&self.cb_data);
        let without_proof = format!("c={},r={}", BASE64.encode(cbind), field("r="));
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = hmac256(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_signature = hmac256(&hmac256(&salted, b"Server Key"), auth_message.as_bytes());
        (
            format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes(),
            format!("v={}", BASE64.encode(server_signature)).into_bytes(),
        )
    }
}

fn hmac256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn manual_login(client: &ManualScram, password: &str) -> Result<SaslSuccess, SaslFailure> {
    let bindings = tls13_bindings();
    let server = ScramServer::client_first(
        ScramHash::Sha256,
        true,
        &client.first(),
        &bindings,
        true,
        DOMAIN,
    )?;
    let (server, challenge) = server.server_first(Some(&account(ScramHash::Sha256)));
    let (response, expected) = client.last(password, &challenge);
    let success = server.client_final(&response)?;
    assert_eq!(
        success.additional_data.as_deref(),
        Some(expected.as_slice())
    );
    Ok(success)
}

#[test]
fn scram_sha256_plus_tls_server_end_point() {
    let client = ManualScram::new("p=tls-server-end-point,,", &[0xee; 32]);
    assert_eq!(manual_login(&client, "pencil").unwrap().username, "user");
    assert_eq!(
        manual_login(&client, "pencil2"),
        Err(SaslFailure::NotAuthorized)
    );
    let forged = ManualScram::new("p=tls-server-end-point,,", &[0xef; 32]);
    assert_eq!(
        manual_login(&forged, "pencil"),
        Err(SaslFailure::NotAuthorized)
    );
}

#[test]
fn authzid_in_the_gs2_header() {
    let own = ManualScram::new("p=tls-exporter,a=user@example.com,", &exporter());
    assert!(manual_login(&own, "pencil").is_ok());
    let other = ManualScram::new("p=tls-exporter,a=admin@example.com,", &exporter());
    assert_eq!(
        manual_login(&other, "pencil"),
        Err(SaslFailure::InvalidAuthzid)
    );
}

#[test]
fn plain() {
    let verify = |password: &str, account: Option<&ScramCredentials>| {
        let creds = Credentials::default()
            .with_username("user")
            .with_password(password);
        let message = Plain::from_credentials(creds).unwrap().initial();
        let request = PlainRequest::parse(&wire(&message)?, DOMAIN)?;
        assert_eq!(request.username(), "user");
        request.verify(account)
    };
    let sha256 = account(ScramHash::Sha256);
    assert_eq!(verify("pencil", Some(&sha256)).unwrap().username, "user");
    assert!(verify("pencil", Some(&account(ScramHash::Sha1))).is_ok());
    assert_eq!(
        verify("pencil!", Some(&sha256)),
        Err(SaslFailure::NotAuthorized)
    );
    assert_eq!(verify("pencil", None), Err(SaslFailure::NotAuthorized));
}

#[test]
fn plain_needs_encryption_and_consent() {
    let none = ChannelBindings::none();
    assert!(!offered_mechanisms(false, true, &none).contains(&Mechanism::Plain));
    assert!(!offered_mechanisms(true, false, &none).contains(&Mechanism::Plain));
    assert!(offered_mechanisms(true, true, &none).contains(&Mechanism::Plain));
}

#[test]
fn bad_xml_payloads() {
    assert_eq!(
        decode_payload("not base64!"),
        Err(SaslFailure::IncorrectEncoding)
    );
    assert_eq!(decode_payload("biws="), Err(SaslFailure::IncorrectEncoding));
}

/// A small deterministic generator, so that failures reproduce.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, alphabet: &[u8]) -> Vec<u8> {
        let len = (self.next() % 48) as usize;
        (0..len)
            .map(|_| alphabet[(self.next() % alphabet.len() as u64) as usize])
            .collect()
    }
}

#[test]
fn garbage_never_panics_and_never_authenticates() {
    let bindings = tls13_bindings();
    let account = account(ScramHash::Sha1);
    let alphabet: Vec<u8> = b"npyacmrsiv=,2CD3\0\xff\xc3AB+/-._".to_vec();
    let all_bytes: Vec<u8> = (0..=255).collect();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for round in 0..20_000 {
        let set = if round % 2 == 0 {
            &alphabet
        } else {
            &all_bytes
        };
        let msg = rng.bytes(set);
        let plus = round % 3 == 0;
        let first = ScramServer::client_first(ScramHash::Sha1, plus, &msg, &bindings, true, DOMAIN);
        let _ = PlainRequest::parse(&msg, DOMAIN).map(|r| r.username().to_string());
        let _ = decode_payload(&String::from_utf8_lossy(&msg));
        let valid = format!("n,,n=user,r={}", round);
        let server = first.or_else(|_| {
            ScramServer::client_first(
                ScramHash::Sha1,
                false,
                valid.as_bytes(),
                &bindings,
                false,
                DOMAIN,
            )
        });
        let (server, _) = server.unwrap().server_first(Some(&account));
        let mut last = b"c=biws,r=".to_vec();
        last.extend(rng.bytes(set));
        if round % 2 == 0 {
            last.extend(format!(",p={}", BASE64.encode([0u8; 20])).into_bytes());
        }
        let result = server.client_final(if round % 5 == 0 { &msg } else { &last });
        assert!(result.is_err(), "{msg:?} / {last:?}");
    }
}

#[test]
fn empty_messages() {
    let none = ChannelBindings::none();
    assert_eq!(
        ScramServer::client_first(ScramHash::Sha256, false, b"", &none, false, DOMAIN).unwrap_err(),
        SaslFailure::MalformedRequest
    );
    assert_eq!(
        PlainRequest::parse(b"", DOMAIN).unwrap_err(),
        SaslFailure::MalformedRequest
    );
    let server = ScramServer::client_first(
        ScramHash::Sha256,
        false,
        b"n,,n=user,r=x",
        &none,
        false,
        DOMAIN,
    )
    .unwrap();
    let (server, _) = server.server_first(Some(&account(ScramHash::Sha256)));
    assert_eq!(server.client_final(b""), Err(SaslFailure::MalformedRequest));
}
