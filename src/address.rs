//! Addresses a client writes in `to` and `from`, read as RFC 7622 says. The `jid` crate
//! (0.12) runs UTS #46 and nameprep over the domainpart, both of which *map* default-ignorable
//! code points such as U+200B to nothing: `bob@d.test` followed by a zero-width space would
//! parse as `bob@d.test` and reach bob under an address he never had. IDNA2008 disallows those
//! code points, so here they make the address malformed. The crate also keeps a trailing dot
//! in the JID's text when nothing else needed normalizing, while RFC 7622 §3.2 says it MUST be
//! stripped before any comparison; it is stripped here.

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};

use icu_properties::props::DefaultIgnorableCodePoint;
use icu_properties::CodePointSetData;
use jid::{FullJid, Jid};

/// The longest domain name DNS can carry, in octets of its ASCII form (RFC 1035 §2.3.4).
const MAX_DOMAIN_OCTETS: usize = 253;
/// The longest DNS label, in octets of its ASCII form.
const MAX_LABEL_OCTETS: usize = 63;

/// Why an address is not a JID.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AddressError {
    #[error("the domainpart is empty")]
    EmptyDomain,
    #[error("U+{0:04X} is not allowed in a domainpart")]
    DisallowedCodePoint(u32),
    #[error("the domainpart is not an internationalized domain name")]
    NotIdna,
    #[error("a label of the domainpart is empty")]
    EmptyLabel,
    #[error("a label of the domainpart is longer than {MAX_LABEL_OCTETS} octets")]
    LabelTooLong,
    #[error("the domainpart is longer than {MAX_DOMAIN_OCTETS} octets")]
    DomainTooLong,
    #[error("the address has no stable normal form")]
    Unstable,
    #[error(transparent)]
    Jid(#[from] jid::Error),
}

/// Preparations of an address until it no longer changes; more means it never settles.
const MAX_PREPARATIONS: usize = 3;

/// Parses an address from a client stanza: the domainpart is checked first (see the module
/// comment), then the whole goes through the `jid` crate's preparation.
pub fn parse(raw: &str) -> Result<Jid, AddressError> {
    let first = parse_once(raw)?;
    // ASCII without A-labels only has its case folded: one pass is final. An A-label decodes
    // to Unicode that may map again (even back to ASCII, "ß" to "ss").
    let has_a_label = raw
        .as_bytes()
        .windows(4)
        .any(|w| w.eq_ignore_ascii_case(b"xn--"));
    if raw.is_ascii() && !has_a_label {
        return Ok(first);
    }
    settle(first)
}

/// `parse` for an address that must name a session (a full JID).
pub fn parse_full(raw: &str) -> Option<FullJid> {
    parse(raw).ok()?.try_into_full().ok()
}

/// One preparation: the domainpart checked, then the `jid` crate's preparation.
fn parse_once(raw: &str) -> Result<Jid, AddressError> {
    // RFC 7622 §3.1: the resourcepart starts at the first '/', the localpart ends at the
    // first '@' before it.
    let (before_resource, resource) = match raw.split_once('/') {
        Some((head, resource)) => (head, Some(resource)),
        None => (raw, None),
    };
    let (node, domain) = match before_resource.split_once('@') {
        Some((node, domain)) => (Some(node), domain),
        None => (None, before_resource),
    };
    let checked = check_domain(domain)?;
    if checked == domain {
        return Ok(Jid::new(raw)?);
    }
    let mut text = String::with_capacity(raw.len());
    if let Some(node) = node {
        text.push_str(node);
        text.push('@');
    }
    text.push_str(&checked);
    if let Some(resource) = resource {
        text.push('/');
        text.push_str(resource);
    }
    Ok(Jid::new(&text)?)
}

/// Prepares an address until it stops changing; more passes than that, or a pass that
/// refuses what the previous one produced, and it has no normal form. Needed because the
/// `jid` crate's preparation is not idempotent for some input: it case-folds before NFKC (so
/// U+213B FACSIMILE SIGN in a localpart comes out as "FAX", lower-cased only by a second
/// pass), and an A-label becomes a U-label that the crate may map again. An address must have
/// one form: routing, rosters and archives compare it. ASCII that stays ASCII needs no check.
fn settle(first: Jid) -> Result<Jid, AddressError> {
    let mut jid = first;
    for _ in 0..MAX_PREPARATIONS {
        let again = parse_once(jid.as_str())?;
        if again == jid {
            return Ok(jid);
        }
        jid = again;
    }
    Err(AddressError::Unstable)
}

/// Checks a domainpart and returns it without its trailing label separator. An
/// internationalized name comes back as the U-labels of its A-label form (RFC 7622 §3.2.2
/// prepares the domainpart with IDNA2008): the `jid` crate's own mapping is not idempotent for
/// some compatibility characters (U+213B FACSIMILE SIGN becomes "FAX" and stays upper case
/// until a second pass), and an address must have one form for routing to compare it.
pub fn check_domain(domain: &str) -> Result<Cow<'_, str>, AddressError> {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.is_empty() {
        return Err(AddressError::EmptyDomain);
    }
    if is_ip_literal(domain) || is_plain_ascii_name(domain) {
        return Ok(Cow::Borrowed(domain));
    }
    if let Some(c) = domain.chars().find(|&c| disallowed(c)) {
        return Err(AddressError::DisallowedCodePoint(u32::from(c)));
    }
    let ascii = idna::domain_to_ascii_strict(domain).map_err(|_| AddressError::NotIdna)?;
    // `domain_to_ascii_strict` verifies DNS lengths too; checked again so that the reason is
    // precise and does not depend on the crate's defaults.
    if ascii.len() > MAX_DOMAIN_OCTETS {
        return Err(AddressError::DomainTooLong);
    }
    for label in ascii.split('.') {
        if label.is_empty() {
            return Err(AddressError::EmptyLabel);
        }
        if label.len() > MAX_LABEL_OCTETS {
            return Err(AddressError::LabelTooLong);
        }
    }
    let (unicode, result) = idna::domain_to_unicode(&ascii);
    result.map_err(|_| AddressError::NotIdna)?;
    // RFC 5891 §5.4: an A-label is valid only if its U-label converts back to it. One that
    // does not (upper case inside the Punycode changes what it decodes to) has no normal form.
    if unicode != domain && idna::domain_to_ascii_strict(&unicode).ok().as_ref() != Some(&ascii) {
        return Err(AddressError::NotIdna);
    }
    if unicode == domain {
        Ok(Cow::Borrowed(domain))
    } else {
        Ok(Cow::Owned(unicode))
    }
}

/// The common case, recognised without the Unicode tables and without the allocation of an
/// IDNA conversion (this runs for every stanza a client sends): letters, digits and hyphens,
/// within DNS lengths, in labels that are not empty, neither start nor end with a hyphen and
/// are not A-labels. Anything else goes to the full check, which also names what is wrong.
fn is_plain_ascii_name(domain: &str) -> bool {
    domain.len() <= MAX_DOMAIN_OCTETS
        && domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && domain.split('.').all(|label| {
            let punycode = label.len() >= 4 && label[..4].eq_ignore_ascii_case("xn--");
            !label.is_empty()
                && label.len() <= MAX_LABEL_OCTETS
                && !label.starts_with('-')
                && !label.ends_with('-')
                && !punycode
        })
}

/// RFC 7622 §3.2 allows an IPv4 address or a bracketed IPv6 address as domainpart.
fn is_ip_literal(domain: &str) -> bool {
    domain.parse::<Ipv4Addr>().is_ok()
        || domain
            .strip_prefix('[')
            .and_then(|d| d.strip_suffix(']'))
            .is_some_and(|d| d.parse::<Ipv6Addr>().is_ok())
}

/// Code points IDNA2008 (RFC 5892) disallows but UTS #46 or nameprep would silently drop or
/// map: default-ignorables, controls, spaces, and what RFC 3454 prohibits in nameprep output.
fn disallowed(c: char) -> bool {
    use stringprep::tables;
    c.is_control()
        || c.is_whitespace()
        || CodePointSetData::new::<DefaultIgnorableCodePoint>().contains(c)
        || tables::commonly_mapped_to_nothing(c)
        || tables::non_ascii_space_character(c)
        || tables::non_ascii_control_character(c)
        || tables::private_use(c)
        || tables::non_character_code_point(c)
        || tables::surrogate_code(c)
        || tables::inappropriate_for_plain_text(c)
        || tables::inappropriate_for_canonical_representation(c)
        || tables::change_display_properties_or_deprecated(c)
        || tables::tagging_character(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ascii_shortcut_agrees_with_the_full_check() {
        let long_label = "a".repeat(64);
        let long_domain = format!("{}.example", "abcdefghi.".repeat(25));
        for domain in [
            "d.test",
            "D.Test",
            "a-b.c1.example",
            "1.2.3",
            "-a.test",
            "a-.test",
            "xn--mnchen-3ya.example",
            "xn--zz.example",
            "a..b",
            ".a",
            long_label.as_str(),
            long_domain.as_str(),
        ] {
            let shortcut = is_plain_ascii_name(domain);
            let full = idna::domain_to_ascii_strict(domain)
                .map_err(|_| AddressError::NotIdna)
                .and_then(|ascii| {
                    if ascii.len() > MAX_DOMAIN_OCTETS {
                        Err(AddressError::DomainTooLong)
                    } else if ascii.split('.').any(str::is_empty) {
                        Err(AddressError::EmptyLabel)
                    } else if ascii.split('.').any(|l| l.len() > MAX_LABEL_OCTETS) {
                        Err(AddressError::LabelTooLong)
                    } else {
                        Ok(())
                    }
                });
            if shortcut {
                assert_eq!(full, Ok(()), "{domain}");
            }
        }
        for plain in ["d.test", "D.Test", "a-b.c1.example", "localhost"] {
            assert!(is_plain_ascii_name(plain), "{plain}");
        }
    }

    #[test]
    fn plain_addresses_parse_as_the_jid_crate_does() {
        for raw in [
            "bob@d.test",
            "bob@d.test/res",
            "d.test",
            "d.test/res",
            "bob@127.0.0.1",
            "bob@[::1]/r",
            "BOB@D.Test/Res",
            "bob@münchen.example",
        ] {
            assert_eq!(parse(raw), Ok(Jid::new(raw).unwrap()), "{raw}");
        }
    }

    #[test]
    fn trailing_dot_is_stripped() {
        assert_eq!(parse("bob@d.test.").unwrap().to_string(), "bob@d.test");
        assert_eq!(parse("bob@d.test./r").unwrap().to_string(), "bob@d.test/r");
        assert_eq!(parse("d.test.").unwrap().to_string(), "d.test");
        // The resource may contain anything, dots and '@' included.
        assert_eq!(parse("d.test./a@b.").unwrap().to_string(), "d.test/a@b.");
        assert_eq!(check_domain("d.test."), Ok(Cow::Borrowed("d.test")));
        assert_eq!(check_domain("."), Err(AddressError::EmptyDomain));
        assert_eq!(check_domain("d.test.."), Err(AddressError::NotIdna));
    }

    #[test]
    fn default_ignorable_and_control_code_points_are_malformed() {
        for (raw, c) in [
            ("bob@d.test\u{200B}", 0x200B),
            ("bob@d.\u{FEFF}test", 0xFEFF),
            ("bob@d.te\u{00AD}st", 0xAD),
            ("bob@d.te\u{2060}st/r", 0x2060),
            ("bob@d.test\u{180E}", 0x180E),
            ("bob@d.te\u{E0100}st", 0xE0100),
            ("bob@d.te\u{3164}st", 0x3164),
            ("bob@d.te\u{0007}st", 0x7),
            ("bob@d.te\u{0085}st", 0x85),
            ("bob@d.te st", 0x20),
            ("bob@d.te\u{00A0}st", 0xA0),
            ("bob@d.te\u{202E}st", 0x202E),
            ("bob@d.te\u{E000}st", 0xE000),
        ] {
            assert_eq!(
                parse(raw),
                Err(AddressError::DisallowedCodePoint(c)),
                "{raw:?}"
            );
        }
        // The same code points in a resourcepart are resourceprep's business, not ours.
        assert!(parse("bob@d.test/a\u{200B}b").is_ok());
    }

    #[test]
    fn labels_and_lengths_follow_dns() {
        assert_eq!(check_domain(""), Err(AddressError::EmptyDomain));
        assert!(check_domain("a..b").is_err());
        assert!(check_domain(".a").is_err());
        let label = "a".repeat(63);
        assert_eq!(check_domain(&label), Ok(Cow::Borrowed(label.as_str())));
        assert!(check_domain(&"a".repeat(64)).is_err());
        let long = [label.as_str(); 4].join(".");
        assert_eq!(long.len(), 255);
        assert!(check_domain(&long).is_err());
        // A U-label whose A-label is too long.
        assert!(check_domain(&"ü".repeat(60)).is_err());
    }

    /// Found by the `jid_address` fuzz target: the first parse gave "oFAXcå" and the second
    /// "ofaxcå", two JIDs for one address.
    #[test]
    fn a_parsed_address_parses_to_itself() {
        for raw in [
            "o\u{213B}c\u{212B}",
            "bob@\u{213B}.example/r",
            "bob@M\u{00FC}nchen.example",
            "bob@xn--mnchen-3ya.example",
            "bob@\u{FF21}.example",
            "oRbboo\u{213B}--mnb@272",
            "\u{213B}@d.test/\u{213B}",
            "bob@xn--mAeamRRRRRRRRRtRRRRpampRRRRRp-RRp-3exaRRRRRRRRRRtRRRRpample",
            "bob@XN--MNCHEN-3YA.example",
            "[ob@xn--mn--mgv-0vaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaAaaaaaa",
        ] {
            let Ok(first) = parse(raw) else {
                continue;
            };
            let again = parse(&first.to_string()).unwrap();
            assert_eq!(again, first, "{raw:?}");
            assert_eq!(again.to_string(), first.to_string(), "{raw:?}");
        }
        assert_eq!(
            parse("o\u{213B}c\u{212B}").unwrap().to_string(),
            "ofaxc\u{00E5}"
        );
        // Found by the fuzz target in CI: an A-label with upper case inside its Punycode
        // decodes to a U-label that does not convert back to it.
        assert!(
            parse("bob@xn--mAeamRRRRRRRRRtRRRRpampRRRRRp-RRp-3exaRRRRRRRRRRtRRRRpample").is_err()
        );
        assert_eq!(
            parse("bob@XN--MNCHEN-3YA.example").unwrap().to_string(),
            "bob@m\u{00FC}nchen.example"
        );
    }

    #[test]
    fn what_strict_idna_refuses_is_malformed() {
        for domain in [
            "under_score.test",
            "-lead.test",
            "trail-.test",
            "a/b",
            "xn--a.test",
        ] {
            assert!(check_domain(domain).is_err(), "{domain}");
        }
    }
}
