//! XEP-0077's `jabber:iq:register` query as an unauthenticated client sends it
//! (`corvid::registration::query`), then the username through the same normalisation
//! registration applies. Nothing may panic; a username that is accepted is the localpart of a
//! bare JID in normal form on the domain (preparing it again changes nothing).
#![no_main]

use corvid::config::Config;
use corvid::registration::query::{parse, Request};
use corvid::registration::normalise_username;
use corvid::xml::parse_standalone;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Config::default().c2s.xml_limits();
    let Ok(query) = parse_standalone(data, limits) else {
        return;
    };
    let Request::Set {
        username: Some(username),
        ..
    } = parse(&query)
    else {
        return;
    };
    let Ok(jid) = normalise_username(&username, "example.org") else {
        return;
    };
    assert_eq!(jid.domain().as_str(), "example.org");
    let node = jid.node().expect("an account has a localpart").to_string();
    let again = normalise_username(&node, "example.org").expect("a normal name stays valid");
    assert_eq!(again, jid, "{username:?}");
});
