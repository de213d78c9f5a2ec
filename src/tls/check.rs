//! `corvid check-config`'s certificate checks: for every hosted domain, the certificate the
//! server would serve exists and parses, names the domain and its MUC service (RFC 6125
//! dNSName rules, wildcards included), is within its validity period, and matches its key.
//! Problems are reported with the file and the name involved, before a server starts with
//! them (or a client refuses it).

use std::path::Path;

use rustls::sign::CertifiedKey;
use x509_parser::extensions::GeneralName;

use super::{provider, read_certs, read_key, sni_form};
use crate::config::Config;

/// How soon before expiry a certificate is worth a warning: Let's Encrypt renews 30 days
/// before, so 14 days left means renewal has been failing for two weeks.
const EXPIRY_WARNING_SECS: i64 = 14 * 24 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The server would not start, or clients would refuse the certificate.
    Error,
    /// Works today, needs attention soon.
    Warning,
    /// For information: nothing is wrong.
    Note,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub domain: String,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        };
        write!(f, "{severity}: {}: {}", self.domain, self.message)
    }
}

/// Checks every hosted domain's certificate as of `now` (seconds since the Unix epoch).
pub fn check_certificates(config: &Config, now: i64) -> Vec<Finding> {
    let mut findings = Vec::new();
    for host in config.hosted_domains() {
        let mut report = |severity, message: String| {
            findings.push(Finding {
                severity,
                domain: host.domain.clone(),
                message,
            })
        };
        let (cert_path, key_path) = (&host.tls.cert, &host.tls.key);
        if host.tls.generate_self_signed && !(cert_path.exists() && key_path.exists()) {
            // What `TlsContext::load` does at start: not a problem, but worth knowing.
            report(
                Severity::Note,
                format!(
                    "no certificate at {}: a self-signed one will be generated at start \
                     (clients will not trust it)",
                    cert_path.display()
                ),
            );
            continue;
        }
        let mut names = vec![host.domain.clone()];
        names.extend(host.muc_domain.clone());
        for (severity, message) in check_files(cert_path, key_path, &names, now) {
            report(severity, message);
        }
    }
    findings
}

/// The findings for one certificate and key file that must cover `names`.
fn check_files(
    cert_path: &Path,
    key_path: &Path,
    names: &[String],
    now: i64,
) -> Vec<(Severity, String)> {
    let mut out = Vec::new();
    let chain = match read_certs(cert_path) {
        Ok(chain) => chain,
        Err(e) => return vec![(Severity::Error, e.to_string())],
    };
    let Some(leaf) = chain.first() else {
        return vec![(
            Severity::Error,
            format!("{} holds no certificate", cert_path.display()),
        )];
    };
    let cert = match x509_parser::parse_x509_certificate(leaf.as_ref()) {
        Ok((_, cert)) => cert,
        Err(e) => {
            return vec![(
                Severity::Error,
                format!("{} does not parse as X.509: {e}", cert_path.display()),
            )]
        }
    };
    let dns_names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    for name in names {
        let ascii = sni_form(name).unwrap_or_else(|| name.to_ascii_lowercase());
        if !dns_names.iter().any(|san| covers(san, &ascii)) {
            out.push((
                Severity::Error,
                format!(
                    "{} has no subjectAltName dNSName for {name} (it names: {})",
                    cert_path.display(),
                    if dns_names.is_empty() {
                        "nothing".to_string()
                    } else {
                        dns_names.join(", ")
                    }
                ),
            ));
        }
    }
    let validity = cert.validity();
    let (not_before, not_after) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    if not_after < now {
        out.push((
            Severity::Error,
            format!("{} expired on {}", cert_path.display(), validity.not_after),
        ));
    } else if not_before > now {
        out.push((
            Severity::Error,
            format!(
                "{} is not valid before {}",
                cert_path.display(),
                validity.not_before
            ),
        ));
    } else if not_after - now < EXPIRY_WARNING_SECS {
        out.push((
            Severity::Warning,
            format!(
                "{} expires on {} ({} days left)",
                cert_path.display(),
                validity.not_after,
                (not_after - now) / 86_400
            ),
        ));
    }
    match read_key(key_path) {
        Err(e) => out.push((Severity::Error, e.to_string())),
        Ok(key) => {
            if let Err(e) = CertifiedKey::from_der(chain.clone(), key, &provider()) {
                out.push((
                    Severity::Error,
                    format!(
                        "the key in {} does not match the certificate in {}: {e}",
                        key_path.display(),
                        cert_path.display()
                    ),
                ));
            }
        }
    }
    out
}

/// Whether the dNSName `san` covers `name` (both A-labels, lower case). RFC 6125 §6.4.3: a
/// wildcard stands for exactly one whole left-most label, so `*.example.org` covers
/// `conference.example.org` but neither `example.org` nor `a.b.example.org`.
fn covers(san: &str, name: &str) -> bool {
    let san = san.strip_suffix('.').unwrap_or(san);
    if let Some(parent) = san.strip_prefix("*.") {
        return name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent);
    }
    san == name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(covers("example.org", "example.org"));
        assert!(covers("*.example.org", "conference.example.org"));
        assert!(!covers("*.example.org", "example.org"));
        assert!(!covers("*.example.org", "a.conference.example.org"));
        assert!(!covers("*.example.org", "conference.example.net"));
        assert!(!covers("example.org", "conference.example.org"));
    }

    fn write_cert(dir: &Path, names: &[&str], not_after: Option<(i32, u8, u8)>) -> rcgen::KeyPair {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        if let Some((y, m, d)) = not_after {
            params.not_before = rcgen::date_time_ymd(y - 1, m, d);
            params.not_after = rcgen::date_time_ymd(y, m, d);
        }
        let cert = params.self_signed(&key).expect("cert");
        std::fs::write(dir.join("c.pem"), cert.pem()).expect("write");
        std::fs::write(dir.join("k.pem"), key.serialize_pem()).expect("write");
        key
    }

    fn config(dir: &Path) -> Config {
        let mut config = Config {
            domain: "example.org".into(),
            ..Config::default()
        };
        config.tls.cert = dir.join("c.pem");
        config.tls.key = dir.join("k.pem");
        config.tls.generate_self_signed = false;
        config
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    }

    #[test]
    fn a_good_certificate_has_no_findings() {
        let dir = tempfile::tempdir().expect("dir");
        write_cert(dir.path(), &["example.org", "*.example.org"], None);
        assert_eq!(check_certificates(&config(dir.path()), now()), vec![]);
    }

    #[test]
    fn a_missing_muc_name_an_expiry_and_a_wrong_key_are_reported() {
        let dir = tempfile::tempdir().expect("dir");
        write_cert(dir.path(), &["example.org"], Some((2020, 1, 1)));
        let other = rcgen::KeyPair::generate().expect("key");
        std::fs::write(dir.path().join("k.pem"), other.serialize_pem()).expect("write");
        let findings = check_certificates(&config(dir.path()), now());
        let messages: Vec<String> = findings.iter().map(|f| f.message.clone()).collect();
        assert!(
            findings.iter().all(|f| f.severity == Severity::Error),
            "{findings:?}"
        );
        assert_eq!(findings.len(), 3, "{messages:?}");
        assert!(
            messages[0].contains("conference.example.org"),
            "{messages:?}"
        );
        assert!(messages[1].contains("expired"), "{messages:?}");
        assert!(messages[2].contains("does not match"), "{messages:?}");
    }

    #[test]
    fn soon_expiring_is_a_warning_and_a_generated_one_a_note() {
        let dir = tempfile::tempdir().expect("dir");
        write_cert(
            dir.path(),
            &["example.org", "conference.example.org"],
            Some((2030, 1, 10)),
        );
        // 2030-01-01T00:00:00Z: nine days left.
        let findings = check_certificates(&config(dir.path()), 1_893_456_000);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].severity, Severity::Warning);
        let mut generated = config(&dir.path().join("absent"));
        generated.tls.generate_self_signed = true;
        let findings = check_certificates(&generated, now());
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].severity, Severity::Note);
    }
}
