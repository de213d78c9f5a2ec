//! What the server tells about itself in its disco#info (XEP-0128 forms): contact addresses
//! (`[contact]`, XEP-0157) and where its outage status is published (`[outage]`, XEP-0455).

use serde::Deserialize;

use super::ConfigError;

/// `[contact]` (or `[hosts."example.net".contact]`): XEP-0157 addresses, each a URI such as
/// `mailto:admin@example.org`, `xmpp:admin@example.org` or `https://example.org/support`.
/// A hosted domain without a `contact` table of its own shows the main domain's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContactAddresses {
    /// Where to report abuse coming from this server's users.
    pub abuse: Vec<String>,
    /// The server's administrators.
    pub admin: Vec<String>,
    pub feedback: Vec<String>,
    pub sales: Vec<String>,
    /// Where to report security issues.
    pub security: Vec<String>,
    /// Where the service status is announced (a status page, a feed).
    pub status: Vec<String>,
    pub support: Vec<String>,
}

impl ContactAddresses {
    /// `(XEP-0157 field, addresses)` for every kind with at least one address.
    pub fn fields(&self) -> Vec<(&'static str, &[String])> {
        [
            ("abuse-addresses", &self.abuse),
            ("admin-addresses", &self.admin),
            ("feedback-addresses", &self.feedback),
            ("sales-addresses", &self.sales),
            ("security-addresses", &self.security),
            ("status-addresses", &self.status),
            ("support-addresses", &self.support),
        ]
        .into_iter()
        .filter(|(_, addresses)| !addresses.is_empty())
        .map(|(field, addresses)| (field, addresses.as_slice()))
        .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.fields().is_empty()
    }

    pub(super) fn validate(&self, table: &str) -> Result<(), ConfigError> {
        for (field, addresses) in self.fields() {
            for address in addresses {
                if !is_uri(address) {
                    return Err(ConfigError::Invalid(format!(
                        "{table}: '{address}' ({field}) is not a URI such as mailto:… or xmpp:…"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// `[outage]`: XEP-0455 Service Outage Status. The status document itself (a JSON object,
/// `{}` when all is well) lives on another host, so that clients can read it when this
/// server is down; the server only says where it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutageStatus {
    /// HTTP(S) URLs of the status document, e.g. `["https://status.example.org/xmpp.json"]`.
    pub status_addresses: Vec<String>,
}

impl OutageStatus {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for address in &self.status_addresses {
            let web = ["https://", "http://"]
                .iter()
                .any(|scheme| address.starts_with(scheme) && address.len() > scheme.len());
            if !web || address.contains(char::is_whitespace) {
                return Err(ConfigError::Invalid(format!(
                    "outage.status_addresses: '{address}' must be an http:// or https:// URL \
                     (clients fetch it without logging in, when the server may be down)"
                )));
            }
        }
        Ok(())
    }
}

/// RFC 3986: a scheme (a letter, then letters, digits, `+`, `-`, `.`), a colon, something.
fn is_uri(address: &str) -> bool {
    let Some((scheme, rest)) = address.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && !address.contains(char::is_whitespace)
}

impl super::Config {
    /// The contact addresses `domain` shows: its `[hosts]` entry's `contact`, else `[contact]`.
    pub fn contact_addresses(&self, domain: &str) -> &ContactAddresses {
        self.hosts
            .get(domain)
            .and_then(|host| host.contact.as_ref())
            .unwrap_or(&self.contact)
    }
}

/// Checks `[contact]`, every `[hosts."…".contact]` and `[outage]`.
pub(super) fn validate(config: &super::Config) -> Result<(), ConfigError> {
    config.contact.validate("contact")?;
    for (domain, host) in &config.hosts {
        if let Some(contact) = &host.contact {
            contact.validate(&format!("hosts.\"{domain}\".contact"))?;
        }
    }
    config.outage.validate()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_must_be_uris_and_status_documents_web_urls() {
        let ok = ContactAddresses {
            admin: vec![
                "mailto:admin@example.org".into(),
                "xmpp:admin@example.org".into(),
            ],
            ..ContactAddresses::default()
        };
        assert!(ok.validate("contact").is_ok());
        assert_eq!(ok.fields().len(), 1);
        let bad = ContactAddresses {
            abuse: vec!["abuse@example.org".into()],
            ..ContactAddresses::default()
        };
        assert!(bad.validate("contact").is_err());
        let outage = OutageStatus {
            status_addresses: vec!["https://status.example.org/xmpp.json".into()],
        };
        assert!(outage.validate().is_ok());
        let outage = OutageStatus {
            status_addresses: vec!["xmpp:status@example.org".into()],
        };
        assert!(outage.validate().is_err());
    }
}
