//! `[components]`: external components (XEP-0114) that connect to this server with a shared
//! secret and serve a domain of their own (gateways, bots, bridges).
//!
//! ```toml
//! [components]
//! bind = "127.0.0.1"
//! port = 5347
//!
//! [components.services."gateway.example.org"]
//! secret = "a long random string"
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;

use super::ConfigError;
use crate::xml::XmlLimits;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ComponentsConfig {
    /// Where the `jabber:component:accept` listener binds. Loopback by default: the
    /// protocol has no encryption, so the secret's digest and every stanza cross in clear.
    pub bind: IpAddr,
    /// The listener's port (5347, as Prosody and ejabberd use). The listener runs only when
    /// at least one service is configured.
    pub port: u16,
    /// Time a connection has to open its stream and complete the handshake.
    pub handshake_timeout_secs: u64,
    /// Largest stanza a component may send, in bytes.
    pub max_stanza_size: usize,
    /// Stanzas waiting for a component that reads slower than it is written to; past it,
    /// new ones are bounced with `resource-constraint`.
    pub queue_limit: usize,
    /// Seconds between whitespace keepalives sent to a connected component, so a dead TCP
    /// connection is noticed and the domain freed (0: none).
    pub keepalive_secs: u64,
    /// Each component by the domain it serves.
    pub services: BTreeMap<String, ComponentService>,
}

/// One `[components.services."<domain>"]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentService {
    /// The shared secret of the XEP-0114 handshake.
    pub secret: String,
}

impl Default for ComponentsConfig {
    fn default() -> Self {
        ComponentsConfig {
            bind: IpAddr::from([127, 0, 0, 1]),
            port: 5347,
            handshake_timeout_secs: 10,
            max_stanza_size: 512 * 1024,
            queue_limit: 1024,
            keepalive_secs: 60,
            services: BTreeMap::new(),
        }
    }
}

impl ComponentsConfig {
    /// Whether the listener runs.
    pub fn enabled(&self) -> bool {
        !self.services.is_empty()
    }

    pub fn xml_limits(&self) -> XmlLimits {
        XmlLimits::with_max_size(self.max_stanza_size)
    }

    /// `taken`: the hosted domains and their MUC services, which a component may not claim.
    pub(super) fn validate(&self, taken: &[String]) -> Result<(), ConfigError> {
        let invalid = |what: String| Err(ConfigError::Invalid(format!("components: {what}")));
        if self.handshake_timeout_secs == 0 {
            return invalid("handshake_timeout_secs must be greater than 0".into());
        }
        if self.max_stanza_size < 10_000 || self.queue_limit == 0 {
            return invalid(
                "max_stanza_size must be at least 10000 (RFC 6120 §13.12) and queue_limit at \
                 least 1"
                    .into(),
            );
        }
        for (domain, service) in &self.services {
            let normal = crate::address::parse(domain)
                .ok()
                .filter(|j| j.node().is_none() && j.resource().is_none())
                .map(|j| j.to_string());
            match normal {
                Some(normal) if normal == *domain => {}
                Some(normal) => {
                    return invalid(format!("'{domain}' must be written as '{normal}'"));
                }
                None => return invalid(format!("'{domain}' is not a valid XMPP domain")),
            }
            if taken.iter().any(|t| t == domain) {
                return invalid(format!(
                    "'{domain}' is already a hosted domain or a MUC service of this server"
                ));
            }
            if service.secret.trim().is_empty() {
                return invalid(format!("the secret of '{domain}' is empty"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(domain: &str, secret: &str) -> ComponentsConfig {
        let mut config = ComponentsConfig::default();
        config.services.insert(
            domain.to_owned(),
            ComponentService {
                secret: secret.to_owned(),
            },
        );
        config
    }

    #[test]
    fn a_component_may_not_take_a_domain_already_served() {
        let taken = [
            "example.org".to_owned(),
            "conference.example.org".to_owned(),
        ];
        assert!(with("gateway.example.org", "s3cret")
            .validate(&taken)
            .is_ok());
        assert!(with("example.org", "s3cret").validate(&taken).is_err());
        assert!(with("conference.example.org", "s3cret")
            .validate(&taken)
            .is_err());
    }

    #[test]
    fn secrets_are_required_and_domains_in_normal_form() {
        assert!(with("gateway.example.org", " ").validate(&[]).is_err());
        assert!(with("Gateway.example.org", "s").validate(&[]).is_err());
        assert!(with("user@gateway.example.org", "s").validate(&[]).is_err());
    }
}

#[cfg(test)]
mod check_config {
    use std::path::Path;

    use crate::config::Config;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("corvid.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn the_configuration_file_is_checked_for_components() {
        let ok = parse(
            "domain = \"example.org\"\n\
             [components.services.\"gateway.example.org\"]\nsecret = \"s3cret\"\n",
        )
        .expect("a valid component");
        assert!(ok.components.enabled());
        assert_eq!(ok.components.port, 5347);
        assert!(ok.components.bind.is_loopback());
        let on_muc = parse(
            "domain = \"example.org\"\n\
             [components.services.\"conference.example.org\"]\nsecret = \"s3cret\"\n",
        );
        assert!(on_muc.is_err_and(|e| e.contains("conference.example.org")));
        let no_secret = parse(
            "domain = \"example.org\"\n\
             [components.services.\"gateway.example.org\"]\nsecret = \"\"\n",
        );
        assert!(no_secret.is_err_and(|e| e.contains("secret")));
        let typo = parse(
            "domain = \"example.org\"\n\
             [components.services.\"gateway.example.org\"]\nsecrt = \"s\"\n",
        );
        assert!(typo.is_err());
        assert!(!Config::default().components.enabled());
    }

    #[test]
    fn a_changed_component_needs_a_restart() {
        let old = Config::default();
        let mut new = Config::default();
        new.components.services.insert(
            "gateway.localhost".into(),
            super::ComponentService { secret: "s".into() },
        );
        let changed = crate::reload::needs_restart(&old, &new);
        assert_eq!(changed, ["components"]);
    }
}
