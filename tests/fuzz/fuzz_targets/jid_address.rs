//! Addresses from client stanzas (`corvid::address::parse`: RFC 7622 with corvid's stricter
//! domainpart) against arbitrary text. Nothing may panic, and whatever is accepted is already
//! in normal form: parsing its text again gives the same JID, and its domainpart has no
//! trailing dot, no control, space or default-ignorable code point, and fits DNS (labels of
//! 1 to 63 octets, at most 253 in all, in ASCII form).
#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;

/// Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt), written out here
/// rather than asked of the library corvid uses, so that the check does not share its bugs.
const DEFAULT_IGNORABLE: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
];

fn default_ignorable(c: char) -> bool {
    let c = u32::from(c);
    DEFAULT_IGNORABLE
        .iter()
        .any(|&(lo, hi)| (lo..=hi).contains(&c))
}

fn is_ip_literal(domain: &str) -> bool {
    domain.parse::<Ipv4Addr>().is_ok()
        || domain
            .strip_prefix('[')
            .and_then(|d| d.strip_suffix(']'))
            .is_some_and(|d| d.parse::<Ipv6Addr>().is_ok())
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(jid) = corvid::address::parse(raw) else {
        return;
    };
    let text = jid.to_string();
    let again = corvid::address::parse(&text).expect("a normalized address parses");
    assert_eq!(again, jid, "{raw:?}");
    assert_eq!(again.to_string(), text, "{raw:?}");

    let domain = jid.domain().as_str();
    assert!(!domain.is_empty(), "{raw:?}");
    assert!(
        !domain.ends_with('.'),
        "{raw:?}: trailing dot in {domain:?}"
    );
    if is_ip_literal(domain) {
        return;
    }
    for c in domain.chars() {
        assert!(
            !c.is_control() && !c.is_whitespace() && !default_ignorable(c),
            "{raw:?}: U+{:04X} in {domain:?}",
            u32::from(c)
        );
    }
    let ascii = idna::domain_to_ascii(domain).expect("an accepted domain has an ASCII form");
    assert!(ascii.len() <= 253, "{raw:?}: {} octets", ascii.len());
    for label in ascii.split('.') {
        assert!((1..=63).contains(&label.len()), "{raw:?}: label {label:?}");
    }
});
