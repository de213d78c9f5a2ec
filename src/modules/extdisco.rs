//! XEP-0215 External Service Discovery: tells local users which STUN/TURN servers to use for
//! Jingle calls, from `[[external_services]]`.
//!
//! Restricted services get coturn's TURN REST credentials (`use-auth-secret`): username
//! `<expiry unix time>:<bare JID>`, password base64(HMAC-SHA1(static-auth-secret, username)).
//! coturn checks them with the shared secret alone, so nothing is stored here and any node of
//! a cluster hands out credentials the TURN server accepts.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use minidom::Element;
use sha1::Sha1;
use tracing::debug;

use crate::config::{Config, ExternalService};
use crate::router::{IqHandler, IqRequest, IqResult, IqType, Module, Registry, Router};
use crate::stanza::{set_attr, StanzaError};

pub const EXTDISCO: &str = "urn:xmpp:extdisco:2";

pub struct ExtDisco {
    services: Vec<ExternalService>,
    /// Whose users may ask: credentials for a TURN relay are not for strangers.
    hosted: HashSet<String>,
}

impl ExtDisco {
    pub fn new(config: &Config) -> ExtDisco {
        ExtDisco {
            services: config.external_services.clone(),
            hosted: config
                .hosted_domains()
                .into_iter()
                .map(|host| host.domain)
                .collect(),
        }
    }
}

impl Module for ExtDisco {
    fn name(&self) -> &'static str {
        "extdisco"
    }

    fn register(self: Arc<Self>, registry: &mut Registry) {
        // With nothing configured there is nothing to discover: advertising the feature
        // would only send clients after an empty list.
        if self.services.is_empty() {
            return;
        }
        registry.server_iq(IqType::Get, EXTDISCO, "services", self.clone());
        registry.server_iq(IqType::Get, EXTDISCO, "credentials", self.clone());
        registry.server_feature(EXTDISCO);
    }
}

/// TURN REST credentials valid until `expiry` for `user` (a bare JID).
pub fn turn_credentials(secret: &str, user: &str, expiry: i64) -> (String, String) {
    let username = format!("{expiry}:{user}");
    let mut mac = match Hmac::<Sha1>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        // HMAC takes keys of any length; this arm is never taken.
        Err(_) => return (username, String::new()),
    };
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, password)
}

/// The `<service/>` element for `service`, with credentials for `user` when it is restricted.
fn service_element(service: &ExternalService, user: &str, now: DateTime<Utc>) -> Element {
    let mut element = Element::bare("service", EXTDISCO);
    set_attr(&mut element, "type", service.kind.as_str());
    set_attr(&mut element, "host", service.host.as_str());
    set_attr(&mut element, "port", service.port.to_string());
    if let Some(transport) = service.transport {
        set_attr(&mut element, "transport", transport.as_str());
    }
    if let Some(restricted) = &service.restricted {
        let ttl = i64::try_from(restricted.ttl_secs).unwrap_or(i64::MAX);
        let expiry = now.timestamp().saturating_add(ttl);
        let (username, password) = turn_credentials(&restricted.secret, user, expiry);
        let expires = DateTime::<Utc>::from_timestamp(expiry, 0)
            .unwrap_or(now)
            .to_rfc3339_opts(SecondsFormat::Secs, true);
        set_attr(&mut element, "restricted", "1");
        set_attr(&mut element, "username", username);
        set_attr(&mut element, "password", password);
        set_attr(&mut element, "expires", expires);
    }
    element
}

impl ExtDisco {
    /// The requester's bare JID, if it is a user of one of our domains.
    fn local_user(&self, request: &IqRequest) -> Option<String> {
        let from = &request.from;
        from.node()?;
        self.hosted
            .contains(from.domain().as_str())
            .then(|| from.to_bare().to_string())
    }

    fn services(&self, user: &str, payload: &Element) -> Element {
        let wanted = payload.attr("type");
        let now = Utc::now();
        let mut answer = Element::bare("services", EXTDISCO);
        if let Some(kind) = wanted {
            set_attr(&mut answer, "type", kind);
        }
        for service in self
            .services
            .iter()
            .filter(|s| wanted.is_none_or(|kind| kind == s.kind.as_str()))
        {
            answer.append_child(service_element(service, user, now));
        }
        answer
    }

    /// XEP-0215 §3.3: credentials for the services named by type, host and maybe port.
    fn credentials(&self, user: &str, payload: &Element) -> IqResult {
        let asked = payload
            .get_child("service", EXTDISCO)
            .ok_or_else(|| StanzaError::bad_request().with_text("a <service/> is required"))?;
        let (Some(kind), Some(host)) = (asked.attr("type"), asked.attr("host")) else {
            return Err(StanzaError::bad_request().with_text("'type' and 'host' are required"));
        };
        let port = match asked.attr("port") {
            None => None,
            Some(port) => Some(
                port.parse::<u16>()
                    .map_err(|_| StanzaError::bad_request().with_text("'port' is not a port"))?,
            ),
        };
        // One host may offer the same type on several ports or transports: all of them match
        // unless the port narrows it down (§3.3).
        let now = Utc::now();
        let mut answer = Element::bare("credentials", EXTDISCO);
        for service in self.services.iter().filter(|s| {
            s.kind.as_str() == kind && s.host == host && port.is_none_or(|p| p == s.port)
        }) {
            answer.append_child(service_element(service, user, now));
        }
        if answer.children().next().is_none() {
            return Err(StanzaError::item_not_found());
        }
        Ok(Some(answer))
    }
}

#[async_trait]
impl IqHandler for ExtDisco {
    fn authorize(&self, request: &IqRequest) -> Result<(), StanzaError> {
        match self.local_user(request) {
            Some(_) => Ok(()),
            None => Err(StanzaError::forbidden()),
        }
    }

    async fn handle_iq(&self, _router: &Arc<Router>, request: IqRequest) -> IqResult {
        let user = self
            .local_user(&request)
            .ok_or_else(StanzaError::forbidden)?;
        let payload = request.payload();
        debug!(%user, request = payload.name(), "external services asked for");
        match payload.name() {
            "services" => Ok(Some(self.services(&user, payload))),
            "credentials" => self.credentials(&user, payload),
            _ => Err(StanzaError::bad_request()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ExternalServiceType, RestrictedService};

    fn turn(secret: &str) -> ExternalService {
        ExternalService {
            kind: ExternalServiceType::Turn,
            host: "turn.example.com".into(),
            port: 3478,
            transport: None,
            restricted: Some(RestrictedService {
                secret: secret.into(),
                ttl_secs: 86_400,
            }),
        }
    }

    fn config_with(service: ExternalService) -> Config {
        let mut config = Config::default();
        config.external_services.push(service);
        config
    }

    #[test]
    fn credentials_follow_the_turn_rest_scheme() {
        // RFC 2202 test case 2 fixes HMAC-SHA1("Jefe", "what do ya want for nothing?").
        let mac = Hmac::<Sha1>::new_from_slice(b"Jefe")
            .map(|mut mac| {
                mac.update(b"what do ya want for nothing?");
                mac.finalize().into_bytes()
            })
            .expect("hmac");
        assert_eq!(
            mac.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        let (username, password) = turn_credentials("Jefe", "alice@example.com", 1_700_000_000);
        assert_eq!(username, "1700000000:alice@example.com");
        let mut mac = Hmac::<Sha1>::new_from_slice(b"Jefe").expect("hmac");
        mac.update(username.as_bytes());
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(password, expected);
        assert_ne!(
            turn_credentials("other", "alice@example.com", 1_700_000_000).1,
            password
        );
    }

    #[test]
    fn validation_refuses_bad_entries() {
        assert!(config_with(turn("s3cret")).validate().is_ok());
        let bad = [
            ExternalService {
                host: " ".into(),
                ..turn("s")
            },
            ExternalService {
                port: 0,
                ..turn("s")
            },
            turn(""),
            ExternalService {
                restricted: Some(RestrictedService {
                    secret: "s".into(),
                    ttl_secs: 0,
                }),
                ..turn("s")
            },
        ];
        for service in bad {
            let err = config_with(service.clone()).validate();
            assert!(
                matches!(err, Err(crate::config::ConfigError::Invalid(ref m)) if m.contains("external_services[0]")),
                "{service:?} gave {err:?}"
            );
        }
    }

    #[test]
    fn unknown_types_and_keys_are_refused_when_parsed() {
        let parse = |toml_text: &str| toml::from_str::<Config>(toml_text);
        assert!(
            parse("[[external_services]]\ntype = \"turn\"\nhost = \"h\"\nport = 3478\n").is_ok()
        );
        assert!(parse("[[external_services]]\ntype = \"ftp\"\nhost = \"h\"\nport = 21\n").is_err());
        assert!(parse("[[external_services]]\ntype = \"stun\"\nhost = \"h\"\nport = 3478\ntransport = \"sctp\"\n").is_err());
        let parsed = parse(
            "[[external_services]]\ntype = \"turns\"\nhost = \"h\"\nport = 5349\ntransport = \"tcp\"\nrestricted = { secret = \"x\" }\n",
        )
        .expect("valid");
        let service = &parsed.external_services[0];
        assert_eq!(service.kind, ExternalServiceType::Turns);
        assert_eq!(
            service.restricted.as_ref().map(|r| r.ttl_secs),
            Some(crate::config::DEFAULT_CREDENTIALS_TTL_SECS)
        );
    }

    fn request_from(from: &str) -> IqRequest {
        IqRequest {
            stanza: Element::bare("iq", crate::xml::ns::CLIENT),
            from: jid::Jid::new(from).expect("jid"),
            account: None,
            iq_type: IqType::Get,
        }
    }

    #[test]
    fn only_users_of_hosted_domains_may_ask() {
        let mut config = config_with(turn("s3cret"));
        config.domain = "example.com".into();
        let module = ExtDisco::new(&config);
        assert!(module
            .authorize(&request_from("alice@example.com/phone"))
            .is_ok());
        // A user of another server (over s2s), another server itself, and a service of ours
        // get no relay credentials.
        for stranger in ["mallory@evil.example/x", "evil.example", "example.com"] {
            let refused = module.authorize(&request_from(stranger));
            assert!(
                matches!(&refused, Err(e) if e.condition == crate::stanza::Condition::Forbidden),
                "{stranger}: {refused:?}"
            );
        }
    }

    #[test]
    fn the_commented_example_in_corvid_toml_is_valid() {
        let example = include_str!("../../corvid.toml");
        let start = example
            .find("# [[external_services]]")
            .expect("an [[external_services]] example");
        let uncommented: String = example[start..]
            .lines()
            .take_while(|line| line.starts_with('#'))
            .map(|line| format!("{}\n", line.trim_start_matches('#').trim_start()))
            .collect();
        let config: Config = toml::from_str(&uncommented).expect("the example parses");
        assert_eq!(config.external_services.len(), 2);
        assert!(config.external_services[1].restricted.is_some());
        config.validate().expect("the example is valid");
    }
}
