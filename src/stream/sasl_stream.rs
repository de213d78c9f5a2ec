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

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::config::Config;
    use crate::router::Router;
    use crate::sasl::SaslFailure;
    use crate::storage::Storage;
    use crate::stream::auth::{self, AuthOutcome};
    use crate::stream::detached_cap::DetachedCap;
    use crate::stream::resumption::Resumption;
    use crate::stream::throttle::{AuthThrottle, Limits};

    /// A stream that is not a client stream: scripted frames in, elements out.
    struct Scripted {
        ctx: Arc<StreamContext>,
        incoming: VecDeque<Incoming>,
        sent: Vec<Element>,
    }

    impl SaslStream for Scripted {
        fn context(&self) -> &Arc<StreamContext> {
            &self.ctx
        }
        fn domain(&self) -> &str {
            "localhost"
        }
        fn is_secure(&self) -> bool {
            true
        }
        fn channel_bindings(&self) -> ChannelBindings {
            ChannelBindings::none()
        }
        fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
            None
        }
        fn offered_mechanisms(&self) -> Vec<Mechanism> {
            vec![Mechanism::Plain]
        }
        fn admit(&self) -> Option<Attempt> {
            self.ctx.throttle.admit([192, 0, 2, 1].into()).ok()
        }
        async fn send_element(&mut self, el: &Element) -> Result<(), End> {
            self.sent.push(el.clone());
            Ok(())
        }
        async fn read_frame(&mut self) -> Result<Incoming, End> {
            self.incoming.pop_front().ok_or(End::Disconnected)
        }
    }

    async fn context(dir: &tempfile::TempDir) -> Arc<StreamContext> {
        let mut config = Config::default();
        config.storage.url = format!("sqlite://{}", dir.path().join("t.db").display());
        let config = Arc::new(config);
        let storage = Storage::open_with(&config.storage).await.expect("storage");
        Arc::new(StreamContext {
            router: Router::new(
                config.clone(),
                storage,
                Vec::new(),
                0,
                crate::metrics::Metrics::new().expect("metrics"),
            ),
            tls: None,
            throttle: AuthThrottle::new(Limits::from(&config.auth)),
            resumption: Resumption::default(),
            detached: DetachedCap::new(config.limits.max_detached_sessions_per_account),
            registrations: crate::registration::RegistrationLimiter::new(
                &config.registration_limits,
            ),
            config,
        })
    }

    fn failure_condition(el: &Element) -> Option<String> {
        el.children().next().map(|c| c.name().to_owned())
    }

    #[tokio::test]
    async fn the_exchange_runs_on_any_stream_that_implements_the_trait() {
        let dir = tempfile::tempdir().expect("dir");
        let mut stream = Scripted {
            ctx: context(&dir).await,
            incoming: VecDeque::new(),
            sent: Vec::new(),
        };
        let auth_el = |mechanism: &str| {
            let mut el = Element::bare("auth", crate::xml::ns::SASL);
            crate::stanza::set_attr(&mut el, "mechanism", mechanism);
            el
        };
        let outcome = auth::authenticate(&mut stream, auth_el("SCRAM-SHA-1")).await;
        assert!(matches!(outcome, Ok(AuthOutcome::Failure)));
        assert_eq!(
            failure_condition(&stream.sent[0]).as_deref(),
            Some(SaslFailure::InvalidMechanism.condition())
        );
        // PLAIN without an initial response: an empty challenge, then the response it asked for.
        let response = Element::builder("response", crate::xml::ns::SASL)
            .append(crate::sasl::encode_payload(Some(b"\0nobody\0secret")))
            .build();
        stream.incoming.push_back(Incoming::Element(response));
        let outcome = auth::authenticate(&mut stream, auth_el("PLAIN")).await;
        assert!(matches!(outcome, Ok(AuthOutcome::Failure)));
        assert!(stream.sent[1].is("challenge", crate::xml::ns::SASL));
        assert_eq!(
            failure_condition(&stream.sent[2]).as_deref(),
            Some(SaslFailure::NotAuthorized.condition())
        );
    }
}
