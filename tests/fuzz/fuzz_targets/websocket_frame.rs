//! One WebSocket message (RFC 7395: one complete element) against arbitrary bytes: no panic,
//! the limits hold, and what corvid would forward after parsing it reads back as the same
//! element (a parser differential here would let a client smuggle a stanza past the router).
#![no_main]

use corvid::xml::{parse_standalone, to_string, XmlLimits};
use libfuzzer_sys::fuzz_target;

fn depth(el: &minidom::Element) -> usize {
    // Iterative, like every walk that must not trust its input's depth.
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
    let Ok(el) = parse_standalone(data, limits) else {
        return;
    };
    assert!(depth(&el) <= limits.max_depth);
    let written = to_string(&el);
    let again = parse_standalone(written.as_bytes(), XmlLimits::STORED).expect("our output parses");
    assert_eq!(to_string(&again), written);
});
