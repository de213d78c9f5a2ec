//! The server certificate: loaded from PEM files, or generated self-signed for the domain on
//! first start (the embedded default), and the rustls configurations built from it.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tracing::info;

use crate::config::TlsConfig;

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
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
}

/// What every TLS listener needs: acceptors and the certificate (for tls-server-end-point).
pub struct TlsContext {
    /// For STARTTLS on 5222: no ALPN, clients do not send it there.
    pub starttls: TlsAcceptor,
    /// For XEP-0368 direct TLS: ALPN `xmpp-client`.
    pub direct: TlsAcceptor,
    /// For HTTPS: ALPN `http/1.1` (WebSocket upgrades need HTTP/1.1).
    pub https: TlsAcceptor,
    /// DER of the leaf certificate.
    pub leaf_der: Vec<u8>,
}

impl TlsContext {
    pub fn load_or_generate(config: &TlsConfig, domain: &str) -> Result<TlsContext, TlsError> {
        if config.generate_self_signed && !(config.cert.exists() && config.key.exists()) {
            generate_self_signed(&config.cert, &config.key, domain)?;
        }
        let certs = read_certs(&config.cert)?;
        let key = read_key(&config.key)?;
        Self::from_parts(certs, key)
    }

    pub fn from_parts(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<TlsContext, TlsError> {
        let leaf_der = certs.first().map(|c| c.to_vec()).unwrap_or_default();
        let starttls = server_config(certs.clone(), key.clone_key(), vec![])?;
        let direct = server_config(
            certs.clone(),
            key.clone_key(),
            vec![b"xmpp-client".to_vec()],
        )?;
        let https = server_config(certs, key, vec![b"http/1.1".to_vec()])?;
        Ok(TlsContext {
            starttls: TlsAcceptor::from(Arc::new(starttls)),
            direct: TlsAcceptor::from(Arc::new(direct)),
            https: TlsAcceptor::from(Arc::new(https)),
            leaf_der,
        })
    }
}

fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: Vec<Vec<u8>>,
) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = alpn;
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

/// Writes a self-signed certificate (ECDSA P-256) for the domain and its usual service names.
pub fn generate_self_signed(
    cert_path: &Path,
    key_path: &Path,
    domain: &str,
) -> Result<(), TlsError> {
    let names = vec![
        domain.to_string(),
        format!("conference.{domain}"),
        format!("upload.{domain}"),
    ];
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
