//! Properties of the framing that must hold for any input, however TCP splits it: the same
//! frames and the same verdict as a one-shot parse, bounded work per byte, and never more open
//! elements than the depth limit. These would have found the whitespace, text and nesting
//! floods of issue 17; `tests/fuzz` explores the same properties with coverage guidance.

use proptest::prelude::*;

use super::framing::{Frame, StreamParser, XmlLimits};
use super::StreamCondition;

const LIMITS: XmlLimits = XmlLimits {
    max_stanza_size: 8192,
    max_depth: 24,
    max_attributes: 24,
    max_namespace_declarations: 6,
};

const OPEN: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

/// Building blocks of hostile and ordinary input.
#[derive(Debug, Clone)]
enum Piece {
    Whitespace(usize),
    Text(usize),
    Open(usize),
    Close(usize),
    Stanza,
    Attributes(usize),
    Declarations(usize),
    Footer,
    Bytes(Vec<u8>),
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        (0usize..40_000).prop_map(Piece::Whitespace),
        (0usize..40_000).prop_map(Piece::Text),
        (0usize..200).prop_map(Piece::Open),
        (0usize..200).prop_map(Piece::Close),
        Just(Piece::Stanza),
        (0usize..60).prop_map(Piece::Attributes),
        (0usize..20).prop_map(Piece::Declarations),
        Just(Piece::Footer),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Piece::Bytes),
    ]
}

fn render(header: bool, pieces: &[Piece]) -> Vec<u8> {
    let mut out = Vec::new();
    if header {
        out.extend_from_slice(OPEN.as_bytes());
    }
    for piece in pieces {
        match piece {
            Piece::Whitespace(n) => out.extend((0..*n).map(|i| b" \n\t\r"[i % 4])),
            Piece::Text(n) => out.extend(std::iter::repeat_n(b'x', *n)),
            Piece::Open(n) => (0..*n).for_each(|_| out.extend_from_slice(b"<a>")),
            Piece::Close(n) => (0..*n).for_each(|_| out.extend_from_slice(b"</a>")),
            Piece::Stanza => out.extend_from_slice(
                b"<message to='b@localhost' type='chat'><body>h&#xE9;llo &amp; bye</body></message>",
            ),
            Piece::Attributes(n) => {
                out.extend_from_slice(b"<iq");
                (0..*n).for_each(|i| out.extend_from_slice(format!(" a{i}='v'").as_bytes()));
                out.extend_from_slice(b"/>");
            }
            Piece::Declarations(n) => {
                out.extend_from_slice(b"<iq");
                (0..*n).for_each(|i| {
                    out.extend_from_slice(format!(" xmlns:p{i}='urn:{i}'").as_bytes())
                });
                out.extend_from_slice(b"/>");
            }
            Piece::Footer => out.extend_from_slice(b"</stream:stream>"),
            Piece::Bytes(bytes) => out.extend_from_slice(bytes),
        }
    }
    out
}

fn describe(frames: &[Frame]) -> Vec<String> {
    frames
        .iter()
        .map(|f| match f {
            Frame::StreamOpen(h) => format!("open {h:?}"),
            Frame::Element(el) => super::to_string(el),
            Frame::StreamClose => "close".into(),
        })
        .collect()
}

/// Frames and verdict of a parse fed in chunks of the given sizes (cycled), checking after
/// every chunk that the work was bounded and no element opened beyond the limit.
fn parse_in_chunks(input: &[u8], sizes: &[usize]) -> (Vec<String>, Option<StreamCondition>) {
    let mut parser = StreamParser::new(LIMITS);
    let mut frames = Vec::new();
    let mut rest = input;
    let mut sizes = sizes.iter().cycle();
    while !rest.is_empty() {
        let size = (*sizes.next().unwrap_or(&rest.len())).clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let before = parser.events_handled();
        let result = parser.feed(chunk, &mut frames);
        // A byte can end at most a few events (`/>` ends a head and its element; a closing
        // tag can end the stanza and its text): anything more would be work not paid for by
        // input, the shape of the spin and of the quadratic nesting cost.
        let events = parser.events_handled() - before;
        assert!(
            events <= 3 * chunk.len() as u64 + 3,
            "{events} events for {} bytes",
            chunk.len()
        );
        assert!(parser.open_depth() <= LIMITS.max_depth);
        if let Err(e) = result {
            return (describe(&frames), Some(e.condition()));
        }
    }
    (describe(&frames), None)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_split_gives_the_one_shot_frames_and_verdict(
        header in any::<bool>(),
        pieces in proptest::collection::vec(piece(), 0..12),
        sizes in proptest::collection::vec(1usize..6000, 1..8),
    ) {
        let input = render(header, &pieces);
        let whole = parse_in_chunks(&input, &[input.len().max(1)]);
        let split = parse_in_chunks(&input, &sizes);
        prop_assert_eq!(&split, &whole);
    }

    #[test]
    fn byte_at_a_time_gives_the_one_shot_frames_and_verdict(
        pieces in proptest::collection::vec(piece(), 0..6),
    ) {
        let input = render(true, &pieces);
        let input = &input[..input.len().min(20_000)];
        let whole = parse_in_chunks(input, &[input.len().max(1)]);
        prop_assert_eq!(parse_in_chunks(input, &[1]), whole);
    }
}
