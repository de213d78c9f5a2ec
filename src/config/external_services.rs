//! `[[external_services]]`: STUN/TURN servers announced to local users (XEP-0215), with
//! optional coturn-style time-limited credentials.

use serde::Deserialize;

use super::ConfigError;

/// How long TURN credentials stay valid unless `ttl_secs` says otherwise: a day, coturn's
/// customary lifetime for REST credentials.
pub const DEFAULT_CREDENTIALS_TTL_SECS: u64 = 86_400;

/// The service types XEP-0215 names for NAT traversal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExternalServiceType {
    Stun,
    Turn,
    Turns,
}

impl ExternalServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ExternalServiceType::Stun => "stun",
            ExternalServiceType::Turn => "turn",
            ExternalServiceType::Turns => "turns",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExternalTransport {
    Udp,
    Tcp,
}

impl ExternalTransport {
    pub fn as_str(self) -> &'static str {
        match self {
            ExternalTransport::Udp => "udp",
            ExternalTransport::Tcp => "tcp",
        }
    }
}

/// `restricted = { secret = "…", ttl_secs = 86400 }`: the service wants credentials, made
/// from coturn's `static-auth-secret` (its `use-auth-secret` mode).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestrictedService {
    pub secret: String,
    #[serde(default = "default_ttl")]
    pub ttl_secs: u64,
}

fn default_ttl() -> u64 {
    DEFAULT_CREDENTIALS_TTL_SECS
}

/// One `[[external_services]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalService {
    #[serde(rename = "type")]
    pub kind: ExternalServiceType,
    pub host: String,
    pub port: u16,
    #[serde(default)]
    pub transport: Option<ExternalTransport>,
    #[serde(default)]
    pub restricted: Option<RestrictedService>,
}

impl ExternalService {
    pub(super) fn validate(&self, index: usize) -> Result<(), ConfigError> {
        let invalid = |what: &str| {
            Err(ConfigError::Invalid(format!(
                "external_services[{index}]: {what}"
            )))
        };
        if self.host.trim().is_empty() {
            return invalid("host must not be empty");
        }
        if self.port == 0 {
            return invalid("port must not be 0");
        }
        if let Some(restricted) = &self.restricted {
            if restricted.secret.is_empty() {
                return invalid("restricted.secret must not be empty");
            }
            // Beyond a year, the credentials are as good as a permanent password.
            if !(1..=365 * 24 * 3600).contains(&restricted.ttl_secs) {
                return invalid("restricted.ttl_secs must be between 1 second and a year");
            }
        }
        Ok(())
    }
}

pub(super) fn validate(services: &[ExternalService]) -> Result<(), ConfigError> {
    services
        .iter()
        .enumerate()
        .try_for_each(|(index, service)| service.validate(index))
}
