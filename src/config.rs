//! `corvid.toml`: every setting with its default. Unknown keys are errors, so a typo is reported
//! by `corvid check-config` instead of being silently ignored.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::xml::XmlLimits;

mod bosh;
mod cluster;
mod components;
mod external_services;
mod private_storage;
mod registration;
mod upload;
pub use bosh::BoshConfig;
pub use cluster::ClusterConfig;
pub use components::{ComponentService, ComponentsConfig};
mod server_info;
pub use external_services::{
    ExternalService, ExternalServiceType, ExternalTransport, RestrictedService,
    DEFAULT_CREDENTIALS_TTL_SECS,
};
pub use private_storage::PrivateStorageConfig;
pub use registration::{RegistrationLimits, RegistrationMode, DEFAULT_INVITE_EXPIRY_SECS};
pub use server_info::{ContactAddresses, OutageStatus};
pub use upload::UploadConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// A `sqlite:` URL whose file path is relative, made relative to `dir`; other URLs as they are.
fn sqlite_url_beside(url: &str, dir: &Path) -> String {
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return url.to_owned();
    };
    let (slashes, location) = match rest.strip_prefix("//") {
        Some(location) => ("//", location),
        None => ("", rest),
    };
    let file = location.split('?').next().unwrap_or_default();
    if file.is_empty() || file.starts_with('/') || file.starts_with(":memory:") {
        return url.to_owned();
    }
    let query = &location[file.len()..];
    format!("sqlite:{slashes}{}{query}", dir.join(file).display())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The XMPP domain this server hosts (the part after `@`); the first of `hosted_domains`.
    pub domain: String,
    /// Further domains served by this server (virtual hosting), each with settings of its own.
    pub hosts: BTreeMap<String, HostConfig>,
    pub log: LogConfig,
    pub storage: StorageConfig,
    pub tls: TlsConfig,
    pub c2s: C2sConfig,
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub pep: PepConfig,
    pub muc: MucConfig,
    pub push: PushConfig,
    pub fast: FastConfig,
    pub stream_management: StreamManagementConfig,
    pub mam: MamConfig,
    pub cluster: ClusterConfig,
    pub s2s: S2sConfig,
    pub control: ControlConfig,
    pub metrics: MetricsConfig,
    /// Server-wide administrators (bare JIDs): they run the XEP-0133 commands for every hosted
    /// domain. Each `[hosts]` entry may name admins of its own domain too.
    pub admins: Vec<String>,
    pub adhoc: AdhocConfig,
    /// Who may create accounts on the hosted domains that do not set their own (XEP-0077,
    /// XEP-0401): "closed" (the default), "invite" or "open".
    pub registration: RegistrationMode,
    /// How often one address may register in "open" mode.
    pub registration_limits: RegistrationLimits,
    /// Users, not only the operator and admins, may create invites.
    pub allow_user_invites: bool,
    /// How long an invite stays usable, in seconds (7 days by default).
    pub invite_expiry_secs: u64,
    /// `[[external_services]]`: STUN/TURN servers announced to local users (XEP-0215).
    pub external_services: Vec<ExternalService>,
    /// `[components]`: external components (XEP-0114).
    pub components: ComponentsConfig,
    /// `[upload]`: HTTP File Upload (XEP-0363).
    pub upload: UploadConfig,
    /// `[bosh]`: XMPP over BOSH (XEP-0124, XEP-0206) at `/http-bind`.
    pub bosh: BoshConfig,
    /// `[contact]`: XEP-0157 contact addresses in the server's disco#info.
    pub contact: ContactAddresses,
    /// `[outage]`: where the XEP-0455 outage status document is published.
    pub outage: OutageStatus,
    /// `[private_storage]`: XEP-0049 limits.
    pub private_storage: PrivateStorageConfig,
}

/// `[metrics]`: Prometheus text format at `/metrics` on a listener of its own, so that it is
/// never on the public HTTP port by accident.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Off, no listener is opened at all.
    pub enabled: bool,
    /// Loopback by default: a Prometheus on the same host scrapes it, and nothing outside
    /// sees it without an explicit bind. 5282 follows HTTP (5280) and HTTPS (5281).
    pub listen: std::net::SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 5282)),
        }
    }
}

/// `[adhoc]`: XEP-0050 command sessions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdhocConfig {
    /// A multi-stage command session left untouched this long is forgotten; its id is then
    /// refused as unknown.
    pub session_timeout_secs: u64,
    /// Open command sessions per full JID at most; starting one more forgets the oldest.
    pub max_sessions_per_user: usize,
}

impl Default for AdhocConfig {
    fn default() -> Self {
        AdhocConfig {
            session_timeout_secs: 600,
            max_sessions_per_user: 10,
        }
    }
}

/// A further hosted domain, `[hosts."example.net"]`, as Prosody's `VirtualHost` and ejabberd's
/// `hosts`. What is unset follows the main domain's settings with this domain's name in it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// PEM certificate chain; `<domain>.crt` in the folder of `tls.cert` when unset.
    pub cert: Option<PathBuf>,
    /// PEM private key; `<domain>.key` in the folder of `tls.key` when unset.
    pub key: Option<PathBuf>,
    /// The domain's MUC service; `conference.<domain>` when unset.
    pub muc_domain: Option<String>,
    /// Per-account limits of this domain's users; what is unset follows `[limits]`.
    pub limits: HostLimits,
    /// Administrators of this domain only (bare JIDs), besides the server-wide `admins`.
    pub admins: Vec<String>,
    /// This domain's registration mode; the top-level `registration` when unset.
    pub registration: Option<RegistrationMode>,
    /// This domain's XEP-0157 contact addresses; the top-level `[contact]` when unset.
    pub contact: Option<ContactAddresses>,
}

/// `[hosts."example.net".limits]`: the limits on one account that a hosted domain may set
/// apart from the main domain's (a domain of bots that keep many resources, a domain with
/// smaller offline stores). Limits on connections and rates stay server-wide: they protect
/// the server, whichever domain a client names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostLimits {
    pub offline_messages_per_user: Option<u32>,
    pub roster_items: Option<u32>,
    pub blocklist_items: Option<u32>,
    pub vcard_max_bytes: Option<usize>,
    pub max_resources_per_account: Option<usize>,
}

/// The limits on one account in force on a hosted domain (see `LimitsConfig` for each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountLimits {
    pub offline_messages_per_user: u32,
    pub roster_items: u32,
    pub blocklist_items: u32,
    pub vcard_max_bytes: usize,
    pub max_resources_per_account: usize,
}

/// One domain this server serves, with its settings resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostedDomain {
    pub domain: String,
    /// Its certificate (and whether to generate a self-signed one when missing).
    pub tls: TlsConfig,
    /// Its MUC service's domain, when MUC is enabled.
    pub muc_domain: Option<String>,
}

impl Config {
    /// The limits on an account of `domain`: its `[hosts]` entry's, then `[limits]`.
    pub fn account_limits(&self, domain: &str) -> AccountLimits {
        let main = &self.limits;
        let own = self.hosts.get(domain).map(|host| &host.limits);
        let pick = |field: fn(&HostLimits) -> Option<usize>, default: usize| {
            own.and_then(field).unwrap_or(default)
        };
        let pick32 = |field: fn(&HostLimits) -> Option<u32>, default: u32| {
            own.and_then(field).unwrap_or(default)
        };
        AccountLimits {
            offline_messages_per_user: pick32(
                |l| l.offline_messages_per_user,
                main.offline_messages_per_user,
            ),
            roster_items: pick32(|l| l.roster_items, main.roster_items),
            blocklist_items: pick32(|l| l.blocklist_items, main.blocklist_items),
            vcard_max_bytes: pick(|l| l.vcard_max_bytes, main.vcard_max_bytes),
            max_resources_per_account: pick(
                |l| l.max_resources_per_account,
                main.max_resources_per_account,
            ),
        }
    }

    /// Every hosted domain, the main `domain` first, then `hosts` in name order.
    pub fn hosted_domains(&self) -> Vec<HostedDomain> {
        let main = HostedDomain {
            domain: self.domain.clone(),
            tls: self.tls.clone(),
            muc_domain: self
                .muc
                .enabled
                .then(|| self.muc.service_domain(&self.domain)),
        };
        let others = self.hosts.iter().map(|(domain, host)| {
            let beside = |main: &Path, extension: &str| {
                main.parent()
                    .unwrap_or(Path::new("."))
                    .join(format!("{domain}.{extension}"))
            };
            HostedDomain {
                domain: domain.clone(),
                tls: TlsConfig {
                    cert: host
                        .cert
                        .clone()
                        .unwrap_or_else(|| beside(&self.tls.cert, "crt")),
                    key: host
                        .key
                        .clone()
                        .unwrap_or_else(|| beside(&self.tls.key, "key")),
                    generate_self_signed: self.tls.generate_self_signed,
                },
                muc_domain: self.muc.enabled.then(|| {
                    host.muc_domain
                        .clone()
                        .unwrap_or_else(|| format!("conference.{domain}"))
                }),
            }
        });
        std::iter::once(main).chain(others).collect()
    }

    /// Whether `domain` is one of the hosted domains (not a service of one).
    pub fn is_hosted(&self, domain: &str) -> bool {
        domain == self.domain || self.hosts.contains_key(domain)
    }

    /// Hosted domains and their services must be distinct, valid domains written in their
    /// normal form (lower case, U-labels), since addresses are compared as strings.
    /// Admins are bare JIDs of accounts: anything else would silently grant nobody.
    fn validate_admins(&self) -> Result<(), ConfigError> {
        let host_admins = self
            .hosts
            .iter()
            .flat_map(|(domain, host)| host.admins.iter().map(move |a| (Some(domain), a)));
        let all = self.admins.iter().map(|a| (None, a)).chain(host_admins);
        for (domain, admin) in all {
            let jid = jid::BareJid::new(admin)
                .ok()
                .filter(|jid| jid.node().is_some() && jid.as_str() == admin);
            let Some(jid) = jid else {
                return Err(ConfigError::Invalid(format!(
                    "admin '{admin}' is not a bare JID in normal form (user@domain)"
                )));
            };
            if let Some(domain) = domain {
                if jid.domain().as_str() != domain.as_str() {
                    return Err(ConfigError::Invalid(format!(
                        "admin '{admin}' of {domain} is not an account of {domain}"
                    )));
                }
            }
        }
        Ok(())
    }

    fn validate_hosts(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::BTreeSet::new();
        for host in self.hosted_domains() {
            let upload = (self.upload.enabled && self.http.enabled)
                .then(|| ("upload domain", self.upload.service_domain(&host.domain)));
            let names = std::iter::once(("domain", host.domain.clone()))
                .chain(host.muc_domain.clone().map(|muc| ("MUC domain", muc)))
                .chain(upload);
            for (what, name) in names {
                let normal = crate::address::parse(&name)
                    .ok()
                    .filter(|j| j.node().is_none() && j.resource().is_none())
                    .map(|j| j.to_string());
                match normal {
                    Some(normal) if normal == name => {}
                    Some(normal) => {
                        return Err(ConfigError::Invalid(format!(
                            "{what} '{name}' must be written as '{normal}'"
                        )))
                    }
                    None => {
                        return Err(ConfigError::Invalid(format!(
                            "{what} '{name}' is not a valid XMPP domain"
                        )))
                    }
                }
                if !seen.insert(name.clone()) {
                    return Err(ConfigError::Invalid(format!(
                        "'{name}' is named twice among the hosted domains and their services"
                    )));
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `corvid=debug`; `RUST_LOG` overrides it.
    pub level: String,
    /// `text` (coloured only on a terminal) or `json` (one object per line, for log shippers).
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `sqlite://./data/corvid.db` (embedded default) or `postgres://user@host/db`.
    pub url: String,
    /// Milliseconds one storage operation waits for the database to become usable: a
    /// PostgreSQL connection (reconnecting while the database restarts) or SQLite's write
    /// lock held by another process. Past it the operation fails and the client gets an error
    /// of type `wait` (a login `<temporary-auth-failure/>`).
    pub timeout_ms: u64,
}

impl StorageConfig {
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.timeout_ms.max(1))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Generate a self-signed certificate for the domain when `cert`/`key` do not exist.
    pub generate_self_signed: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct C2sConfig {
    pub bind: IpAddr,
    /// TCP with STARTTLS (RFC 6120). 0 picks an ephemeral port.
    pub port: u16,
    /// Direct TLS (XEP-0368) listener on `direct_tls_port`.
    pub direct_tls: bool,
    pub direct_tls_port: u16,
    /// Refuse SASL until STARTTLS has been negotiated.
    pub require_encryption: bool,
    /// Largest stanza accepted, in bytes; larger ones close the stream with `<policy-violation/>`.
    pub max_stanza_size: usize,
    /// Deepest element nesting accepted (the stanza is level 1); deeper closes the stream with
    /// `<policy-violation/>` before anything is built.
    pub max_depth: usize,
    /// Attributes (namespace declarations included) accepted on one element.
    pub max_attributes: usize,
    /// `xmlns` declarations accepted on one element.
    pub max_namespace_declarations: usize,
    /// Seconds a connection may take from TCP accept to a bound resource, on every listener:
    /// the TLS handshake of direct TLS and HTTPS and the HTTP request before a WebSocket
    /// upgrade count too.
    pub negotiation_timeout_secs: u64,
    /// SO_RCVBUF of the client listeners' sockets, in bytes; 0 leaves the size to the kernel,
    /// which grows it with each connection's traffic (setting it turns that off).
    pub receive_buffer_bytes: u32,
    /// A bound stream from which nothing was read for this many seconds is asked for a sign
    /// of life (an SM `<r/>` with stream management, a XEP-0199 ping otherwise); 0: never.
    pub idle_ping_secs: u64,
    /// Seconds the client has to answer that; a silent stream is then closed, or parked for
    /// resumption when stream management allows it.
    pub idle_timeout_secs: u64,
}

/// Server-to-server federation (RFC 6120 §13, XEP-0178, XEP-0220, XEP-0288, XEP-0368).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S2sConfig {
    /// Listen for other servers and connect to them; off, stanzas for other domains are
    /// bounced with `remote-server-not-found`.
    pub enabled: bool,
    pub bind: IpAddr,
    /// STARTTLS listener (RFC 6120). 0 picks an ephemeral port.
    pub port: u16,
    /// Direct TLS listener (XEP-0368, ALPN `xmpp-server`) on `direct_tls_port`.
    pub direct_tls: bool,
    pub direct_tls_port: u16,
    /// TLS on every s2s stream, both directions (RFC 7590).
    pub require_encryption: bool,
    /// Every remote domain must authenticate with a certificate (SASL EXTERNAL, XEP-0178);
    /// off, dialback (XEP-0220) is accepted when its certificate does not verify. Prosody's
    /// `s2s_secure_auth`.
    pub require_certificates: bool,
    /// Domains that must authenticate with a certificate even when `require_certificates` is off.
    pub secure_domains: Vec<String>,
    /// Domains that may use dialback even when `require_certificates` is on.
    pub insecure_domains: Vec<String>,
    /// PEM file of further trust roots for remote servers' certificates (a private CA), besides
    /// the system's store and the built-in Mozilla set.
    pub ca_file: Option<PathBuf>,
    /// Where to reach a domain without asking DNS: `"example.net" = "10.0.0.7:5269"` (STARTTLS),
    /// or `"tls://10.0.0.7:5270"` for direct TLS. For private deployments and tests.
    pub routes: BTreeMap<String, String>,
    /// DNS servers to ask (`"127.0.0.1:53"`); empty uses the system's (`/etc/resolv.conf`).
    /// `/etc/hosts` is read either way.
    pub nameservers: Vec<std::net::SocketAddr>,
    /// A DNS lookup that takes longer fails (and the stanzas waiting on it are bounced).
    pub dns_timeout_ms: u64,
    /// Seconds to open the TCP connection to one address before trying the next.
    pub connect_timeout_secs: u64,
    /// Seconds from TCP connect (or accept) to an authenticated stream.
    pub negotiation_timeout_secs: u64,
    /// An outbound connection that carried nothing this long is closed (reopened on demand).
    pub idle_timeout_secs: u64,
    /// Seconds between whitespace keepalives on an idle stream.
    pub keepalive_secs: u64,
    /// Largest stanza accepted from another server, in bytes (advertised with XEP-0478).
    pub max_stanza_size: usize,
    /// Stanzas held for a remote domain while its link is being set up or is busy writing;
    /// more are bounced with `resource-constraint`.
    pub queue_limit: usize,
    /// Inbound streams accepted from one remote domain at a time.
    pub max_connections_per_domain: u32,
    /// s2s connections (in and out) at a time.
    pub max_connections: u32,
    /// After a failed connection to a domain, seconds during which new stanzas for it are
    /// bounced at once rather than retried; doubles with each further failure, up to 16 times.
    pub retry_after_secs: u64,
}

impl Default for S2sConfig {
    fn default() -> Self {
        S2sConfig {
            enabled: true,
            bind: IpAddr::from([0, 0, 0, 0]),
            port: 5269,
            direct_tls: true,
            direct_tls_port: 5270,
            require_encryption: true,
            require_certificates: false,
            secure_domains: Vec::new(),
            insecure_domains: Vec::new(),
            ca_file: None,
            routes: BTreeMap::new(),
            nameservers: Vec::new(),
            dns_timeout_ms: 5000,
            connect_timeout_secs: 10,
            negotiation_timeout_secs: 30,
            idle_timeout_secs: 600,
            keepalive_secs: 60,
            max_stanza_size: 512 * 1024,
            queue_limit: 10_000,
            max_connections_per_domain: 4,
            max_connections: 10_000,
            retry_after_secs: 10,
        }
    }
}

impl S2sConfig {
    /// Whether `domain` must authenticate with a certificate (no dialback).
    pub fn certificate_required(&self, domain: &str) -> bool {
        let listed = |list: &[String]| list.iter().any(|d| d.eq_ignore_ascii_case(domain));
        if self.require_certificates {
            !listed(&self.insecure_domains)
        } else {
            listed(&self.secure_domains)
        }
    }

    /// What one element read from another server may cost.
    pub fn xml_limits(&self) -> XmlLimits {
        XmlLimits::with_max_size(self.max_stanza_size)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// The HTTP listeners at all: WebSocket (RFC 7395) at `/xmpp-websocket` and host-meta
    /// (XEP-0156) over plain HTTP, and over HTTPS when `tls_enabled`. Off, neither is opened.
    pub enabled: bool,
    pub bind: IpAddr,
    pub port: u16,
    /// The same over HTTPS (wss://), with the server certificate (only with `enabled`).
    pub tls_enabled: bool,
    pub tls_port: u16,
    /// Treat plain-HTTP WebSocket connections from loopback addresses as encrypted: a
    /// TLS-terminating proxy on the same host, or a developer's browser on localhost.
    pub loopback_is_secure: bool,
    /// The WebSocket URL announced in host-meta; wss://<domain>:<tls_port> when unset (or
    /// ws://<domain>:<port> with HTTPS disabled).
    pub websocket_url: Option<String>,
    /// Treat every plain-HTTP WebSocket connection as encrypted (a TLS-terminating proxy on
    /// another host is in front). Otherwise only wss:// and loopback count as encrypted, and
    /// authentication over an unencrypted WebSocket is refused when `c2s.require_encryption`.
    pub websocket_is_secure: bool,
    /// The public base URL of these listeners (`https://chat.example.org`, a reverse proxy's
    /// address), used in invite links. Unset, links name the domain and the HTTPS port (or
    /// the HTTP port with HTTPS off), and the invite page uses the request's `Host`.
    pub public_url: Option<String>,
    /// The BOSH URL announced in host-meta (XEP-0156); https://<domain>:<tls_port>/http-bind
    /// when unset (or http://<domain>:<port> with HTTPS disabled).
    pub bosh_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// PBKDF2 iterations for newly stored SCRAM credentials (RFC 7677 asks for at least 4096).
    pub scram_iterations: u32,
    /// Offer SASL PLAIN (only ever on encrypted streams, unless `allow_plain_without_tls`).
    pub allow_plain: bool,
    /// Benchmarks only: offer PLAIN on unencrypted TCP too.
    pub allow_plain_without_tls: bool,
    /// Failed logins of an address, or of an account, in the current window before every
    /// answer to it — success and failure alike, so timing reveals nothing — is delayed.
    pub failures_before_delay: u32,
    /// The first delay, in milliseconds; it doubles with each further failure.
    pub throttle_delay_ms: u64,
    /// The longest delay, in milliseconds. It is also the longest anyone waits for an
    /// account's turn (`max_concurrent_per_account`).
    pub throttle_max_delay_ms: u64,
    /// SASL exchanges one address (an IPv4 address or an IPv6 /64) may have in progress; one
    /// more is answered `<temporary-auth-failure/>` without a check. Carrier-grade NATs put
    /// many users behind one address, and behind a reverse proxy every WebSocket client has
    /// the proxy's address: raise it (and `max_failures_per_window`) there.
    pub max_concurrent_per_address: u32,
    /// Failed logins of one address per window. An address with no budget left (failures
    /// plus exchanges in progress) is answered `<temporary-auth-failure/>` without a check
    /// until the window closes, which is `window_secs` after the failure that used the budget
    /// up; a success does not give the budget back.
    pub max_failures_per_window: u32,
    /// The window failures are counted in, in seconds from the first failure (restarted when
    /// a limit is reached), for addresses and accounts alike.
    pub window_secs: u64,
    /// Verdicts given at once for one account: logins on it from many addresses are answered
    /// one after another (each waiting at most `throttle_max_delay_ms` for its turn).
    pub max_concurrent_per_account: u32,
    /// Failed logins on one account per window (from anywhere) from which on the addresses
    /// that failed on it are refused for it; other addresses still log in, so an attacker
    /// cannot lock the owner out. See `stream::throttle`.
    pub max_failures_per_account: u32,
}

impl AuthConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_concurrent_per_address == 0
            || self.max_failures_per_window == 0
            || self.max_concurrent_per_account == 0
            || self.max_failures_per_account == 0
            || self.window_secs == 0
        {
            return Err(ConfigError::Invalid(
                "auth.max_concurrent_per_address, max_failures_per_window, \
                 max_concurrent_per_account, max_failures_per_account and window_secs must be \
                 greater than 0"
                    .into(),
            ));
        }
        if self.throttle_max_delay_ms < self.throttle_delay_ms {
            return Err(ConfigError::Invalid(
                "auth.throttle_max_delay_ms must be at least auth.throttle_delay_ms".into(),
            ));
        }
        Ok(())
    }
}

/// XEP-0484 FAST: tokens that clients trade a password login for, to log in again in one
/// round trip (SASL2 only).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FastConfig {
    /// Offer the HT-SHA-256 token mechanisms and issue tokens.
    pub enabled: bool,
    /// How long an issued token stays valid. A login with a token in the second half of its
    /// life gets a fresh one; a device offline for longer must log in with its password.
    pub token_lifetime_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Offline messages kept per user (XEP-0160); beyond it senders get `<service-unavailable/>`.
    pub offline_messages_per_user: u32,
    /// Stanzas queued for one session before it is considered stalled and disconnected.
    pub session_queue: usize,
    /// Roster items per user (RFC 6121 §2.3.3); a roster set beyond it gets `<not-allowed/>`.
    /// Pending inbound subscription requests count too, so strangers cannot fill storage.
    pub roster_items: u32,
    /// JIDs one user may block (XEP-0191). A `<block/>` that would go past it is refused as a
    /// whole with `<not-acceptable/>` (type modify: unblock something or block less): it is a
    /// fixed policy, not the temporary shortage `<resource-constraint/>` would suggest.
    pub blocklist_items: u32,
    /// Largest vCard (XEP-0054) a user may store, in bytes of serialized XML. Larger sets are
    /// refused with `<not-acceptable/>` (type modify) and the old vCard is kept. 64 KiB holds
    /// every text field plus an avatar of ~45 KiB after base64, well above what XEP-0153
    /// clients publish, while keeping vCard results a quarter of the default stanza limit.
    pub vcard_max_bytes: usize,
    /// Resources one account may have bound at once; 0 = no limit. A bind beyond it is refused
    /// with `<resource-constraint/>` (type wait, RFC 6120 §7.6.2.1). Sessions detached for
    /// XEP-0198 resumption count: each still holds its resource, its queue and its unacked
    /// stanzas until it times out, so not counting them would let a client that reconnects
    /// without resuming pile up state the cap is meant to bound. Resuming one, or binding a
    /// resource that replaces a session (RFC 6120 §7.7.2.2), adds no resource and is allowed.
    pub max_resources_per_account: usize,
    /// Connections one address (an IPv4 address or an IPv6 /64) may hold at once, on all
    /// listeners together; 0 = no limit. One more is refused at once (see
    /// `listen::admission`). Carrier-grade NAT puts hundreds of subscribers behind one IPv4
    /// address, but few of them use XMPP at the same moment, and each client holds one or two
    /// connections: 32 leaves room for that while one host cannot hold thousands of sockets.
    /// Behind a reverse proxy every HTTP client has the proxy's address: raise it there.
    pub max_connections_per_address: u32,
    /// New connections per second one address may open, on average (a token bucket refilled
    /// at this rate); 0 = no limit.
    pub connection_rate_per_address: u32,
    /// New connections one address may open at once before the rate applies (the bucket's
    /// size, at least 1 when there is a rate): a whole NAT's clients reconnecting after a
    /// network change.
    pub connection_burst_per_address: u32,
    /// Connections that have not bound a resource yet, from everyone together; 0 = no limit.
    /// These cost the most for the least (TLS and SASL state, no session), and a client that
    /// binds leaves the count at once.
    pub max_unauthenticated_connections: u32,
    /// Subscription requests (`<presence type='subscribe'/>` to a contact) one account may
    /// send per minute, on average (a token bucket refilled at this rate); 0 = no limit.
    /// One more is refused with `<policy-violation/>` (type wait) and neither delivered nor
    /// stored. Answers (`subscribed`, `unsubscribe`, `unsubscribed`) and pre-approvals are
    /// never limited: they only concern people who asked first or are already contacts.
    pub subscription_requests_per_minute: u32,
    /// Subscription requests one account may send at once before the rate applies (the
    /// bucket's size, at least 1 when there is a rate).
    pub subscription_request_burst: u32,
    /// Sessions of one account that may wait detached for XEP-0198 resumption at once; 0 = no
    /// limit. When one more detaches, the one that detached first ends as if its resumption
    /// timed out (contacts see it go, its queue goes to offline storage).
    pub max_detached_sessions_per_account: usize,
    /// Bytes per second a bound session may send, on average (a token bucket refilled at this
    /// rate, see `stream::shaper`); 0 = no limit. Past it the session is read more slowly, not
    /// disconnected: TCP holds the rest back at the client. 64 KiB/s is sixty times what chat
    /// needs and still lets a client upload an avatar or catch up on history in seconds.
    pub bytes_rate_per_session: u32,
    /// Bytes a bound session may send at once before the rate applies: one stanza of the
    /// default `c2s.max_stanza_size`, so the largest stanza allowed is never slowed.
    pub bytes_burst_per_session: u32,
    /// The byte rate of a connection until it binds a resource (or resumes a session); 0 = no
    /// limit. Logging in takes a few kilobytes, and until then nobody knows who is sending:
    /// a lower rate bounds what `max_unauthenticated_connections` strangers can make the
    /// server parse.
    pub bytes_rate_before_bind: u32,
    /// Bytes a connection may send at once before it binds.
    pub bytes_burst_before_bind: u32,
    /// Stanzas (and Stream Management or CSI elements) per second a bound session may send, on
    /// average; 0 = no limit. Past it the session is read more slowly, not disconnected.
    pub stanza_rate_per_session: u32,
    /// Stanzas a bound session may send at once before the rate applies: a login that joins
    /// hundreds of rooms and answers their disco queries.
    pub stanza_burst_per_session: u32,
}

/// Personal eventing (XEP-0163) on every account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PepConfig {
    /// Nodes one account may hold; publishing to one more is refused with `<policy-violation/>`.
    pub max_nodes_per_user: u32,
    /// The most items a node may keep (what `pubsub#max_items` = `max` means).
    pub max_items_per_node: u32,
    /// `pubsub#max_items` of a node created without saying (XEP-0163 nodes hold one item).
    pub default_max_items: u32,
    /// Largest item payload accepted, in bytes of XML; larger ones get `<payload-too-big/>`.
    pub max_payload_size: usize,
    /// Verified XEP-0115 capabilities (ver -> interests) kept in memory, shared by all users.
    pub caps_cache_size: usize,
    /// Seconds to wait for a client's answer to the server's caps disco#info query.
    pub caps_query_timeout_secs: u64,
}

/// XEP-0198 Stream Management: acknowledgements and resumption of broken connections.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamManagementConfig {
    /// Seconds a session whose connection broke stays bound (presence kept, stanzas queued)
    /// for its client to resume it; also the most a client asking `<enable max/>` gets. Then
    /// it ends: contacts see it go, queued and unacknowledged messages go to offline storage.
    /// 300 like ejabberd's `resume_timeout` (Prosody waits 600): long enough for a phone to
    /// change networks or come out of a tunnel, short enough that contacts do not see a dead
    /// client online for long. 0 turns resumption off (acks still work).
    pub resume_timeout_secs: u64,
    /// Stanzas written to a client and not yet acknowledged; a client that lets more pile up
    /// is treated like one that stopped reading (its session is detached or ended).
    pub max_unacked: usize,
}

/// The most occupants any room may hold: XEP-0045 rooms on this server are small groups, and
/// every occupant costs one stanza per message, so the fan-out is bounded.
pub const MUC_MAX_OCCUPANTS: u32 = 100;

/// Multi-User Chat (XEP-0045) as an in-process service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MucConfig {
    pub enabled: bool,
    /// The service's domain; `conference.<domain>` when unset.
    pub domain: Option<String>,
    /// Occupants per room (at most `MUC_MAX_OCCUPANTS`); also the largest
    /// `muc#roomconfig_maxusers` an owner may choose.
    pub max_occupants: u32,
    /// Let owners and admins join a full room anyway.
    pub owners_exempt_from_cap: bool,
    /// Groupchat messages each room keeps in memory for history on join.
    pub history_messages: u32,
    /// Rooms that may exist at once on the service.
    pub max_rooms: u32,
    /// Rooms one user may have created that still exist.
    pub max_rooms_per_user: u32,
    /// Affiliations (owner, admin, member, outcast) one room may hold.
    pub max_affiliations_per_room: u32,
    /// Who may create a room by joining it.
    pub room_creation: RoomCreation,
    /// Groupchat messages one occupant may send to a room per second, on average (a token
    /// bucket per occupant and room, dropped when it leaves); 0 = no limit. One more is
    /// answered with `<policy-violation/>` (type wait), and neither broadcast nor archived.
    pub occupant_messages_per_second: u32,
    /// Groupchat messages one occupant may send at once before the rate applies (the
    /// bucket's size, at least 1 when there is a rate).
    pub occupant_message_burst: u32,
}

/// Message archive (XEP-0313) of every account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MamConfig {
    pub enabled: bool,
    /// What is archived for a user who never set preferences: `always`, `roster` or `never`.
    pub default: String,
    /// Messages kept per archive; the oldest beyond it are deleted (0 = no count limit).
    /// 10,000 is weeks to months of an active one-to-one user and a bounded, small cost per
    /// account (a few MB at most), while a new device can still catch up on all of it.
    pub max_messages_per_user: u64,
    /// Messages older than this many days are deleted (0 = kept whatever their age), as
    /// Prosody's `archive_expires_after` and ejabberd's `mod_mam` purge do.
    pub expire_after_days: u32,
    /// Results per page when the client asks for none (RSM `<max/>` absent).
    pub default_page_size: u32,
    /// Largest page: bigger `<max/>` values are clamped. Also kept under a quarter of
    /// `limits.session_queue`, since a page is queued to the session at once.
    pub max_page_size: u32,
    /// Archive records waiting for the writer before archiving senders wait (backpressure);
    /// while storage fails, a full queue refuses archivable messages instead (`resource-constraint`).
    pub queue_size: usize,
    /// Records committed per transaction at most.
    pub batch_size: usize,
}

impl Default for MamConfig {
    fn default() -> Self {
        MamConfig {
            enabled: true,
            default: "always".into(),
            max_messages_per_user: 10_000,
            expire_after_days: 0,
            default_page_size: 50,
            max_page_size: 250,
            queue_size: 16384,
            batch_size: 4096,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomCreation {
    /// Any user of this server.
    LocalUsers,
    /// Nobody: only rooms that already exist (persistent ones) can be joined.
    Nobody,
}

impl MucConfig {
    /// The service domain for a server hosting `domain`.
    pub fn service_domain(&self, domain: &str) -> String {
        self.domain
            .clone()
            .unwrap_or_else(|| format!("conference.{domain}"))
    }
}

impl Default for MucConfig {
    fn default() -> Self {
        MucConfig {
            enabled: true,
            domain: None,
            max_occupants: MUC_MAX_OCCUPANTS,
            owners_exempt_from_cap: false,
            history_messages: 20,
            max_rooms: 10_000,
            max_rooms_per_user: 50,
            max_affiliations_per_room: 1000,
            room_creation: RoomCreation::LocalUsers,
            // Faster than anyone types, counting chat states and markers, which are groupchat
            // messages too; the burst takes a pasted block that a client splits into lines.
            // Every message costs one stanza per occupant, so one flooding occupant of a full
            // room is held to 500 stanzas a second.
            occupant_messages_per_second: 5,
            occupant_message_burst: 10,
        }
    }
}

/// `[control]`: the local socket `corvid ctl` reaches the running server through. Its file
/// permissions are its authentication (only the server's own user, or root, may connect), as
/// with ejabberdctl and prosodyctl's shell.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    pub enabled: bool,
    /// The Unix socket's path; relative paths are beside the configuration file.
    pub socket: PathBuf,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            enabled: true,
            socket: PathBuf::from("./data/corvid.sock"),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            domain: "localhost".into(),
            hosts: BTreeMap::new(),
            log: LogConfig::default(),
            storage: StorageConfig::default(),
            tls: TlsConfig::default(),
            c2s: C2sConfig::default(),
            http: HttpConfig::default(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            pep: PepConfig::default(),
            push: PushConfig::default(),
            muc: MucConfig::default(),
            fast: FastConfig::default(),
            stream_management: StreamManagementConfig::default(),
            mam: MamConfig::default(),
            cluster: ClusterConfig::default(),
            s2s: S2sConfig::default(),
            control: ControlConfig::default(),
            metrics: MetricsConfig::default(),
            admins: Vec::new(),
            adhoc: AdhocConfig::default(),
            registration: RegistrationMode::default(),
            registration_limits: RegistrationLimits::default(),
            allow_user_invites: false,
            invite_expiry_secs: DEFAULT_INVITE_EXPIRY_SECS,
            external_services: Vec::new(),
            components: ComponentsConfig::default(),
            upload: UploadConfig::default(),
            bosh: BoshConfig::default(),
            contact: ContactAddresses::default(),
            outage: OutageStatus::default(),
            private_storage: PrivateStorageConfig::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            url: "sqlite://./data/corvid.db".into(),
            timeout_ms: 10_000,
        }
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: "./certs/localhost.crt".into(),
            key: "./certs/localhost.key".into(),
            generate_self_signed: true,
        }
    }
}

impl Default for FastConfig {
    fn default() -> Self {
        FastConfig {
            enabled: true,
            token_lifetime_secs: 14 * 24 * 3600,
        }
    }
}

impl Default for C2sConfig {
    fn default() -> Self {
        C2sConfig {
            bind: IpAddr::from([0, 0, 0, 0]),
            port: 5222,
            direct_tls: true,
            direct_tls_port: 5223,
            require_encryption: true,
            max_stanza_size: 256 * 1024,
            max_depth: XmlLimits::DEFAULT_MAX_DEPTH,
            max_attributes: XmlLimits::DEFAULT_MAX_ATTRIBUTES,
            max_namespace_declarations: XmlLimits::DEFAULT_MAX_NAMESPACE_DECLARATIONS,
            negotiation_timeout_secs: 30,
            receive_buffer_bytes: 0,
            idle_ping_secs: 300,
            idle_timeout_secs: 60,
        }
    }
}

impl C2sConfig {
    /// What one element read from a client may cost.
    pub fn xml_limits(&self) -> XmlLimits {
        XmlLimits {
            max_stanza_size: self.max_stanza_size,
            max_depth: self.max_depth,
            max_attributes: self.max_attributes,
            max_namespace_declarations: self.max_namespace_declarations,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            bind: IpAddr::from([0, 0, 0, 0]),
            port: 5280,
            tls_enabled: true,
            tls_port: 5281,
            loopback_is_secure: true,
            websocket_url: None,
            websocket_is_secure: false,
            public_url: None,
            bosh_url: None,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            scram_iterations: 4096,
            allow_plain: true,
            allow_plain_without_tls: false,
            failures_before_delay: 3,
            throttle_delay_ms: 250,
            throttle_max_delay_ms: 8000,
            max_concurrent_per_address: 8,
            max_failures_per_window: 20,
            window_secs: 600,
            max_concurrent_per_account: 2,
            max_failures_per_account: 10,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            offline_messages_per_user: 500,
            session_queue: 4096,
            roster_items: 1000,
            blocklist_items: 1000,
            vcard_max_bytes: 64 * 1024,
            // What ejabberd's shipped configuration sets for max_user_sessions.
            max_resources_per_account: 10,
            max_connections_per_address: 32,
            connection_rate_per_address: 4,
            connection_burst_per_address: 32,
            max_unauthenticated_connections: 1000,
            // A minute's worth at once: adding a team or importing a roster is not cut short,
            // while a compromised account spamming strangers gets one request every two
            // seconds, which its victims' servers and users can keep up with.
            subscription_requests_per_minute: 30,
            subscription_request_burst: 30,
            // A phone, a laptop and a tablet each waiting to resume. A client that reconnects
            // without resuming leaves one more behind each time; beyond three that is a
            // client bug piling up queues, not devices.
            max_detached_sessions_per_account: 3,
            bytes_rate_per_session: 64 * 1024,
            bytes_burst_per_session: 256 * 1024,
            bytes_rate_before_bind: 8 * 1024,
            bytes_burst_before_bind: 32 * 1024,
            stanza_rate_per_session: 50,
            stanza_burst_per_session: 500,
        }
    }
}

/// Push notifications (XEP-0357) to the app servers of mobile clients.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// Registrations kept per account; enabling one more drops the oldest (a reinstalled app
    /// leaves its old node behind).
    pub max_registrations_per_user: u32,
    /// Put the sender's JID in the notification's summary. Off by default, as in Prosody: the
    /// app server (and whatever push network it uses) learns who writes to whom otherwise.
    pub include_sender: bool,
    /// Put the message body in the summary. Off by default for the same reason, and because
    /// end-to-end encrypted messages have nothing useful there anyway.
    pub include_body: bool,
    /// Seconds to wait for the app server's answer before giving up on a notification.
    pub timeout_secs: u64,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            max_registrations_per_user: 16,
            include_sender: false,
            include_body: false,
            timeout_secs: 30,
        }
    }
}

impl Default for PepConfig {
    fn default() -> Self {
        PepConfig {
            max_nodes_per_user: 256,
            max_items_per_node: 256,
            default_max_items: 1,
            max_payload_size: 128 * 1024,
            caps_cache_size: 1000,
            caps_query_timeout_secs: 10,
        }
    }
}

impl Default for StreamManagementConfig {
    fn default() -> Self {
        StreamManagementConfig {
            resume_timeout_secs: 300,
            max_unacked: 4096,
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            config.resolve_paths(dir);
        }
        config.validate()?;
        Ok(config)
    }

    /// Relative paths in a configuration file name places beside the file, wherever corvid is
    /// started from: `corvid -c /etc/corvid/corvid.toml user add …` run from another folder
    /// must open the database the server opens.
    fn resolve_paths(&mut self, dir: &Path) {
        let beside = |path: &mut PathBuf| {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        };
        beside(&mut self.tls.cert);
        beside(&mut self.tls.key);
        for host in self.hosts.values_mut() {
            host.cert.as_mut().map(beside);
            host.key.as_mut().map(beside);
        }
        self.s2s.ca_file.as_mut().map(beside);
        beside(&mut self.control.socket);
        beside(&mut self.upload.directory);
        self.storage.url = sqlite_url_beside(&self.storage.url, dir);
    }

    /// Checks what the types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let domain = jid::BareJid::new(&self.domain)
            .ok()
            .filter(|j| j.node().is_none());
        if domain.is_none() || self.domain.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "domain '{}' is not a valid XMPP domain",
                self.domain
            )));
        }
        let url = &self.storage.url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres:")
            || url.starts_with("postgresql:"))
        {
            return Err(ConfigError::Invalid(format!(
                "storage.url '{url}' must start with sqlite:// or postgres://"
            )));
        }
        self.cluster.validate(url)?;
        if self.s2s.max_stanza_size < 10_000 {
            return Err(ConfigError::Invalid(
                "s2s.max_stanza_size must be at least 10000 bytes (RFC 6120 §13.12)".into(),
            ));
        }
        if self.s2s.dns_timeout_ms == 0 || self.s2s.queue_limit == 0 {
            return Err(ConfigError::Invalid(
                "s2s.dns_timeout_ms and s2s.queue_limit must be above 0".into(),
            ));
        }
        if let Some(ca) = self.s2s.ca_file.as_deref().filter(|ca| !ca.exists()) {
            return Err(ConfigError::Invalid(format!(
                "s2s.ca_file {} does not exist",
                ca.display()
            )));
        }
        if self.c2s.max_stanza_size < 10_000 {
            return Err(ConfigError::Invalid(
                "c2s.max_stanza_size must be at least 10000 bytes (RFC 6120 §13.12)".into(),
            ));
        }
        // Below these a real client's payloads would be refused (a MAM result with a forwarded
        // message is about a dozen levels deep; the stream header declares two namespaces and
        // carries five attributes); far above them a recursive walk of the tree is at risk.
        if !(16..=256).contains(&self.c2s.max_depth) {
            return Err(ConfigError::Invalid(
                "c2s.max_depth must be between 16 and 256".into(),
            ));
        }
        if !(16..=1024).contains(&self.c2s.max_attributes) {
            return Err(ConfigError::Invalid(
                "c2s.max_attributes must be between 16 and 1024".into(),
            ));
        }
        if !(4..=256).contains(&self.c2s.max_namespace_declarations) {
            return Err(ConfigError::Invalid(
                "c2s.max_namespace_declarations must be between 4 and 256".into(),
            ));
        }
        if self.c2s.idle_ping_secs > 0 && self.c2s.idle_timeout_secs == 0 {
            return Err(ConfigError::Invalid(
                "c2s.idle_timeout_secs must be greater than 0 when c2s.idle_ping_secs is set"
                    .into(),
            ));
        }
        if self.c2s.negotiation_timeout_secs == 0 {
            return Err(ConfigError::Invalid(
                "c2s.negotiation_timeout_secs must be greater than 0".into(),
            ));
        }
        if self.auth.scram_iterations < 4096 {
            return Err(ConfigError::Invalid(
                "auth.scram_iterations must be at least 4096 (RFC 7677)".into(),
            ));
        }
        // Beyond this, expiry times no longer fit the stored milliseconds.
        if !(1..=100 * 365 * 24 * 3600).contains(&self.fast.token_lifetime_secs) {
            return Err(ConfigError::Invalid(
                "fast.token_lifetime_secs must be between 1 second and 100 years".into(),
            ));
        }
        if self.limits.session_queue < 16 {
            return Err(ConfigError::Invalid(
                "limits.session_queue must be at least 16".into(),
            ));
        }
        let limits = &self.limits;
        for (rate, burst, rate_name, burst_name) in [
            (
                limits.connection_rate_per_address,
                limits.connection_burst_per_address,
                "connection_rate_per_address",
                "connection_burst_per_address",
            ),
            (
                limits.subscription_requests_per_minute,
                limits.subscription_request_burst,
                "subscription_requests_per_minute",
                "subscription_request_burst",
            ),
            (
                limits.bytes_rate_per_session,
                limits.bytes_burst_per_session,
                "bytes_rate_per_session",
                "bytes_burst_per_session",
            ),
            (
                limits.bytes_rate_before_bind,
                limits.bytes_burst_before_bind,
                "bytes_rate_before_bind",
                "bytes_burst_before_bind",
            ),
            (
                limits.stanza_rate_per_session,
                limits.stanza_burst_per_session,
                "stanza_rate_per_session",
                "stanza_burst_per_session",
            ),
        ] {
            if rate > 0 && burst == 0 {
                return Err(ConfigError::Invalid(format!(
                    "limits.{burst_name} must be at least 1 when limits.{rate_name} is set"
                )));
            }
        }
        if self.stream_management.max_unacked < 16 {
            return Err(ConfigError::Invalid(
                "stream_management.max_unacked must be at least 16".into(),
            ));
        }
        let pep = &self.pep;
        if pep.max_items_per_node == 0
            || pep.default_max_items == 0
            || pep.default_max_items > pep.max_items_per_node
        {
            return Err(ConfigError::Invalid(
                "pep.default_max_items must be between 1 and pep.max_items_per_node".into(),
            ));
        }
        if pep.max_payload_size < 1024 || pep.caps_cache_size == 0 {
            return Err(ConfigError::Invalid(
                "pep.max_payload_size must be at least 1024 and pep.caps_cache_size at least 1"
                    .into(),
            ));
        }
        if pep.caps_query_timeout_secs == 0 {
            return Err(ConfigError::Invalid(
                "pep.caps_query_timeout_secs must be greater than 0".into(),
            ));
        }
        self.validate_muc()?;
        self.validate_hosts()?;
        self.validate_admins()?;
        external_services::validate(&self.external_services)?;
        let served: Vec<String> = (self.hosted_domains().into_iter())
            .flat_map(|host| std::iter::once(host.domain).chain(host.muc_domain))
            .collect();
        self.components.validate(&served)?;
        self.upload.validate()?;
        self.bosh.validate()?;
        if let Some(url) = &self.http.bosh_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::Invalid(format!(
                    "http.bosh_url '{url}' must start with http:// or https://"
                )));
            }
        }
        server_info::validate(self)?;
        self.private_storage.validate()?;
        self.validate_registration()?;
        self.auth.validate()?;
        let mam = &self.mam;
        if !matches!(mam.default.as_str(), "always" | "roster" | "never") {
            return Err(ConfigError::Invalid(
                "mam.default must be one of always, roster, never".into(),
            ));
        }
        if mam.default_page_size == 0
            || mam.max_page_size < mam.default_page_size
            || mam.queue_size == 0
            || mam.batch_size == 0
        {
            return Err(ConfigError::Invalid(
                "mam.default_page_size must be at least 1 and at most mam.max_page_size; \
                 mam.queue_size and mam.batch_size at least 1"
                    .into(),
            ));
        }
        if let Some(url) = &self.http.websocket_url {
            if !(url.starts_with("ws://") || url.starts_with("wss://")) {
                return Err(ConfigError::Invalid(format!(
                    "http.websocket_url '{url}' must start with ws:// or wss://"
                )));
            }
        }
        Ok(())
    }

    fn validate_muc(&self) -> Result<(), ConfigError> {
        let muc = &self.muc;
        if !(1..=MUC_MAX_OCCUPANTS).contains(&muc.max_occupants) {
            return Err(ConfigError::Invalid(format!(
                "muc.max_occupants must be between 1 and {MUC_MAX_OCCUPANTS}"
            )));
        }
        if muc.history_messages > 1000 || muc.max_rooms == 0 || muc.max_rooms_per_user == 0 {
            return Err(ConfigError::Invalid(
                "muc.history_messages must be at most 1000, muc.max_rooms and \
                 muc.max_rooms_per_user at least 1"
                    .into(),
            ));
        }
        if muc.occupant_messages_per_second > 0 && muc.occupant_message_burst == 0 {
            return Err(ConfigError::Invalid(
                "muc.occupant_message_burst must be at least 1 when \
                 muc.occupant_messages_per_second is set"
                    .into(),
            ));
        }
        if muc.max_affiliations_per_room == 0 {
            return Err(ConfigError::Invalid(
                "muc.max_affiliations_per_room must be at least 1".into(),
            ));
        }
        let service = muc.service_domain(&self.domain);
        let valid = jid::BareJid::new(&service)
            .ok()
            .filter(|j| j.node().is_none())
            .is_some();
        if !valid || service == self.domain {
            return Err(ConfigError::Invalid(format!(
                "muc.domain '{service}' must be a valid domain other than the server's"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn further_hosts_take_their_own_certificate_and_muc_service_by_default() {
        let config = Config::parse(
            "domain = 'a.example'\n[tls]\ncert = '/etc/corvid/a.crt'\nkey = '/etc/corvid/a.key'\n\
             [hosts.'b.example']\n[hosts.'c.example']\ncert = '/x/c.pem'\nmuc_domain = 'rooms.c.example'\n",
            Path::new("t.toml"),
        )
        .expect("valid");
        let hosts = config.hosted_domains();
        let names: Vec<_> = hosts.iter().map(|h| h.domain.as_str()).collect();
        assert_eq!(names, ["a.example", "b.example", "c.example"]);
        assert_eq!(hosts[1].tls.cert, Path::new("/etc/corvid/b.example.crt"));
        assert_eq!(hosts[1].tls.key, Path::new("/etc/corvid/b.example.key"));
        assert_eq!(hosts[1].muc_domain.as_deref(), Some("conference.b.example"));
        assert_eq!(hosts[2].tls.cert, Path::new("/x/c.pem"));
        assert_eq!(hosts[2].muc_domain.as_deref(), Some("rooms.c.example"));
        assert!(config.is_hosted("b.example"));
        assert!(!config.is_hosted("conference.b.example"));
    }

    #[test]
    fn relative_paths_are_beside_the_configuration_file() {
        let text = "[storage]\nurl = 'sqlite://./data/corvid.db?mode=rwc'\n\
                    [tls]\ncert = 'certs/a.crt'\nkey = '/abs/a.key'\n";
        let config = Config::parse(text, Path::new("/etc/corvid/corvid.toml")).expect("parses");
        assert_eq!(
            config.storage.url,
            "sqlite:///etc/corvid/./data/corvid.db?mode=rwc"
        );
        assert_eq!(config.tls.cert, Path::new("/etc/corvid/certs/a.crt"));
        assert_eq!(config.tls.key, Path::new("/abs/a.key"));
        for (url, expected) in [
            ("sqlite:data.db", "sqlite:/etc/corvid/data.db"),
            ("sqlite:///var/lib/c.db", "sqlite:///var/lib/c.db"),
            ("sqlite::memory:", "sqlite::memory:"),
            ("postgres://u@h/db", "postgres://u@h/db"),
        ] {
            assert_eq!(sqlite_url_beside(url, Path::new("/etc/corvid")), expected);
        }
    }

    #[test]
    fn hosted_domains_must_be_distinct_and_in_normal_form() {
        for (text, complaint) in [
            ("[hosts.'B.example']", "must be written as 'b.example'"),
            ("[hosts.'conference.localhost']", "named twice"),
            (
                "[hosts.'b.example']\nmuc_domain = 'localhost'",
                "named twice",
            ),
            ("[hosts.'a b']", "not a valid XMPP domain"),
        ] {
            let err = Config::parse(text, Path::new("t.toml")).expect_err(text);
            assert!(err.to_string().contains(complaint), "{text}: {err}");
        }
    }

    #[test]
    fn example_file_parses_and_matches_defaults() {
        let text = include_str!("../corvid.toml");
        let config = Config::parse(text, Path::new("corvid.toml")).expect("example parses");
        assert_eq!(config.domain, "localhost");
        assert_eq!(config.c2s.port, 5222);
        assert_eq!(config.c2s.max_stanza_size, 256 * 1024);
        let defaults = LimitsConfig::default();
        let admission = |l: &LimitsConfig| {
            (
                l.max_connections_per_address,
                l.connection_rate_per_address,
                l.connection_burst_per_address,
                l.max_unauthenticated_connections,
            )
        };
        assert_eq!(admission(&config.limits), admission(&defaults));
        let shaping = |l: &LimitsConfig| {
            (
                l.bytes_rate_per_session,
                l.bytes_burst_per_session,
                l.bytes_rate_before_bind,
                l.bytes_burst_before_bind,
                l.stanza_rate_per_session,
                l.stanza_burst_per_session,
            )
        };
        assert_eq!(shaping(&config.limits), shaping(&defaults));
    }

    #[test]
    fn a_session_rate_needs_a_burst() {
        for (rate, burst) in [
            ("bytes_rate_per_session", "bytes_burst_per_session"),
            ("bytes_rate_before_bind", "bytes_burst_before_bind"),
            ("stanza_rate_per_session", "stanza_burst_per_session"),
        ] {
            let text = format!("[limits]\n{rate} = 10\n{burst} = 0\n");
            let err = Config::parse(&text, Path::new("c.toml")).unwrap_err();
            assert!(err.to_string().contains(burst), "{err}");
            let text = format!("[limits]\n{rate} = 0\n{burst} = 0\n");
            assert!(Config::parse(&text, Path::new("c.toml")).is_ok());
        }
    }

    #[test]
    fn a_connection_rate_needs_a_burst() {
        let text = "[limits]\nconnection_rate_per_address = 2\nconnection_burst_per_address = 0\n";
        let err = Config::parse(text, Path::new("c.toml")).unwrap_err();
        assert!(
            err.to_string().contains("connection_burst_per_address"),
            "{err}"
        );
        let text = "[limits]\nconnection_rate_per_address = 0\nconnection_burst_per_address = 0\n";
        assert!(Config::parse(text, Path::new("c.toml")).is_ok());
    }

    #[test]
    fn rate_limits_default_as_documented_and_the_bench_turns_them_off() {
        let rates = |c: &Config| {
            (
                c.limits.subscription_requests_per_minute,
                c.limits.subscription_request_burst,
                c.limits.max_detached_sessions_per_account,
                c.muc.occupant_messages_per_second,
                c.muc.occupant_message_burst,
            )
        };
        let example = Config::parse(include_str!("../corvid.toml"), Path::new("corvid.toml"))
            .expect("example parses");
        assert_eq!(rates(&example), rates(&Config::default()));
        // The load tool floods rooms and subscribes a subject to every contact at once.
        let bench = Config::parse(
            include_str!("../benches/corvid-bench.toml"),
            Path::new("corvid-bench.toml"),
        )
        .expect("bench config parses");
        assert_eq!(bench.limits.subscription_requests_per_minute, 0);
        assert_eq!(bench.muc.occupant_messages_per_second, 0);
        for (text, key) in [
            (
                "[limits]\nsubscription_request_burst = 0\n",
                "subscription_request_burst",
            ),
            (
                "[muc]\noccupant_message_burst = 0\n",
                "occupant_message_burst",
            ),
        ] {
            let err = Config::parse(text, Path::new("c.toml")).unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn unknown_key_is_reported_with_its_name() {
        let err = Config::parse("domian = 'x'\n", Path::new("c.toml")).unwrap_err();
        assert!(err.to_string().contains("domian"), "{err}");
    }

    #[test]
    fn bad_domain_and_storage_are_rejected() {
        assert!(Config::parse("domain = 'a@b'\n", Path::new("c.toml")).is_err());
        let err = Config::parse("[storage]\nurl = 'mysql://x'\n", Path::new("c.toml")).unwrap_err();
        assert!(err.to_string().contains("storage.url"), "{err}");
    }

    #[test]
    fn fast_token_lifetime_must_be_positive() {
        let err =
            Config::parse("[fast]\ntoken_lifetime_secs = 0\n", Path::new("c.toml")).unwrap_err();
        assert!(
            err.to_string().contains("fast.token_lifetime_secs"),
            "{err}"
        );
        let config = Config::parse("[fast]\nenabled = false\n", Path::new("c.toml")).unwrap();
        assert!(!config.fast.enabled);
        assert_eq!(config.fast.token_lifetime_secs, 14 * 24 * 3600);
    }

    #[test]
    fn auth_throttle_settings_default_as_documented_and_zero_is_rejected() {
        use crate::stream::throttle::Limits;
        let text = include_str!("../corvid.toml");
        let example = Config::parse(text, Path::new("corvid.toml")).expect("example parses");
        assert_eq!(
            Limits::from(&example.auth),
            Limits::from(&AuthConfig::default())
        );
        for key in [
            "max_concurrent_per_address",
            "max_failures_per_window",
            "window_secs",
            "max_concurrent_per_account",
            "max_failures_per_account",
        ] {
            let text = format!("[auth]\n{key} = 0\n");
            let err = Config::parse(&text, Path::new("c.toml")).unwrap_err();
            assert!(err.to_string().contains(key), "{key}: {err}");
        }
        let text = "[auth]\nthrottle_delay_ms = 500\nthrottle_max_delay_ms = 100\n";
        assert!(Config::parse(text, Path::new("c.toml")).is_err());
    }
}
