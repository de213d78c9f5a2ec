//! Channel bindings for the -PLUS mechanisms: tls-exporter (RFC 9266) and tls-server-end-point
//! (RFC 5929 §4). They tie a SCRAM exchange to this TLS session so that a man in the middle who
//! terminates TLS with another certificate cannot relay the login.

use std::fmt;

use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};
use x509_parser::prelude::{FromDer, X509Certificate};

/// RFC 9266 §2.
pub const TLS_EXPORTER_LABEL: &[u8] = b"EXPORTER-Channel-Binding";
pub const TLS_EXPORTER_LEN: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelBindingType {
    TlsExporter,
    TlsServerEndPoint,
}

impl ChannelBindingType {
    /// Strongest first: tls-exporter binds the session, tls-server-end-point only the certificate.
    pub const ALL: [ChannelBindingType; 2] = [
        ChannelBindingType::TlsExporter,
        ChannelBindingType::TlsServerEndPoint,
    ];

    /// The cb-name of the gs2 header and the `type` of XEP-0440's `<channel-binding/>`.
    pub fn name(self) -> &'static str {
        match self {
            ChannelBindingType::TlsExporter => "tls-exporter",
            ChannelBindingType::TlsServerEndPoint => "tls-server-end-point",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// The binding data of one TLS session; `None` for a binding that does not apply to it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ChannelBindings {
    pub tls_exporter: Option<Vec<u8>>,
    pub tls_server_end_point: Option<Vec<u8>>,
}

// The bytes are derived from session secrets; keep them out of logs.
impl fmt::Debug for ChannelBindings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl ChannelBindings {
    /// For an unencrypted stream.
    pub fn none() -> Self {
        Self::default()
    }

    /// The bindings of an established server-side session: its `tls-exporter` value, derived
    /// already (see `tls::lean_stream`), and `cert_der`, the end-entity certificate the server
    /// presented on it.
    pub fn from_parts(tls_exporter: Option<&[u8]>, cert_der: Option<&[u8]>) -> Self {
        ChannelBindings {
            tls_exporter: tls_exporter.map(<[u8]>::to_vec),
            tls_server_end_point: cert_der.and_then(tls_server_end_point),
        }
    }

    pub fn get(&self, ty: ChannelBindingType) -> Option<&[u8]> {
        match ty {
            ChannelBindingType::TlsExporter => self.tls_exporter.as_deref(),
            ChannelBindingType::TlsServerEndPoint => self.tls_server_end_point.as_deref(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.available().next().is_none()
    }

    pub fn available(&self) -> impl Iterator<Item = ChannelBindingType> + '_ {
        ChannelBindingType::ALL
            .into_iter()
            .filter(|ty| self.get(*ty).is_some())
    }

    /// The types to advertise in XEP-0440's `<sasl-channel-binding/>` stream feature.
    pub fn names(&self) -> Vec<&'static str> {
        self.available().map(ChannelBindingType::name).collect()
    }
}

/// RFC 5929 §4.1: the certificate's own signature hash, except that MD5 and SHA-1 are upgraded
/// to SHA-256. Certificates whose signature uses no single hash (Ed25519, Ed448) are left
/// undefined by the RFC; SHA-256 is what other servers and clients settled on. `None` if the
/// DER does not parse.
pub fn tls_server_end_point(cert_der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
    let hash = end_point_hash(&cert);
    Some(match hash {
        EndPointHash::Sha224 => Sha224::digest(cert_der).to_vec(),
        EndPointHash::Sha256 => Sha256::digest(cert_der).to_vec(),
        EndPointHash::Sha384 => Sha384::digest(cert_der).to_vec(),
        EndPointHash::Sha512 => Sha512::digest(cert_der).to_vec(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndPointHash {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

fn end_point_hash(cert: &X509Certificate<'_>) -> EndPointHash {
    let algorithm = &cert.signature_algorithm;
    let oid = algorithm.algorithm.to_id_string();
    if oid == RSASSA_PSS {
        // PSS names its hash in the parameters, not in the OID.
        return algorithm
            .parameters
            .as_ref()
            .and_then(|p| x509_parser::signature_algorithm::RsaSsaPssParams::try_from(p).ok())
            .map(|p| hash_by_oid(&p.hash_algorithm_oid().to_id_string()))
            .unwrap_or(EndPointHash::Sha256);
    }
    hash_by_oid(&oid)
}

const RSASSA_PSS: &str = "1.2.840.113549.1.1.10";

/// Signature algorithms and bare hash algorithms (for PSS), by OID. Anything weaker than SHA-256
/// or unknown maps to SHA-256, as RFC 5929 §4.1 prescribes for MD5 and SHA-1.
fn hash_by_oid(oid: &str) -> EndPointHash {
    match oid {
        // sha224WithRSAEncryption, ecdsa-with-SHA224, dsa-with-sha224, id-sha224
        "1.2.840.113549.1.1.14"
        | "1.2.840.10045.4.3.1"
        | "2.16.840.1.101.3.4.3.1"
        | "2.16.840.1.101.3.4.2.4" => EndPointHash::Sha224,
        // sha384WithRSAEncryption, ecdsa-with-SHA384, id-sha384
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" | "2.16.840.1.101.3.4.2.2" => {
            EndPointHash::Sha384
        }
        // sha512WithRSAEncryption, ecdsa-with-SHA512, id-sha512
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" | "2.16.840.1.101.3.4.2.3" => {
            EndPointHash::Sha512
        }
        _ => EndPointHash::Sha256,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_der(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn end_point_of_ecdsa_sha256_cert_is_sha256() {
        let der = cert_der(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(
            tls_server_end_point(&der).unwrap(),
            Sha256::digest(&der).to_vec()
        );
    }

    #[test]
    fn end_point_of_default_generated_cert_is_sha256() {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let der = certified.cert.der().to_vec();
        assert_eq!(
            tls_server_end_point(&der).unwrap(),
            Sha256::digest(&der).to_vec()
        );
    }

    #[test]
    fn end_point_follows_a_stronger_signature_hash() {
        let der = cert_der(&rcgen::PKCS_ECDSA_P384_SHA384);
        assert_eq!(
            tls_server_end_point(&der).unwrap(),
            Sha384::digest(&der).to_vec()
        );
    }

    #[test]
    fn end_point_of_ed25519_cert_is_sha256() {
        let der = cert_der(&rcgen::PKCS_ED25519);
        assert_eq!(
            tls_server_end_point(&der).unwrap(),
            Sha256::digest(&der).to_vec()
        );
    }

    #[test]
    fn end_point_of_garbage_is_none() {
        assert_eq!(tls_server_end_point(b""), None);
        assert_eq!(tls_server_end_point(b"\x30\x03\x02\x01"), None);
    }

    #[test]
    fn hash_oids() {
        assert_eq!(hash_by_oid("1.2.840.113549.1.1.4"), EndPointHash::Sha256); // md5WithRSA
        assert_eq!(hash_by_oid("1.2.840.113549.1.1.5"), EndPointHash::Sha256); // sha1WithRSA
        assert_eq!(hash_by_oid("1.2.840.113549.1.1.11"), EndPointHash::Sha256);
        assert_eq!(hash_by_oid("1.2.840.113549.1.1.12"), EndPointHash::Sha384);
        assert_eq!(hash_by_oid("1.2.840.113549.1.1.13"), EndPointHash::Sha512);
        assert_eq!(hash_by_oid("1.2.840.10045.4.3.4"), EndPointHash::Sha512);
    }

    #[test]
    fn names_and_lookup() {
        let both = ChannelBindings {
            tls_exporter: Some(vec![1; 32]),
            tls_server_end_point: Some(vec![2; 32]),
        };
        assert_eq!(both.names(), ["tls-exporter", "tls-server-end-point"]);
        assert!(ChannelBindings::none().is_empty());
        assert!(ChannelBindings::none().names().is_empty());
        assert_eq!(
            ChannelBindingType::from_name("tls-server-end-point"),
            Some(ChannelBindingType::TlsServerEndPoint)
        );
        assert_eq!(ChannelBindingType::from_name("tls-unique"), None);
        assert_eq!(
            format!("{both:?}"),
            r#"["tls-exporter", "tls-server-end-point"]"#
        );
    }
}
