//! The XEP-0004 form of a XEP-0313 query (`corvid::modules::mam::form`) against arbitrary
//! bytes, read with the default network limits as a client's stanza would be. A form at the
//! top is put inside a `<query/>`, as a client sends it, so that the fuzzer spends its time on
//! fields. Nothing may panic, a refusal is `<bad-request/>`, and what is accepted is clean:
//! `with` a bare JID in normal form, ids and values trimmed and non-empty.
#![no_main]

use corvid::config::Config;
use corvid::modules::mam::form;
use corvid::stanza::Condition;
use corvid::xml::{ns, parse_standalone};
use libfuzzer_sys::fuzz_target;
use minidom::Element;

fn clean(value: &str) -> bool {
    !value.is_empty() && value.trim() == value
}

fuzz_target!(|data: &[u8]| {
    let limits = Config::default().c2s.xml_limits();
    let Ok(el) = parse_standalone(data, limits) else {
        return;
    };
    let query = if el.is("x", ns::DATA_FORMS) {
        let mut query = Element::bare("query", ns::MAM);
        query.append_child(el);
        query
    } else {
        el
    };
    let parsed = match form::parse(&query) {
        Ok(parsed) => parsed,
        Err(e) => {
            assert_eq!(e.condition, Condition::BadRequest, "{e:?}");
            return;
        }
    };
    if let Some(with) = &parsed.with {
        let jid = jid::Jid::new(with).expect("'with' is a JID");
        assert!(jid.resource().is_none(), "{with:?}");
        assert_eq!(&jid.to_string(), with);
    }
    for id in [&parsed.after_id, &parsed.before_id].into_iter().flatten() {
        assert!(clean(id), "{id:?}");
    }
    for id in parsed.ids.iter().flatten() {
        assert!(clean(id), "{id:?}");
    }
});
