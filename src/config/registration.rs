//! Who may create an account, and how: `registration` per hosted domain (XEP-0077 in-band and
//! XEP-0401 invites), the limits on open registration, and invite settings.

use serde::Deserialize;

use super::{Config, ConfigError};

/// `registration = "closed" | "invite" | "open"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationMode {
    /// Only the operator creates accounts (`corvid user add`, admin commands).
    #[default]
    Closed,
    /// Accounts are created with an invite token (XEP-0401) only.
    Invite,
    /// Anyone may create an account, within `registration_limits`.
    Open,
}

impl RegistrationMode {
    /// Whether in-band registration is offered at all (with or without a token).
    pub fn offers_registration(self) -> bool {
        !matches!(self, RegistrationMode::Closed)
    }
}

/// `registration_limits = { … }`: how often one address may register in "open" mode. Prosody's
/// `min_seconds_between_registrations` (300 there) is `min_interval_secs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationLimits {
    /// Accounts one address (an IPv4 address or an IPv6 /64) may create per hour; 0 for no
    /// limit.
    pub per_address_per_hour: u32,
    /// Accounts one address may create per day; 0 for no limit.
    pub per_address_per_day: u32,
    /// Seconds that must pass between two registrations from one address; 0 for none.
    pub min_interval_secs: u64,
}

impl Default for RegistrationLimits {
    fn default() -> Self {
        RegistrationLimits {
            per_address_per_hour: 3,
            per_address_per_day: 10,
            min_interval_secs: 300,
        }
    }
}

/// Seven days, as Prosody's invites default to.
pub const DEFAULT_INVITE_EXPIRY_SECS: u64 = 7 * 24 * 3600;

impl Config {
    /// The registration mode of the hosted `domain`: its `[hosts]` entry's, else the
    /// top-level one.
    pub fn registration_mode(&self, domain: &str) -> RegistrationMode {
        self.hosts
            .get(domain)
            .and_then(|host| host.registration)
            .unwrap_or(self.registration)
    }

    pub(super) fn validate_registration(&self) -> Result<(), ConfigError> {
        if self.invite_expiry_secs == 0 {
            return Err(ConfigError::Invalid(
                "invite_expiry_secs must be greater than 0".into(),
            ));
        }
        if let Some(url) = &self.http.public_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(ConfigError::Invalid(format!(
                    "http.public_url '{url}' must start with https:// or http://"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_overrides_the_default_mode() {
        let config: Config = toml::from_str(
            "registration = \"open\"\n\
             registration_limits = { per_address_per_hour = 1, min_interval_secs = 0 }\n\
             [hosts.\"example.net\"]\nregistration = \"invite\"\n",
        )
        .unwrap();
        assert_eq!(
            config.registration_mode("localhost"),
            RegistrationMode::Open
        );
        assert_eq!(
            config.registration_mode("example.net"),
            RegistrationMode::Invite
        );
        assert_eq!(config.registration_limits.per_address_per_hour, 1);
        assert_eq!(config.registration_limits.per_address_per_day, 10);
        assert_eq!(Config::default().registration, RegistrationMode::Closed);
        assert!(!Config::default().allow_user_invites);
    }

    #[test]
    fn the_public_url_must_be_a_web_address() {
        let mut config = Config::default();
        config.http.public_url = Some("chat.example.org".into());
        assert!(config.validate_registration().is_err());
        config.http.public_url = Some("https://chat.example.org".into());
        assert!(config.validate_registration().is_ok());
        config.invite_expiry_secs = 0;
        assert!(config.validate_registration().is_err());
    }
}
