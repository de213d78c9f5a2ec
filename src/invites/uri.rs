//! How an invite is written for people and clients: the `xmpp:` URI (RFC 5122 with the
//! XEP-0147 query actions of XEP-0379/XEP-0401) and the landing page's https URL.

use crate::config::Config;
use crate::storage::StoredInvite;

/// `xmpp:inviter?roster;preauth=TOKEN;ibr=y` for a user's invite (add the inviter, and
/// register here if needed, XEP-0401 §4), `xmpp:domain?register;preauth=TOKEN` for the
/// operator's.
pub fn xmpp_uri(invite: &StoredInvite) -> String {
    match &invite.inviter {
        Some(inviter) => format!(
            "xmpp:{}?roster;preauth={};ibr=y",
            escape(inviter),
            invite.token
        ),
        None => format!(
            "xmpp:{}?register;preauth={}",
            escape(&invite.domain),
            invite.token
        ),
    }
}

/// The page for `token` under `base`.
pub fn landing_url(base: &str, token: &str) -> String {
    format!("{}{}{token}", base.trim_end_matches('/'), super::PAGE_PATH)
}

/// Where the HTTP listeners are reached from outside: `http.public_url`, else `host` (a
/// request's `Host`, with the scheme it came in on), else the domain with the HTTPS port (the
/// HTTP port when HTTPS is off).
pub fn public_base(config: &Config, host: Option<(&str, &str)>, domain: &str) -> String {
    if let Some(url) = &config.http.public_url {
        return url.trim_end_matches('/').to_owned();
    }
    if let Some((scheme, host)) = host {
        return format!("{scheme}://{host}");
    }
    let host = idna::domain_to_ascii(domain).unwrap_or_else(|_| domain.to_owned());
    if config.http.tls_enabled {
        format!("https://{host}:{}", config.http.tls_port)
    } else {
        format!("http://{host}:{}", config.http.port)
    }
}

/// Percent-encodes what may not stand in the path of an `xmpp:` URI (RFC 5122 §2.3: `@` may).
fn escape(jid: &str) -> String {
    let mut out = String::with_capacity(jid.len());
    for b in jid.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite(inviter: Option<&str>) -> StoredInvite {
        StoredInvite {
            token: "TOKEN".into(),
            domain: "example.org".into(),
            inviter: inviter.map(str::to_owned),
            username: None,
            roster: true,
            created_at_ms: 0,
            expires_at_ms: 1,
        }
    }

    #[test]
    fn uris_follow_xep_0401() {
        assert_eq!(
            xmpp_uri(&invite(Some("romeo@example.org"))),
            "xmpp:romeo@example.org?roster;preauth=TOKEN;ibr=y"
        );
        assert_eq!(
            xmpp_uri(&invite(Some("o'brien@example.org"))),
            "xmpp:o%27brien@example.org?roster;preauth=TOKEN;ibr=y"
        );
        assert_eq!(
            xmpp_uri(&invite(None)),
            "xmpp:example.org?register;preauth=TOKEN"
        );
    }

    #[test]
    fn the_landing_url_prefers_the_configured_base() {
        let mut config = Config::default();
        assert_eq!(
            landing_url(&public_base(&config, None, "example.org"), "T"),
            "https://example.org:5281/invite/T"
        );
        assert_eq!(
            public_base(&config, Some(("http", "127.0.0.1:9")), "x"),
            "http://127.0.0.1:9"
        );
        config.http.public_url = Some("https://chat.example.org/".into());
        assert_eq!(
            landing_url(&public_base(&config, None, "example.org"), "T"),
            "https://chat.example.org/invite/T"
        );
    }
}
