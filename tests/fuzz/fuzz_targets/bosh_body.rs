//! One BOSH request body (XEP-0124 `<body/>`) against arbitrary bytes: no panic, the limits
//! hold, and every payload handed to the stream reads back as the same element once written.
#![no_main]

use corvid::listen::bosh::body::parse;
use corvid::xml::{parse_standalone, to_string, XmlLimits};
use libfuzzer_sys::fuzz_target;

fn depth(el: &minidom::Element) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(el, 1usize)];
    while let Some((el, level)) = stack.pop() {
        deepest = deepest.max(level);
        stack.extend(el.children().map(|c| (c, level + 1)));
    }
    deepest
}

fuzz_target!(|data: &[u8]| {
    let limits = XmlLimits::with_max_size(64 * 1024);
    let Ok(body) = parse(data, limits) else {
        return;
    };
    for payload in &body.payloads {
        // The wrapper was level 1.
        assert!(depth(payload) < limits.max_depth);
        assert_ne!(payload.ns(), "http://jabber.org/protocol/httpbind");
        let written = to_string(payload);
        let again =
            parse_standalone(written.as_bytes(), XmlLimits::STORED).expect("our output parses");
        assert_eq!(to_string(&again), written);
    }
});
