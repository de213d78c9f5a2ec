//! Outbound TLS: the client side of a handshake with another server, on a TCP connection
//! opened here (direct TLS, XEP-0368) or on one already open whose peer has just answered
//! `<proceed/>` (STARTTLS, RFC 6120 §5.4). The peer's certificate chain stays available after
//! the handshake, for SASL EXTERNAL and for knowing who answered.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{provider, read_certs, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("'{0}' is not a server name TLS can verify")]
    InvalidName(String),
    /// The peer's certificate (or the rest of its handshake) was not acceptable for `name`:
    /// rustls says why (not valid for the name, unknown issuer, expired...).
    #[error("TLS handshake with {name} refused: {source}")]
    Refused { name: String, source: rustls::Error },
    #[error("TLS handshake with {name} failed: {source}")]
    Handshake { name: String, source: io::Error },
}

/// What outbound TLS trusts: the system's trust store, the Mozilla roots (built in, so that a
/// host without a store still verifies public certificates), and the certificates of
/// `extra_ca` (a PEM file, for a private CA or a peer's self-signed certificate) when given.
pub fn roots(extra_ca: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let system = rustls_native_certs::load_native_certs();
    for error in &system.errors {
        // A store that cannot be read leaves the built-in roots; it is not fatal.
        tracing::debug!(%error, "system trust store");
    }
    let (added, unusable) = roots.add_parsable_certificates(system.certs);
    tracing::debug!(added, unusable, "system trust roots");
    if let Some(path) = extra_ca {
        for cert in read_certs(path)? {
            roots.add(cert).map_err(|source| TlsError::Root {
                path: path.display().to_string(),
                source,
            })?;
        }
    }
    Ok(roots)
}

/// Opens TLS connections to other servers, verifying their certificates against `roots`.
#[derive(Clone)]
pub struct TlsConnector {
    inner: tokio_rustls::TlsConnector,
}

impl TlsConnector {
    /// `alpn`: the protocols to offer (XEP-0368 direct TLS to a server offers `xmpp-server`;
    /// STARTTLS needs none).
    pub fn new(roots: RootCertStore, alpn: Vec<Vec<u8>>) -> Result<TlsConnector, TlsError> {
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn;
        Ok(TlsConnector {
            inner: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// Direct TLS: connects to `addr` and runs the handshake for `server_name`, the domain
    /// whose certificate the peer must present.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<OutboundTls, ConnectError> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| ConnectError::Connect { addr, source })?;
        let _ = tcp.set_nodelay(true);
        self.starttls(tcp, server_name).await
    }

    /// STARTTLS: the handshake for `server_name` on a connection whose peer has just sent
    /// `<proceed/>`. Nothing read before it may be kept: the caller starts a new stream.
    pub async fn starttls(
        &self,
        tcp: TcpStream,
        server_name: &str,
    ) -> Result<OutboundTls, ConnectError> {
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| ConnectError::InvalidName(server_name.to_owned()))?;
        let stream = self
            .inner
            .connect(name, tcp)
            .await
            .map_err(|e| handshake_error(server_name, e))?;
        Ok(OutboundTls { stream })
    }
}

/// rustls reports a refused certificate inside an `io::Error`: brought out, it says what
/// was wrong rather than "invalid data".
pub(super) fn handshake_error(name: &str, e: io::Error) -> ConnectError {
    let refused = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .cloned();
    match refused {
        Some(source) => ConnectError::Refused {
            name: name.to_owned(),
            source,
        },
        None => ConnectError::Handshake {
            name: name.to_owned(),
            source: e,
        },
    }
}

/// An established outbound TLS connection.
pub struct OutboundTls {
    stream: TlsStream<TcpStream>,
}

impl OutboundTls {
    /// The chain the peer presented, end entity first (verified for the server name).
    pub fn peer_certificates(&self) -> &[CertificateDer<'static>] {
        self.stream
            .get_ref()
            .1
            .peer_certificates()
            .unwrap_or_default()
    }

    /// The protocol ALPN agreed on, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.stream.get_ref().1.alpn_protocol()
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream.get_ref().0.peer_addr()
    }
}

impl AsyncRead for OutboundTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for OutboundTls {
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
    fn the_built_in_roots_are_there_and_an_extra_ca_file_adds_to_them() {
        let built_in = roots(None).expect("roots").len();
        assert!(built_in > 50, "{built_in} roots");
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = (dir.path().join("ca.crt"), dir.path().join("ca.key"));
        super::super::generate_self_signed(&cert, &key, "peer.example", None).expect("generate");
        assert_eq!(roots(Some(&cert)).expect("roots").len(), built_in + 1);
        assert!(matches!(
            roots(Some(&dir.path().join("missing.crt"))),
            Err(TlsError::Read { .. })
        ));
    }
}
