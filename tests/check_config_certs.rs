//! `corvid check-config` on certificates, as an operator runs it: a good certificate passes; a
//! certificate without the domain's name, an expired one and a key that is not the
//! certificate's are each named, and the exit status is non-zero.

use std::path::Path;
use std::process::{Command, Output};

fn check(config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_corvid"))
        .args(["check-config", "-c", config.to_str().expect("path")])
        .output()
        .expect("corvid runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A certificate for `names` (valid until `until`, a year, when given) and its key, beside a
/// configuration for `example.org` that uses them.
fn setup(dir: &Path, names: &[&str], until: Option<i32>) -> std::path::PathBuf {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("params");
    if let Some(year) = until {
        params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
        params.not_after = rcgen::date_time_ymd(year, 1, 1);
    }
    let cert = params.self_signed(&key).expect("cert");
    std::fs::write(dir.join("cert.pem"), cert.pem()).expect("write");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write");
    let config = dir.join("corvid.toml");
    std::fs::write(
        &config,
        "domain = 'example.org'\n[tls]\ncert = 'cert.pem'\nkey = 'key.pem'\n\
         generate_self_signed = false\n",
    )
    .expect("write");
    config
}

#[test]
fn good_certificates_pass() {
    let dir = tempfile::tempdir().expect("dir");
    let config = setup(dir.path(), &["example.org", "*.example.org"], None);
    let out = check(&config);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("ok"), "{}", text(&out));
}

#[test]
fn a_certificate_without_the_domain_is_an_error() {
    let dir = tempfile::tempdir().expect("dir");
    // The MUC service is covered, the domain itself is not: a wildcard is one label only.
    let config = setup(dir.path(), &["*.example.org"], None);
    let out = check(&config);
    assert!(!out.status.success(), "{}", text(&out));
    let text = text(&out);
    assert!(
        text.contains("error: example.org:")
            && text.contains("no subjectAltName dNSName for example.org"),
        "{text}"
    );
    assert!(!text.contains("for conference.example.org"), "{text}");
}

#[test]
fn an_expired_certificate_is_an_error() {
    let dir = tempfile::tempdir().expect("dir");
    let config = setup(
        dir.path(),
        &["example.org", "conference.example.org"],
        Some(2021),
    );
    let out = check(&config);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("expired on"), "{}", text(&out));
}

#[test]
fn a_key_that_is_not_the_certificates_is_an_error() {
    let dir = tempfile::tempdir().expect("dir");
    let config = setup(dir.path(), &["example.org", "conference.example.org"], None);
    let other = rcgen::KeyPair::generate().expect("key");
    std::fs::write(dir.path().join("key.pem"), other.serialize_pem()).expect("write");
    let out = check(&config);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("does not match the certificate"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_certificate_to_be_generated_is_only_a_note() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("corvid.toml");
    std::fs::write(&config, "domain = 'example.org'\n").expect("write");
    let out = check(&config);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("note: example.org: no certificate"),
        "{}",
        text(&out)
    );
}
