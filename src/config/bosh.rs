//! `[bosh]`: XMPP over BOSH (XEP-0124, XEP-0206) at `/http-bind` on the HTTP listeners.

use serde::Deserialize;

use super::ConfigError;

/// The longest `wait` a client may ask for: XEP-0124 leaves the cap to the connection manager,
/// and proxies commonly cut idle HTTP requests after a minute or two.
pub const MAX_WAIT_SECS: u64 = 300;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BoshConfig {
    /// Serve BOSH at `/http-bind` (and `/bosh`) on the HTTP and HTTPS listeners.
    pub enabled: bool,
    /// The longest a request is held waiting for something to send: a client asking for
    /// more is answered with this (`wait` in the session creation response).
    pub max_wait_secs: u64,
    /// A session with no request in progress for this long ends (`inactivity`), as a TCP
    /// connection that broke does.
    pub inactivity_secs: u64,
    /// The longest a client may ask to pause its session (`maxpause`, XEP-0124 §10).
    pub max_pause_secs: u64,
    /// Treat every plain-HTTP BOSH request as encrypted (a TLS-terminating proxy on another
    /// host is in front). Otherwise only HTTPS and, with `http.loopback_is_secure`, loopback
    /// count as encrypted.
    pub is_secure: bool,
}

impl Default for BoshConfig {
    fn default() -> Self {
        BoshConfig {
            enabled: true,
            max_wait_secs: 60,
            inactivity_secs: 60,
            max_pause_secs: 120,
            is_secure: false,
        }
    }
}

impl BoshConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_WAIT_SECS).contains(&self.max_wait_secs) {
            return Err(ConfigError::Invalid(format!(
                "bosh.max_wait_secs must be between 1 and {MAX_WAIT_SECS}"
            )));
        }
        if self.inactivity_secs == 0 || self.inactivity_secs > 3600 {
            return Err(ConfigError::Invalid(
                "bosh.inactivity_secs must be between 1 and 3600".into(),
            ));
        }
        if self.max_pause_secs > 86_400 {
            return Err(ConfigError::Invalid(
                "bosh.max_pause_secs must be at most 86400 (a day)".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_out_of_range_are_refused() {
        assert!(BoshConfig::default().validate().is_ok());
        for broken in [
            BoshConfig {
                max_wait_secs: 0,
                ..BoshConfig::default()
            },
            BoshConfig {
                max_wait_secs: MAX_WAIT_SECS + 1,
                ..BoshConfig::default()
            },
            BoshConfig {
                inactivity_secs: 0,
                ..BoshConfig::default()
            },
            BoshConfig {
                max_pause_secs: 86_401,
                ..BoshConfig::default()
            },
        ] {
            assert!(broken.validate().is_err(), "{broken:?}");
        }
    }
}
