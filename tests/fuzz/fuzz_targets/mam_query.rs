//! A XEP-0313 `<query/>` against arbitrary bytes, read with the default network limits and
//! parsed as the MAM module does before it touches storage: the form, the XEP-0059 `<set/>`,
//! `<flip-page/>` and `queryid`. Nothing may panic, refusals are the XEP's errors, accepted
//! RSM ids are trimmed and non-empty, and the `queryid` echoed in `<fin/>` reads back as sent
//! (an echo that changed it would let a client inject markup into its own results).
#![no_main]

use corvid::config::Config;
use corvid::modules::mam::{form, rsm};
use corvid::stanza::{self, Condition};
use corvid::xml::{ns, parse_standalone, to_string, XmlLimits};
use libfuzzer_sys::fuzz_target;
use minidom::Element;

fuzz_target!(|data: &[u8]| {
    let limits = Config::default().c2s.xml_limits();
    let Ok(query) = parse_standalone(data, limits) else {
        return;
    };
    if let Err(e) = form::parse(&query) {
        assert_eq!(e.condition, Condition::BadRequest, "{e:?}");
    }
    match rsm::parse(&query) {
        Ok(page) => {
            if let Some(after) = &page.after {
                assert!(!after.is_empty() && after.trim() == after, "{after:?}");
            }
            if let Some(Some(before)) = &page.before {
                assert!(!before.is_empty() && before.trim() == before, "{before:?}");
            }
        }
        Err(e) => assert!(
            matches!(
                e.condition,
                Condition::BadRequest | Condition::FeatureNotImplemented
            ),
            "{e:?}"
        ),
    }
    let _flip = query.has_child("flip-page", ns::MAM);
    if let Some(queryid) = query.attr("queryid") {
        let mut fin = Element::bare("fin", ns::MAM);
        stanza::set_attr(&mut fin, "queryid", queryid);
        let written = to_string(&fin);
        let read = parse_standalone(written.as_bytes(), XmlLimits::STORED).expect("our output");
        assert_eq!(read.attr("queryid"), Some(queryid), "{written}");
    }
});
