//! TLS between servers (RFC 6120 §13, XEP-0178, XEP-0368), both directions.
//!
//! A server authenticates with its certificate only after TLS: SASL EXTERNAL (XEP-0178) on
//! the stream that follows, against the domain the stream claims, which the handshake does not
//! know yet. A certificate that does not verify must not end the connection either: the peer
//! may still prove its domain with dialback (XEP-0220). So neither side refuses a certificate
//! during the handshake. It only checks that the peer holds the key of the certificate it
//! presented (the handshake signature), and `PeerTrust::verify` says afterwards whether the
//! chain is valid for a domain:
//!
//! - inbound, `TlsContext::s2s_direct` and `TlsContext::s2s_starttls` ask the connecting server
//!   for a certificate without requiring one; the chain is `peer_chain(&stream)`, to be checked
//!   against the stream's `from`;
//! - outbound, `S2sConnector` presents the local domain's certificate as its client certificate
//!   and gives an `S2sTls` whose `verified()` holds the check for the remote domain.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{
    verify_server_cert_signed_by_trust_anchor, verify_server_name, ResolvesClientCert,
};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore,
    ServerConfig, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::connector::{handshake_error, roots, ConnectError};
use super::{provider, sni_form, Certificates, TlsContext, TlsError};

/// The ALPN protocol of XEP-0368 direct TLS between servers.
pub const ALPN: &[u8] = b"xmpp-server";

/// Why a peer's certificate does not authenticate it for a domain.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PeerCertError {
    /// The peer presented no certificate (an inbound peer may leave it out: it was optional).
    #[error("no certificate was presented")]
    NoCertificate,
    /// The domain is no DNS name (an IP literal, or not a name at all): a certificate names
    /// domains in dNSName entries only, so nothing could match it.
    #[error("'{0}' is not a domain name a certificate can be checked for")]
    InvalidName(String),
    /// The chain does not verify for the domain; rustls (webpki) says why: unknown issuer,
    /// expired, not valid for the name, wrong purpose...
    #[error("certificate not valid: {0}")]
    Invalid(String),
}

/// Trust in other servers' certificates: the system store, the Mozilla roots and a configured CA file. Cheap to
/// clone (shared).
#[derive(Clone)]
pub struct PeerTrust {
    inner: Arc<Trust>,
}

impl std::fmt::Debug for PeerTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTrust")
            .field("roots", &self.inner.roots.len())
            .finish_non_exhaustive()
    }
}

struct Trust {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
    /// The chain check with the clientAuth purpose, for certificates that only have that one.
    client_auth: Arc<dyn ClientCertVerifier>,
}

impl PeerTrust {
    /// The system store and the Mozilla roots (as `connector::roots` has them) plus the PEM `extra_ca` if given
    /// (a private CA, or a peer's self-signed certificate trusted as it is).
    pub fn new(extra_ca: Option<&Path>) -> Result<PeerTrust, TlsError> {
        Self::with_roots(roots(extra_ca)?)
    }

    /// Trusts `roots` and nothing else.
    pub fn with_roots(roots: RootCertStore) -> Result<PeerTrust, TlsError> {
        let provider = provider();
        let roots = Arc::new(roots);
        let client_auth =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                // Only an empty root store is refused here (no CRLs are given).
                .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
        Ok(PeerTrust {
            inner: Arc::new(Trust {
                roots,
                algorithms: provider.signature_verification_algorithms,
                client_auth,
            }),
        })
    }

    /// Whether `chain` (end entity first, as rustls gives it) is a currently valid certificate
    /// for `domain`: it chains to a trusted root through the certificates that follow it, is
    /// within its validity period (and so is every certificate above it), and names `domain`
    /// in a subjectAltName dNSName, compared in A-label form; a wildcard matches one whole
    /// left-most label (`*.a.test` is valid for `x.a.test`, not for `a.test` nor `x.y.a.test`),
    /// as RFC 6125 §6.4.3 and RFC 9525 allow. The subject's CN is never looked at: RFC 9525
    /// removed that fallback. There is no revocation check (no CRLs or OCSP are fetched).
    ///
    /// Extended key usage: a certificate without the extension is good for any purpose, and
    /// one with it must list serverAuth or clientAuth. Servers present their server
    /// certificate in both directions (Let's Encrypt no longer issues clientAuth), and one made
    /// for clientAuth alone is still a certificate for the domain; any other purpose alone
    /// (e-mail protection, code signing) is refused. So one check serves for a peer that
    /// connected to us and for one we connected to.
    pub fn verify(&self, chain: &[CertificateDer<'_>], domain: &str) -> Result<(), PeerCertError> {
        let Some((end_entity, intermediates)) = chain.split_first() else {
            return Err(PeerCertError::NoCertificate);
        };
        let name = dns_name(domain).ok_or_else(|| PeerCertError::InvalidName(domain.to_owned()))?;
        let cert = ParsedCertificate::try_from(end_entity).map_err(invalid)?;
        let now = UnixTime::now();
        let trust = &self.inner;
        match verify_server_cert_signed_by_trust_anchor(
            &cert,
            &trust.roots,
            intermediates,
            now,
            trust.algorithms.all,
        ) {
            Ok(()) => {}
            // Only the purpose was wrong: the same chain, checked for clientAuth instead.
            Err(
                e @ rustls::Error::InvalidCertificate(
                    CertificateError::InvalidPurpose
                    | CertificateError::InvalidPurposeContext { .. },
                ),
            ) => {
                trust
                    .client_auth
                    .verify_client_cert(end_entity, intermediates, now)
                    // Its error would only repeat that clientAuth is missing too; rustls's
                    // first one lists what the certificate is for.
                    .map_err(|_| {
                        PeerCertError::Invalid(format!(
                            "extended key usage allows neither server nor client \
                             authentication ({})",
                            reason(e)
                        ))
                    })?;
            }
            Err(e) => return Err(invalid(e)),
        }
        verify_server_name(&cert, &name).map_err(invalid)
    }
}

/// rustls's reason, without its "invalid peer certificate" prefix where it has one (the error
/// says so already).
fn invalid(e: rustls::Error) -> PeerCertError {
    PeerCertError::Invalid(reason(e))
}

fn reason(e: rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(reason) => reason.to_string(),
        other => other.to_string(),
    }
}

/// `domain` as a certificate names it and SNI carries it: A-labels, lower case, no trailing
/// dot. `None` for an IP literal or what is no domain name.
fn dns_name(domain: &str) -> Option<ServerName<'static>> {
    match ServerName::try_from(sni_form(domain)?) {
        Ok(name @ ServerName::DnsName(_)) => Some(name),
        _ => None,
    }
}

/// The certificate chain a server that connected to us presented, end entity first; empty
/// if it sent none. Check it with `PeerTrust::verify` against the stream's `from`.
pub fn peer_chain<IO>(stream: &tokio_rustls::server::TlsStream<IO>) -> &[CertificateDer<'static>] {
    stream.get_ref().1.peer_certificates().unwrap_or_default()
}

/// The acceptor configuration for streams from other servers: as `super::server_config`, and
/// the client's certificate asked for.
pub(super) fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    alpn: Vec<Vec<u8>>,
) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let verifier = Arc::new(OptionalClientCert {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    config.alpn_protocols = alpn;
    Ok(config)
}

/// Asks a connecting server for its certificate, takes it (or its absence) whatever the chain,
/// and checks only that the peer signed the handshake with that certificate's key: the chain
/// is judged later, for the domain the stream claims, and a peer it fails may still use
/// dialback.
#[derive(Debug)]
struct OptionalClientCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for OptionalClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    /// No CA names: the Mozilla set would make a large CertificateRequest, and an empty list
    /// lets the peer send whichever certificate it has for its domain.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The outbound counterpart: any server certificate completes the handshake (with the
/// signature checked); `S2sTls::verified` holds the verdict on the chain.
#[derive(Debug)]
struct AnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Presents a hosted domain's certificate whenever a server asks for one, whatever CAs it
/// names: the domain has this one certificate, and a peer that does not trust it can still
/// fall back to dialback, which it could not if we sent none.
#[derive(Debug)]
struct OwnCertificate(Arc<CertifiedKey>);

impl ResolvesClientCert for OwnCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// One hosted domain's outbound configurations, direct TLS and STARTTLS. Each domain has its
/// own, so its own session cache: a session resumed to a peer was made with the same client
/// certificate, and the peer does not see a different domain's identity in it.
#[derive(Debug)]
pub(super) struct ClientConfigs {
    direct: Arc<ClientConfig>,
    starttls: Arc<ClientConfig>,
}

impl ClientConfigs {
    pub(super) fn new(key: &Arc<CertifiedKey>) -> Result<ClientConfigs, TlsError> {
        let config = |alpn: Vec<Vec<u8>>| -> Result<Arc<ClientConfig>, TlsError> {
            let provider = provider();
            let verifier = Arc::new(AnyServerCert {
                algorithms: provider.signature_verification_algorithms,
            });
            let mut config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_client_cert_resolver(Arc::new(OwnCertificate(key.clone())));
            config.alpn_protocols = alpn;
            Ok(Arc::new(config))
        };
        Ok(ClientConfigs {
            direct: config(vec![ALPN.to_vec()])?,
            starttls: config(vec![])?,
        })
    }
}

/// Opens TLS to other servers as one of the hosted domains. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct S2sConnector {
    certs: Arc<arc_swap::ArcSwap<Certificates>>,
    trust: PeerTrust,
}

impl S2sConnector {
    /// Presents the certificates of `tls`'s hosted domains, judges peers' with `trust`.
    pub fn new(tls: &TlsContext, trust: PeerTrust) -> S2sConnector {
        S2sConnector {
            certs: tls.certs.clone(),
            trust,
        }
    }

    pub fn trust(&self) -> &PeerTrust {
        &self.trust
    }

    /// XEP-0368 direct TLS: connects to `addr` and runs the handshake with SNI
    /// `remote_domain` and ALPN `xmpp-server`, presenting `local_domain`'s certificate.
    ///
    /// `local_domain`'s certificate is chosen as `TlsContext::certificate` chooses the one it
    /// serves: a service such as `conference.a.test` presents `a.test`'s, and an unhosted name
    /// the main domain's. The handshake completes whatever the server's certificate; see
    /// `S2sTls::verified`. No timeout: the caller bounds the whole negotiation.
    pub async fn connect_direct(
        &self,
        addr: SocketAddr,
        local_domain: &str,
        remote_domain: &str,
    ) -> Result<S2sTls, ConnectError> {
        // A name that cannot be sent fails before a connection is opened for nothing.
        let name = server_name(remote_domain)?;
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| ConnectError::Connect { addr, source })?;
        let _ = tcp.set_nodelay(true);
        let config = self
            .certs
            .load()
            .select(Some(local_domain))
            .s2s_client
            .direct
            .clone();
        self.handshake(&config, tcp, name, remote_domain).await
    }

    /// STARTTLS: the handshake on a connection whose peer has just sent `<proceed/>`, with
    /// SNI `remote_domain`, presenting `local_domain`'s certificate (chosen as for
    /// `connect_direct`). Nothing read before it may be kept: the caller starts a new stream.
    pub async fn starttls(
        &self,
        tcp: TcpStream,
        local_domain: &str,
        remote_domain: &str,
    ) -> Result<S2sTls, ConnectError> {
        let name = server_name(remote_domain)?;
        let config = self
            .certs
            .load()
            .select(Some(local_domain))
            .s2s_client
            .starttls
            .clone();
        self.handshake(&config, tcp, name, remote_domain).await
    }

    /// The handshake, and the verdict on the server's chain for `remote_domain`.
    async fn handshake(
        &self,
        config: &Arc<ClientConfig>,
        tcp: TcpStream,
        name: ServerName<'static>,
        remote_domain: &str,
    ) -> Result<S2sTls, ConnectError> {
        let stream = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| handshake_error(remote_domain, e))?;
        let chain = stream.get_ref().1.peer_certificates().unwrap_or_default();
        let verified = self.trust.verify(chain, remote_domain);
        Ok(S2sTls { stream, verified })
    }
}

fn server_name(remote_domain: &str) -> Result<ServerName<'static>, ConnectError> {
    dns_name(remote_domain).ok_or_else(|| ConnectError::InvalidName(remote_domain.to_owned()))
}

/// An established outbound TLS connection to another server, with the verdict on its
/// certificate for the domain it was opened to.
pub struct S2sTls {
    stream: TlsStream<TcpStream>,
    verified: Result<(), PeerCertError>,
}

impl S2sTls {
    /// The chain the peer presented, end entity first (not necessarily valid: see `verified`).
    pub fn peer_certificates(&self) -> &[CertificateDer<'static>] {
        self.stream
            .get_ref()
            .1
            .peer_certificates()
            .unwrap_or_default()
    }

    /// `PeerTrust::verify` of the peer's chain for the remote domain: Ok, the peer is
    /// authenticated as that domain; Err, dialback or refusal is the caller's choice. Whether
    /// the peer accepted our certificate shows only in SASL EXTERNAL.
    pub fn verified(&self) -> &Result<(), PeerCertError> {
        &self.verified
    }

    /// The protocol ALPN agreed on, if any (`xmpp-server` on direct TLS).
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.stream.get_ref().1.alpn_protocol()
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream.get_ref().0.peer_addr()
    }
}

impl std::fmt::Debug for S2sTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S2sTls")
            .field("peer_addr", &self.peer_addr().ok())
            .field("alpn", &self.alpn_protocol().map(String::from_utf8_lossy))
            .field("verified", &self.verified)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for S2sTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for S2sTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_checked_in_the_form_certificates_name_them() {
        let name = |domain| dns_name(domain).map(|n| n.to_str().into_owned());
        assert_eq!(name("a.test").as_deref(), Some("a.test"));
        assert_eq!(name("A.Test.").as_deref(), Some("a.test"));
        assert_eq!(name("bücher.test").as_deref(), Some("xn--bcher-kva.test"));
        for not_a_name in ["", "127.0.0.1", "::1", "a..test", "a test"] {
            assert_eq!(name(not_a_name), None, "{not_a_name:?}");
        }
    }

    #[test]
    fn trust_needs_a_root() {
        assert!(PeerTrust::with_roots(RootCertStore::empty()).is_err());
        assert!(PeerTrust::new(None).is_ok());
    }
}
