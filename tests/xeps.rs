//! `xeps/xeps.toml` is the one list of what corvid supports. This test keeps it honest: every
//! test it names exists, the disco features it claims are exactly those a running server
//! advertises, and the DOAP file and the README table are generated from it.

mod common;

use std::path::Path;

use common::*;
use serde::Deserialize;

#[derive(Deserialize)]
struct Specs {
    spec: Vec<Spec>,
}

#[derive(Deserialize)]
struct Spec {
    id: String,
    title: String,
    version: Option<String>,
    status: String,
    note: Option<String>,
    module: String,
    #[serde(default)]
    features: Vec<String>,
    tests: Vec<String>,
}

#[derive(Deserialize)]
struct Compliance {
    requirement: Vec<Requirement>,
}

/// One row of XEP-0479's tables, as `xeps/compliance.toml` lists it.
#[derive(Deserialize)]
struct Requirement {
    category: String,
    feature: String,
    providers: Vec<String>,
    /// Why corvid goes without it, when it does.
    reason: Option<String>,
}

fn load() -> Vec<Spec> {
    let text = std::fs::read_to_string(root().join("xeps/xeps.toml")).expect("xeps.toml");
    toml::from_str::<Specs>(&text)
        .expect("xeps.toml parses")
        .spec
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn spec_url(id: &str) -> String {
    if let Some(n) = id.strip_prefix("XEP-") {
        format!("https://xmpp.org/extensions/xep-{n}.html")
    } else {
        let n = id.trim_start_matches("RFC ").trim();
        format!("https://www.rfc-editor.org/rfc/rfc{n}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn doap(specs: &[Spec]) -> String {
    let mut out = String::from(
        "<?xml version='1.0' encoding='UTF-8'?>\n\
         <!-- Generated from xeps.toml by tests/xeps.rs; do not edit. -->\n\
         <rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'\n         \
         xmlns='http://usefulinc.com/ns/doap#'\n         \
         xmlns:xmpp='https://linkmauve.fr/ns/xmpp-doap#'>\n  <Project>\n    \
         <name>corvid</name>\n    <shortdesc>A standards-based XMPP server</shortdesc>\n    \
         <programming-language>Rust</programming-language>\n    \
         <category rdf:resource='https://linkmauve.fr/ns/xmpp-doap#category-server'/>\n",
    );
    for spec in specs {
        let url = spec_url(&spec.id);
        if spec.id.starts_with("RFC") {
            out.push_str(&format!("    <implements rdf:resource='{url}'/>\n"));
            continue;
        }
        out.push_str("    <implements>\n      <xmpp:SupportedXep>\n");
        out.push_str(&format!("        <xmpp:xep rdf:resource='{url}'/>\n"));
        if let Some(version) = &spec.version {
            out.push_str(&format!(
                "        <xmpp:version>{}</xmpp:version>\n",
                escape(version)
            ));
        }
        out.push_str(&format!(
            "        <xmpp:status>{}</xmpp:status>\n",
            escape(&spec.status)
        ));
        if let Some(note) = &spec.note {
            out.push_str(&format!(
                "        <xmpp:note>{}</xmpp:note>\n",
                escape(note)
            ));
        }
        out.push_str("      </xmpp:SupportedXep>\n    </implements>\n");
    }
    out.push_str("  </Project>\n</rdf:RDF>\n");
    out
}

fn table(specs: &[Spec]) -> String {
    let mut out = String::from(
        "# What corvid supports\n\n\
         Generated from `xeps.toml` by `tests/xeps.rs` (do not edit by hand). The machine-readable \
         form is `corvid.doap`. Every row names the tests that exercise it over real sockets.\n\n\
         | Specification | Title | Version | Status | Module | Tests |\n|---|---|---|---|---|---|\n",
    );
    for spec in specs {
        let tests: Vec<String> = spec.tests.iter().map(|t| format!("`{t}`")).collect();
        let status = match &spec.note {
            Some(note) => format!("{} ({note})", spec.status),
            None => spec.status.clone(),
        };
        out.push_str(&format!(
            "| [{}]({}) | {} | {} | {} | `{}` | {} |\n",
            spec.id,
            spec_url(&spec.id),
            spec.title,
            spec.version.as_deref().unwrap_or("-"),
            status,
            spec.module,
            tests.join("<br>")
        ));
    }
    out
}

/// XEP-0479's Advanced Server level in every category: a provider without a record in
/// xeps.toml fails the check unless its requirement states why corvid goes without it.
#[test]
fn every_advanced_server_requirement_of_xep_0479_is_met_or_explained() {
    let text = std::fs::read_to_string(root().join("xeps/compliance.toml")).expect("compliance");
    let compliance: Compliance = toml::from_str(&text).expect("compliance.toml parses");
    let specs = load();
    let supported: std::collections::HashSet<&str> = specs.iter().map(|s| s.id.as_str()).collect();
    let mut missing = Vec::new();
    for requirement in &compliance.requirement {
        assert!(!requirement.providers.is_empty(), "{}", requirement.feature);
        let absent: Vec<&str> = requirement
            .providers
            .iter()
            .map(String::as_str)
            .filter(|id| !supported.contains(id))
            .collect();
        match (&requirement.reason, absent.is_empty()) {
            (None, false) => missing.push(format!(
                "{} / {}: {}",
                requirement.category,
                requirement.feature,
                absent.join(", ")
            )),
            (Some(_), true) => panic!(
                "{} / {} is met: drop its reason from compliance.toml",
                requirement.category, requirement.feature
            ),
            _ => {}
        }
    }
    assert!(
        missing.is_empty(),
        "XEP-0479 Advanced Server requirements with no record in xeps.toml and no reason: {missing:#?}"
    );
}

#[test]
fn every_named_test_exists() {
    for spec in load() {
        assert!(!spec.tests.is_empty(), "{} names no test", spec.id);
        for test in &spec.tests {
            let (file, name) = test.split_once("::").expect("file::test");
            let source = std::fs::read_to_string(root().join(format!("tests/{file}.rs")))
                .unwrap_or_else(|_| panic!("{}: no tests/{file}.rs", spec.id));
            assert!(
                source.contains(&format!("async fn {name}("))
                    || source.contains(&format!("fn {name}(")),
                "{}: test {test} does not exist",
                spec.id
            );
        }
    }
}

#[test]
fn generated_files_are_current() {
    let specs = load();
    let files = [
        ("xeps/corvid.doap", doap(&specs)),
        ("xeps/README.md", table(&specs)),
    ];
    for (path, expected) in files {
        let path = root().join(path);
        if std::env::var_os("CORVID_UPDATE_XEPS").is_some() {
            std::fs::write(&path, &expected).expect("write generated file");
        }
        let actual = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            actual == expected,
            "{} is stale: run CORVID_UPDATE_XEPS=1 cargo test --test xeps",
            path.display()
        );
    }
}

#[tokio::test]
async fn claimed_disco_features_are_exactly_the_advertised_ones() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    let (mut alice, _) = Raw::login(t.c2s(), t.tls_config(), "alice", "x").await;
    alice
        .write("<iq to='localhost' type='get' id='d'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    let info = alice.element().await;
    // Features of the server and of an account (PEP lives on the account's bare JID)...
    alice
        .write("<iq to='alice@localhost' type='get' id='a'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    let account = alice.element().await;
    // And of the MUC service, which has its own domain (room features are per room).
    alice
        .write("<iq to='conference.localhost' type='get' id='m'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    let muc = alice.element().await;
    // And of the upload service (XEP-0363), a component of its own too.
    alice
        .write("<iq to='upload.localhost' type='get' id='u'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    let upload = alice.element().await;
    let mut advertised: Vec<String> = [info, account, muc, upload]
        .iter()
        .flat_map(|answer| {
            answer
                .get_child("query", corvid::xml::ns::DISCO_INFO)
                .expect("disco result")
                .children()
                .filter_map(|c| c.attr("var").map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .collect();
    advertised.sort();
    advertised.dedup();
    let mut claimed: Vec<String> = load().into_iter().flat_map(|s| s.features).collect();
    claimed.sort();
    claimed.dedup();
    assert_eq!(advertised, claimed, "disco features vs xeps.toml");
}
