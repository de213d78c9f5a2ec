//! The certificates of the hosted domains: loaded from PEM files, or generated self-signed for
//! a domain on first start (the embedded default), and the rustls configurations that serve
//! them. Each hosted domain has its own certificate: direct TLS and HTTPS choose it by SNI,
//! STARTTLS by the stream header's `to` (known before the handshake starts). `connector` is
//! the other side: TLS to other servers. `s2s` holds what server-to-server federation needs on
//! both sides: the trust in other servers' certificates, the acceptors that ask a connecting
//! server for its certificate, and the connector that presents ours.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tracing::info;

use crate::config::Config;

pub mod check;
pub mod connector;
pub mod handshake_capture;
pub mod lean_stream;
pub mod resumption;
pub mod s2s;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: String },
    #[error("{path} holds no PEM private key")]
    NoKey { path: String },
    #[error("the certificate or key of {domain} is unusable: {source}")]
    Unusable {
        domain: String,
        source: rustls::Error,
    },
    #[error("{path} holds a certificate that cannot be a trust root: {source}")]
    Root { path: String, source: rustls::Error },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
}

/// One hosted domain's certificate chain and key, as read from its files.
pub struct DomainCert {
    pub domain: String,
    /// Its MUC service, which has no certificate of its own.
    pub muc_domain: Option<String>,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// What every TLS listener needs: acceptors, and which certificate each name is served.
pub struct TlsContext {
    /// Swapped whole by `reload`: a handshake reads the set once, so it never mixes old and
    /// new certificates, and connections already up keep what they were served.
    certs: Arc<ArcSwap<Certificates>>,
    /// For XEP-0368 direct TLS: ALPN `xmpp-client`, certificate by SNI, for
    /// `lean_stream::LeanTlsStream::accept`.
    pub direct: Arc<ServerConfig>,
    /// For HTTPS: ALPN `http/1.1` (WebSocket upgrades need HTTP/1.1), certificate by SNI.
    pub https: TlsAcceptor,
    /// For XEP-0368 direct TLS from other servers: ALPN `xmpp-server`, certificate by SNI, and
    /// the connecting server's certificate asked for but not required (see `s2s`).
    pub s2s_direct: TlsAcceptor,
}

impl TlsContext {
    /// Every hosted domain's certificate, generated first where missing and allowed.
    pub fn load(config: &Config) -> Result<TlsContext, TlsError> {
        let (main, others) = read_domain_certs(config)?;
        Self::from_parts(main, others)
    }

    /// Reads every hosted domain's certificate again (generating missing ones as at start)
    /// and serves them to new handshakes from now on: c2s (STARTTLS, direct TLS), HTTPS and
    /// s2s both ways. Connections already up keep theirs. On an error nothing changes.
    pub fn reload(&self, config: &Config) -> Result<(), TlsError> {
        let (main, others) = read_domain_certs(config)?;
        let certs = Certificates::new(main, others)?;
        self.certs.store(Arc::new(certs));
        info!("certificates reloaded");
        Ok(())
    }

    /// `main` is served when no SNI or `to` names one of `others` (or their services).
    pub fn from_parts(main: DomainCert, others: Vec<DomainCert>) -> Result<TlsContext, TlsError> {
        let certs = Arc::new(ArcSwap::from_pointee(Certificates::new(main, others)?));
        let by_sni = || Arc::new(BySni(certs.clone())) as Arc<dyn ResolvesServerCert>;
        // c2s runs on `lean_stream`, which learns `tls-exporter` and the certificate it was
        // served while the handshake runs.
        let recorded = Arc::new(handshake_capture::RecordServed(BySni(certs.clone())));
        let mut direct = server_config(recorded, vec![b"xmpp-client".to_vec()])?;
        direct.key_log = Arc::new(handshake_capture::ExporterSecretLog);
        let https = server_config(by_sni(), vec![b"http/1.1".to_vec()])?;
        let s2s_direct = s2s::server_config(by_sni(), vec![s2s::ALPN.to_vec()])?;
        Ok(TlsContext {
            direct: Arc::new(direct),
            https: TlsAcceptor::from(Arc::new(https)),
            s2s_direct: TlsAcceptor::from(Arc::new(s2s_direct)),
            certs,
        })
    }

    /// For STARTTLS on a stream to `domain`: a configuration that serves `domain`'s
    /// certificate (the main domain's if it is not hosted) whatever SNI the client sends, for
    /// `lean_stream::LeanTlsStream::accept`, and that certificate.
    pub fn starttls(&self, domain: &str) -> (Arc<ServerConfig>, Arc<CertifiedKey>) {
        let certs = self.certs.load();
        let host = certs.select(Some(domain));
        (host.starttls.clone(), host.key.clone())
    }

    /// For STARTTLS on a stream from another server to `domain`: as `starttls`, and the
    /// connecting server's certificate is asked for but not required. Whether it is valid for
    /// the domain its stream claims is `s2s::PeerTrust::verify`'s to say, after the handshake.
    pub fn s2s_starttls(&self, domain: &str) -> TlsAcceptor {
        TlsAcceptor::from(self.certs.load().select(Some(domain)).s2s_starttls.clone())
    }

    /// The certificate a handshake for `name` is served: `name` is the SNI on direct TLS and
    /// HTTPS, the stream's `to` on STARTTLS. Its leaf is what tls-server-end-point hashes.
    pub fn certificate(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        self.certs.load().select(name).key.clone()
    }

    /// DER of the leaf certificate served for `name` (see `certificate`).
    pub fn leaf_der(&self, name: Option<&str>) -> Vec<u8> {
        leaf_der(&self.certificate(name)).to_vec()
    }
}

/// The main domain's and the other hosted domains' certificates, read from their files
/// (generated first where missing and allowed).
fn read_domain_certs(config: &Config) -> Result<(DomainCert, Vec<DomainCert>), TlsError> {
    let mut hosts = Vec::new();
    for host in config.hosted_domains() {
        let tls = &host.tls;
        if tls.generate_self_signed && !(tls.cert.exists() && tls.key.exists()) {
            generate_self_signed(
                &tls.cert,
                &tls.key,
                &host.domain,
                host.muc_domain.as_deref(),
            )?;
        }
        hosts.push(DomainCert {
            chain: read_certs(&tls.cert)?,
            key: read_key(&tls.key)?,
            domain: host.domain,
            muc_domain: host.muc_domain,
        });
    }
    let mut hosts = hosts.into_iter();
    let Some(main) = hosts.next() else {
        // hosted_domains() always yields the main domain; nothing to serve without it.
        return Err(TlsError::NoCertificate {
            path: config.tls.cert.display().to_string(),
        });
    };
    Ok((main, hosts.collect()))
}

impl Certificates {
    fn new(main: DomainCert, others: Vec<DomainCert>) -> Result<Certificates, TlsError> {
        let provider = provider();
        let main = Host::new(main, &provider)?;
        let others = others
            .into_iter()
            .map(|host| Host::new(host, &provider))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Certificates { main, others })
    }
}

/// DER of the end-entity certificate of a chain (empty if the chain is, which `Host::new`
/// refuses).
pub fn leaf_der(key: &CertifiedKey) -> &[u8] {
    key.cert.first().map(|c| c.as_ref()).unwrap_or_default()
}

/// One hosted domain: the names it answers to, in the form SNI carries them, and its
/// certificate.
#[derive(Debug)]
struct Host {
    domain: String,
    muc_domain: Option<String>,
    key: Arc<CertifiedKey>,
    /// STARTTLS serves this domain's certificate regardless of SNI: the `to` chose it. A
    /// configuration of its own also keeps its session cache to itself, so a session resumed
    /// there was made with this certificate (rustls checks SNI on resumption, which does not
    /// decide here).
    starttls: Arc<ServerConfig>,
    /// The same for streams from other servers, which are asked for a certificate.
    s2s_starttls: Arc<ServerConfig>,
    /// Connections to other servers as this domain, presenting its certificate.
    s2s_client: s2s::ClientConfigs,
}

impl Host {
    fn new(cert: DomainCert, provider: &Arc<CryptoProvider>) -> Result<Host, TlsError> {
        let unusable = |source| TlsError::Unusable {
            domain: cert.domain.clone(),
            source,
        };
        let key = CertifiedKey::from_der(cert.chain, cert.key, provider).map_err(unusable)?;
        key.end_entity_cert().map_err(unusable)?;
        let key = Arc::new(key);
        let mut starttls = server_config(Arc::new(Fixed(key.clone())), vec![])?;
        // c2s STARTTLS runs on `lean_stream`, which learns `tls-exporter` through the key log.
        starttls.key_log = Arc::new(handshake_capture::ExporterSecretLog);
        let s2s_starttls = s2s::server_config(Arc::new(Fixed(key.clone())), vec![])?;
        let s2s_client = s2s::ClientConfigs::new(&key)?;
        Ok(Host {
            domain: sni_form(&cert.domain).unwrap_or(cert.domain),
            muc_domain: cert.muc_domain.map(|muc| sni_form(&muc).unwrap_or(muc)),
            key,
            starttls: Arc::new(starttls),
            s2s_starttls: Arc::new(s2s_starttls),
            s2s_client,
        })
    }

    fn answers_to(&self, name: &str) -> bool {
        self.domain == name || self.muc_domain.as_deref() == Some(name)
    }

    /// A name under this domain (`conference.`, `upload.`, any other service).
    fn is_parent_of(&self, name: &str) -> bool {
        name.strip_suffix(self.domain.as_str())
            .is_some_and(|label| label.len() > 1 && label.ends_with('.'))
    }
}

/// Every hosted domain's certificate, the main domain's apart: it is the fallback.
#[derive(Debug)]
struct Certificates {
    main: Host,
    others: Vec<Host>,
}

impl Certificates {
    /// Which domain's certificate a handshake for `name` gets (SNI, or STARTTLS's `to`): the
    /// domain or MUC service named exactly, else the closest hosted domain the name is under,
    /// else the main domain. The resolver and the channel binding both ask this, so the
    /// binding always hashes the certificate that was served.
    fn select(&self, name: Option<&str>) -> &Host {
        let Some(name) = name.and_then(sni_form) else {
            return &self.main;
        };
        let hosts = || std::iter::once(&self.main).chain(&self.others);
        if let Some(host) = hosts().find(|host| host.answers_to(&name)) {
            return host;
        }
        hosts()
            .filter(|host| host.is_parent_of(&name))
            .max_by_key(|host| host.domain.len())
            .unwrap_or(&self.main)
    }
}

/// A name as SNI carries it: ASCII (A-labels), lower case, no trailing dot. Config domains are
/// written with U-labels and a stream's `to` may be either, so both sides are compared in
/// this form. `None` for what is no domain name at all.
fn sni_form(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    idna::domain_to_ascii(name)
        .ok()
        .filter(|ascii| !ascii.is_empty())
}

/// Direct TLS and HTTPS: the certificate by SNI.
#[derive(Debug)]
struct BySni(Arc<ArcSwap<Certificates>>);

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load().select(hello.server_name()).key.clone())
    }
}

/// STARTTLS: the certificate the stream's `to` chose.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    alpn: Vec<Vec<u8>>,
) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = alpn;
    resumption::enable(&mut config)?;
    Ok(config)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .ok()
        .flatten()
        .ok_or_else(|| TlsError::NoKey {
            path: path.display().to_string(),
        })
}

/// Writes a self-signed certificate (ECDSA P-256) for the domain, its MUC service and its usual
/// service names.
pub fn generate_self_signed(
    cert_path: &Path,
    key_path: &Path,
    domain: &str,
    muc_domain: Option<&str>,
) -> Result<(), TlsError> {
    let mut names = Vec::new();
    let candidates = [
        Some(domain.to_string()),
        muc_domain.map(str::to_owned),
        Some(format!("conference.{domain}")),
        Some(format!("upload.{domain}")),
    ];
    for name in candidates.into_iter().flatten() {
        // Certificates hold A-labels (a dNSName is IA5String); config domains are U-labels.
        let name = sni_form(&name).unwrap_or(name);
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let certified = rcgen::generate_simple_self_signed(names)?;
    for (path, contents) in [
        (cert_path, certified.cert.pem()),
        (key_path, certified.key_pair.serialize_pem()),
    ] {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| TlsError::Write {
                path: parent.display().to_string(),
                source,
            })?;
        }
        std::fs::write(path, contents).map_err(|source| TlsError::Write {
            path: path.display().to_string(),
            source,
        })?;
    }
    restrict_key_permissions(key_path);
    info!(cert = %cert_path.display(), "generated a self-signed certificate for {domain}");
    Ok(())
}

#[cfg(unix)]
fn restrict_key_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

#[cfg(not(unix))]
fn restrict_key_permissions(_path: &Path) {}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A self-signed certificate made in memory.
    pub(crate) fn domain_cert(domain: &str, muc_domain: Option<&str>) -> DomainCert {
        let san = sni_form(domain).expect("a domain name");
        let certified = rcgen::generate_simple_self_signed(vec![san]).expect("generate");
        DomainCert {
            domain: domain.to_owned(),
            muc_domain: muc_domain.map(str::to_owned),
            chain: vec![certified.cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into()),
        }
    }

    /// A context for `domains` (the first is the main one), each with its own certificate.
    pub(crate) fn context(domains: &[(&str, Option<&str>)]) -> TlsContext {
        let mut certs = domains.iter().map(|(d, muc)| domain_cert(d, *muc));
        let main = certs.next().expect("a main domain");
        TlsContext::from_parts(main, certs.collect()).expect("context")
    }

    #[test]
    fn each_name_gets_its_domains_certificate() {
        let tls = context(&[
            ("localhost", Some("conference.localhost")),
            ("b.example", Some("rooms.elsewhere.org")),
            ("sub.b.example", None),
            ("bücher.example", None),
        ]);
        let main = tls.leaf_der(Some("localhost")).to_vec();
        let b = tls.leaf_der(Some("b.example")).to_vec();
        let sub = tls.leaf_der(Some("sub.b.example")).to_vec();
        let idn = tls.leaf_der(Some("bücher.example")).to_vec();
        assert_eq!(
            [&main, &b, &sub, &idn]
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len(),
            4,
            "four certificates"
        );
        let cases: &[(Option<&str>, &Vec<u8>)] = &[
            (None, &main),
            (Some(""), &main),
            (Some("conference.localhost"), &main),
            (Some("unknown.org"), &main),
            (Some("xb.example"), &main),
            (Some("example"), &main),
            (Some("b.example"), &b),
            (Some("B.Example."), &b),
            (Some("conference.b.example"), &b),
            (Some("upload.b.example"), &b),
            (Some("rooms.elsewhere.org"), &b),
            (Some("sub.b.example"), &sub),
            (Some("conference.sub.b.example"), &sub),
            // SNI carries A-labels; a stream's `to` may carry either.
            (Some("xn--bcher-kva.example"), &idn),
            (Some("conference.xn--bcher-kva.example"), &idn),
            (Some("upload.bücher.example"), &idn),
        ];
        for (name, expected) in cases {
            assert_eq!(tls.leaf_der(*name), expected.as_slice(), "{name:?}");
            let (_, served) = tls.starttls(name.unwrap_or_default());
            assert_eq!(leaf_der(&served), expected.as_slice(), "STARTTLS {name:?}");
        }
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let mut b = domain_cert("b.example", None);
        b.key = domain_cert("other.example", None).key;
        let refused = TlsContext::from_parts(domain_cert("localhost", None), vec![b]);
        assert!(
            matches!(refused, Err(TlsError::Unusable { ref domain, .. }) if domain == "b.example"),
            "{:?}",
            refused.err()
        );
    }

    #[test]
    fn generated_certificates_name_the_domain_and_its_services() {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = (dir.path().join("b.crt"), dir.path().join("b.key"));
        generate_self_signed(&cert, &key, "bücher.example", Some("rooms.elsewhere.org"))
            .expect("generate");
        let der = read_certs(&cert).expect("cert").remove(0);
        let (_, parsed) =
            x509_parser::parse_x509_certificate(der.as_ref()).expect("parses as X.509");
        let names: Vec<String> = parsed
            .subject_alternative_name()
            .expect("extension")
            .expect("SANs")
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.to_string()),
                _ => None,
            })
            .collect();
        for expected in [
            "xn--bcher-kva.example",
            "rooms.elsewhere.org",
            "conference.xn--bcher-kva.example",
            "upload.xn--bcher-kva.example",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} in {names:?}"
            );
        }
        read_key(&key).expect("key");
    }
}
