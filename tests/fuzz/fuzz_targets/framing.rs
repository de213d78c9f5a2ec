//! The stream framing against arbitrary bytes: the first two bytes choose how the rest is split
//! (as TCP might), and the frames and verdict must match a one-shot parse; no input may make the
//! parser do more than a few events of work per byte or hold more open elements than the
//! depth limit. The second byte's top bit picks a server-to-server stream, whose `jabber:server`
//! stanzas are built as `jabber:client` ones.
#![no_main]

use corvid::xml::{ns, to_string, Frame, StreamCondition, StreamParser, XmlLimits};
use libfuzzer_sys::fuzz_target;

const LIMITS: XmlLimits = XmlLimits {
    max_stanza_size: 16 * 1024,
    max_depth: 32,
    max_attributes: 32,
    max_namespace_declarations: 8,
};

fn describe(frames: &[Frame]) -> Vec<String> {
    frames
        .iter()
        .map(|f| match f {
            Frame::StreamOpen(h) => format!("open {h:?}"),
            Frame::Element(el) => to_string(el),
            Frame::StreamClose => "close".into(),
        })
        .collect()
}

fn parse(input: &[u8], chunk: usize, s2s: bool) -> (Vec<String>, Option<StreamCondition>) {
    let mut parser = StreamParser::new(LIMITS);
    if s2s {
        parser = parser.stanzas_in(ns::SERVER, ns::CLIENT);
    }
    let mut frames = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        let before = parser.events_handled();
        let result = parser.feed(piece, &mut frames);
        let events = parser.events_handled() - before;
        assert!(
            events <= 3 * piece.len() as u64 + 3,
            "{events} events for {} bytes",
            piece.len()
        );
        assert!(parser.open_depth() <= LIMITS.max_depth);
        if let Err(e) = result {
            return (describe(&frames), Some(e.condition()));
        }
    }
    (describe(&frames), None)
}

fuzz_target!(|data: &[u8]| {
    let Some((split, input)) = data.split_first_chunk::<2>() else {
        return;
    };
    let s2s = split[1] & 0x80 != 0;
    let chunk = usize::from(u16::from_le_bytes(*split) & 0x7fff) % 8192 + 1;
    let whole = parse(input, input.len(), s2s);
    let split = parse(input, chunk, s2s);
    assert_eq!(whole, split, "chunk size {chunk}");
    // Every frame that came out serializes to XML that parses again to the same thing.
    for frame in &whole.0 {
        if frame.starts_with('<') {
            let again = corvid::xml::parse_standalone(frame.as_bytes(), XmlLimits::STORED)
                .expect("our own output parses");
            assert_eq!(&to_string(&again), frame);
        }
    }
});
