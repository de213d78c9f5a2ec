//! What a SASL exchange needs from the stream it runs on. A client stream implements it for
//! the password and token mechanisms; a server-to-server stream can implement it too and run
//! its SASL EXTERNAL through the same exchange code (`super::auth`).

use std::future::Future;
use std::sync::Arc;

use minidom::Element;
use rustls::pki_types::CertificateDer;

use super::context::StreamContext;
use super::end::End;
use super::throttle::Attempt;
use super::transport::Incoming;
use crate::sasl::{ChannelBindings, Mechanism};

pub trait SaslStream: Send {
    /// What the exchange looks credentials up in (storage, through the router) and is
    /// configured by.
    fn context(&self) -> &Arc<StreamContext>;

    /// The hosted domain this stream is for: accounts are looked up under it.
    fn domain(&self) -> &str;

    fn is_secure(&self) -> bool;

    /// What the TLS layer offers for the `-PLUS` mechanisms (none without TLS).
    fn channel_bindings(&self) -> ChannelBindings;

    /// The certificate chain the peer presented in the TLS handshake, end entity first:
    /// what SASL EXTERNAL authenticates with. None without TLS or without a certificate.
    fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]>;

    /// The mechanisms this stream offers now (policy differs between client and server
    /// streams, and with encryption).
    fn offered_mechanisms(&self) -> Vec<Mechanism>;

    /// Starts an exchange that the throttle counts and paces: every failure is accounted for
    /// against the peer's address and the account. None when the throttle refuses it, to be
    /// answered `<temporary-auth-failure/>` at once.
    fn admit(&self) -> Option<Attempt>;

    /// Sends one element and flushes.
    fn send_element(&mut self, el: &Element) -> impl Future<Output = Result<(), End>> + Send;

    /// The peer's next frame, read like every other frame of the stream (paced, counted).
    fn read_frame(&mut self) -> impl Future<Output = Result<Incoming, End>> + Send;

    /// The account `username` names on this stream's domain: its bare JID as text, which is
    /// also how storage keys it.
    fn account(&self, username: &str) -> String {
        format!("{username}@{}", self.domain())
    }
}
