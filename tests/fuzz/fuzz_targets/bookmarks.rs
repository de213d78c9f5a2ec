//! XEP-0048 ↔ XEP-0402 bookmark conversion against arbitrary bytes, read with the default
//! network limits: a legacy `<storage/>` as a Private XML set or a PEP publish brings it, and a
//! native `<conference/>` as a PEP publish does. Nothing may panic; a legacy list that is
//! accepted converts to native items that convert back to the same rooms, and converting
//! those again changes nothing (so the two views cannot drift apart by repeated syncing).
#![no_main]

use corvid::config::Config;
use corvid::modules::pep::bookmarks::{
    check_legacy, conferences, legacy_from_native, legacy_storage, native_from_legacy,
};
use corvid::xml::parse_standalone;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Config::default().c2s.xml_limits();
    let Ok(el) = parse_standalone(data, limits) else {
        return;
    };
    // As a native item under an id a client chose.
    for id in ["room@muc.example", "not a jid@@", ""] {
        if let Ok(legacy) = legacy_from_native(id, &el) {
            let _ = native_from_legacy(&legacy);
        }
    }
    // As a legacy list.
    let accepted = check_legacy(&el).is_ok();
    let Ok(rooms) = conferences(&el) else {
        assert!(!accepted);
        return;
    };
    assert!(accepted);
    let storage = legacy_storage(&rooms, Some(&el));
    let again = conferences(&storage).expect("our own legacy list converts");
    assert_eq!(again.len(), rooms.len(), "{storage:?}");
    for ((id, native), (id2, native2)) in rooms.iter().zip(&again) {
        assert_eq!(id, id2);
        assert_eq!(native, native2, "{storage:?}");
    }
});
