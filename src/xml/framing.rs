//! Turns bytes into stream-level frames: the stream header, complete top-level elements and the
//! stream footer. Results never depend on how the bytes were split (tested below by feeding
//! one byte at a time).
//!
//! rxml refuses DTDs, entity declarations, processing instructions and comments by itself; what
//! it does not bound is a stanza's size, its nesting depth and the number of attributes and
//! namespace declarations on one element. The parser enforces all four (`XmlLimits`) as events
//! arrive, before anything is built from them: every walk over an element tree (clone, drop,
//! serialization, search) recurses once per level, and minidom resolves each prefix by walking
//! the stack of open elements, so depth must be capped where the bytes come in.

use minidom::tree_builder::TreeBuilder;
use minidom::Element;
use rxml::error::EndOrError;
use rxml::{Parse, RawEvent, RawParser, WithOptions};

use super::ns;
use super::StreamCondition;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("not well-formed: {0}")]
    NotWellFormed(String),
    #[error("restricted XML: {0}")]
    RestrictedXml(&'static str),
    #[error("stanza larger than {0} bytes")]
    TooLarge(usize),
    #[error("invalid namespace: {0}")]
    InvalidNamespace(String),
    #[error("elements nested deeper than {0} levels")]
    TooDeep(usize),
    #[error("more than {0} attributes on one element")]
    TooManyAttributes(usize),
    #[error("more than {0} namespace declarations on one element")]
    TooManyNamespaceDeclarations(usize),
}

impl FramingError {
    /// The RFC 6120 §4.9.3 stream error condition for this failure.
    pub fn condition(&self) -> StreamCondition {
        match self {
            FramingError::NotWellFormed(_) => StreamCondition::NotWellFormed,
            FramingError::RestrictedXml(_) => StreamCondition::RestrictedXml,
            FramingError::TooLarge(_)
            | FramingError::TooDeep(_)
            | FramingError::TooManyAttributes(_)
            | FramingError::TooManyNamespaceDeclarations(_) => StreamCondition::PolicyViolation,
            FramingError::InvalidNamespace(_) => StreamCondition::InvalidNamespace,
        }
    }
}

/// What one parsed element may cost. Every limit is checked as the parser's events arrive, so
/// a violation costs no more than the bytes that reached the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XmlLimits {
    /// Bytes of one top-level element (a stanza or nonza), counted as they are read.
    pub max_stanza_size: usize,
    /// Nesting levels, the top-level element being level 1.
    pub max_depth: usize,
    /// Attributes on one element, namespace declarations included.
    pub max_attributes: usize,
    /// `xmlns` and `xmlns:prefix` declarations on one element.
    pub max_namespace_declarations: usize,
}

impl XmlLimits {
    /// Deep enough for every real payload (a MAM result carrying a forwarded carbon of an
    /// OMEMO message is about a dozen levels), far below what a recursive walk can survive.
    pub const DEFAULT_MAX_DEPTH: usize = 64;
    pub const DEFAULT_MAX_ATTRIBUTES: usize = 64;
    pub const DEFAULT_MAX_NAMESPACE_DECLARATIONS: usize = 16;

    /// The default element limits with the given stanza size.
    pub const fn with_max_size(max_stanza_size: usize) -> XmlLimits {
        XmlLimits {
            max_stanza_size,
            max_depth: Self::DEFAULT_MAX_DEPTH,
            max_attributes: Self::DEFAULT_MAX_ATTRIBUTES,
            max_namespace_declarations: Self::DEFAULT_MAX_NAMESPACE_DECLARATIONS,
        }
    }

    /// For XML corvid stored itself (archive, offline messages, PEP items): it passed the
    /// network limits when it arrived, possibly under a more generous configuration, and the
    /// server may have wrapped it, so it gets more room; the depth stays bounded because
    /// whatever is read is also walked.
    pub const STORED: XmlLimits = XmlLimits {
        max_stanza_size: usize::MAX,
        max_depth: 4 * Self::DEFAULT_MAX_DEPTH,
        max_attributes: 1024,
        max_namespace_declarations: 256,
    };
}

/// Checks each raw event against `XmlLimits`. `depth` is the number of elements open before
/// the event (minidom's `TreeBuilder::depth`, which counts an element once its head closes).
struct LimitCheck {
    limits: XmlLimits,
    attributes: usize,
    declarations: usize,
}

impl LimitCheck {
    fn new(limits: XmlLimits) -> Self {
        LimitCheck {
            limits,
            attributes: 0,
            declarations: 0,
        }
    }

    fn check(&mut self, event: &RawEvent, depth: usize) -> Result<(), FramingError> {
        match event {
            RawEvent::ElementHeadOpen(..) => {
                if depth >= self.limits.max_depth {
                    return Err(FramingError::TooDeep(self.limits.max_depth));
                }
                self.attributes = 0;
                self.declarations = 0;
            }
            RawEvent::Attribute(_, (prefix, name), _) => {
                self.attributes += 1;
                if self.attributes > self.limits.max_attributes {
                    return Err(FramingError::TooManyAttributes(self.limits.max_attributes));
                }
                let declares = match prefix {
                    None => name.as_str() == "xmlns",
                    Some(prefix) => prefix.as_str() == "xmlns",
                };
                if declares {
                    self.declarations += 1;
                    if self.declarations > self.limits.max_namespace_declarations {
                        return Err(FramingError::TooManyNamespaceDeclarations(
                            self.limits.max_namespace_declarations,
                        ));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The attributes of an opening `<stream:stream>` (or RFC 7395 `<open/>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamHeader {
    pub to: Option<String>,
    pub from: Option<String>,
    pub version: Option<String>,
    pub lang: Option<String>,
    /// The stream id the peer chose (a receiving server's header carries one).
    pub id: Option<String>,
    /// The namespace the header declared as default (`jabber:client`, `jabber:server`).
    pub default_ns: Option<String>,
}

impl StreamHeader {
    fn from_element(el: &Element) -> StreamHeader {
        StreamHeader {
            to: el.attr("to").map(str::to_owned),
            from: el.attr("from").map(str::to_owned),
            version: el.attr("version").map(str::to_owned),
            lang: el.attr_ns(ns::XML, "lang").map(str::to_owned),
            id: el.attr("id").map(str::to_owned),
            default_ns: None,
        }
    }
}

#[derive(Debug)]
pub enum Frame {
    StreamOpen(StreamHeader),
    Element(Element),
    StreamClose,
}

/// Namespace declarations (prefix -> namespace; `None` is the default namespace).
type Prefixes = std::collections::BTreeMap<Option<String>, String>;

/// The stream header's namespace declarations, prefix (None for the default namespace) and
/// URI. Kept as a short list rather than a map: every connection holds it for its whole life,
/// and a map's first node alone is larger than a handful of declarations.
type Declarations = Vec<(Option<String>, String)>;

/// Incremental parser for one TCP stream. Call `reset` after STARTTLS and SASL success, when
/// RFC 6120 says a new stream starts.
///
/// Each stanza is built in a tree of its own, seeded with the stream header's namespace
/// declarations, so the parser keeps no stream element (and no stanza) between stanzas: an
/// idle session holds only the declarations.
pub struct StreamParser {
    raw: RawParser,
    /// Builds the stream header, then each stanza; None between stanzas, so that an idle
    /// connection keeps no builder (each stanza's starts with the header's declarations).
    /// Boxed, so that the room for one is not kept either.
    tree: Option<Box<TreeBuilder>>,
    /// Declarations seen on the stream header so far; complete once `in_stream`.
    stream_prefixes: Declarations,
    in_stream: bool,
    limits: LimitCheck,
    /// Bytes consumed since the last point between top-level elements.
    pending: usize,
    closed: bool,
    /// Parser events handled so far: the property tests bound the work done per byte with it.
    events: u64,
    /// The stream's default namespace as stanzas are built in (see `stanzas_in`).
    internal_default: Option<(&'static str, &'static str)>,
}

impl StreamParser {
    pub fn new(limits: XmlLimits) -> Self {
        StreamParser {
            raw: new_raw_parser(limits.max_stanza_size),
            tree: Some(Box::default()),
            stream_prefixes: Declarations::new(),
            in_stream: false,
            limits: LimitCheck::new(limits),
            pending: 0,
            closed: false,
            events: 0,
            internal_default: None,
        }
    }

    /// Stanzas of a stream whose default namespace is `wire` are built in `internal`: a
    /// server-to-server stream's `jabber:server` stanzas come out as the `jabber:client` ones
    /// the router and every module handle, at no cost per stanza (RFC 6120 §4.8.3 makes the
    /// two the same stanzas in different streams).
    pub fn stanzas_in(mut self, wire: &'static str, internal: &'static str) -> Self {
        self.internal_default = Some((wire, internal));
        self
    }

    /// Elements open inside the current top-level element (0 between stanzas).
    pub fn open_depth(&self) -> usize {
        if self.in_stream {
            self.tree_depth()
        } else {
            0
        }
    }

    /// Parser events handled since this parser was created or reset.
    pub fn events_handled(&self) -> u64 {
        self.events
    }

    pub fn reset(&mut self) {
        let internal_default = self.internal_default;
        *self = StreamParser::new(self.limits.limits);
        self.internal_default = internal_default;
    }

    /// Parses as much of `data` as possible, appending complete frames to `out`.
    pub fn feed(&mut self, mut data: &[u8], out: &mut Vec<Frame>) -> Result<(), FramingError> {
        // One byte can complete several events (`/>` ends a head and the element), so keep
        // asking until the parser says it needs more, even once `data` is used up.
        while !self.closed {
            let before = data.len();
            let result = self.raw.parse(&mut data, false);
            self.pending += before - data.len();
            if let Ok(Some(event)) = &result {
                self.events += 1;
                self.limits.check(event, self.tree_depth())?;
            }
            match result {
                Ok(Some(event)) if self.in_stream => self.stanza_event(event, out)?,
                Ok(Some(event)) => self.header_event(event, out)?,
                Ok(None) => {
                    self.closed = true;
                }
                Err(EndOrError::NeedMoreData) => break,
                Err(EndOrError::Error(e)) => return Err(map_rxml_error(e)),
            }
            let max_size = self.limits.limits.max_stanza_size;
            if self.pending > max_size {
                return Err(FramingError::TooLarge(max_size));
            }
        }
        if self.pending == 0 {
            // Between stanzas: give back the lexer's scratch space, an idle session keeps none.
            self.raw.release_temporaries();
        }
        Ok(())
    }

    /// Events up to the end of the stream header's start tag.
    fn header_event(&mut self, event: RawEvent, out: &mut Vec<Frame>) -> Result<(), FramingError> {
        match &event {
            RawEvent::XmlDeclaration(..) => {
                self.pending = 0;
                return Ok(());
            }
            RawEvent::Attribute(_, (None, name), value) if name.as_str() == "xmlns" => {
                self.declare(None, value.to_string());
            }
            RawEvent::Attribute(_, (Some(prefix), name), value) if prefix.as_str() == "xmlns" => {
                self.declare(Some(name.as_str().to_owned()), value.to_string());
            }
            _ => {}
        }
        let closes_head = matches!(event, RawEvent::ElementHeadClose(_));
        let tree = self.tree.get_or_insert_with(Box::default);
        tree.process_event(event)
            .map_err(|e| FramingError::InvalidNamespace(e.to_string()))?;
        if !closes_head {
            return Ok(());
        }
        let header = match tree.top() {
            Some(root) if root.name() == "stream" && root.ns() == ns::STREAM => {
                let mut header = StreamHeader::from_element(root);
                header.default_ns = self
                    .stream_prefixes
                    .iter()
                    .find(|(prefix, _)| prefix.is_none())
                    .map(|(_, uri)| uri.clone());
                header
            }
            _ => {
                return Err(FramingError::InvalidNamespace(format!(
                    "root element must be <stream:stream xmlns:stream='{}'>",
                    ns::STREAM
                )))
            }
        };
        out.push(Frame::StreamOpen(header));
        self.build_stanzas_in_internal_default();
        self.in_stream = true;
        self.tree = None;
        self.pending = 0;
        Ok(())
    }

    /// Events inside the stream: depth 0 of `tree` is between stanzas.
    fn stanza_event(&mut self, event: RawEvent, out: &mut Vec<Frame>) -> Result<(), FramingError> {
        let depth = self.tree_depth();
        match &event {
            // Whitespace keepalives between stanzas: nothing to keep.
            RawEvent::Text(..) if depth == 0 => {
                self.pending = 0;
                return Ok(());
            }
            RawEvent::ElementFoot(_) if depth == 0 => {
                self.closed = true;
                out.push(Frame::StreamClose);
                return Ok(());
            }
            _ => {}
        }
        let closes_stanza = depth == 1 && matches!(event, RawEvent::ElementFoot(_));
        let tree = match &mut self.tree {
            Some(tree) => tree,
            empty => empty.insert(Box::new(stanza_tree(&self.stream_prefixes))),
        };
        tree.process_event(event)
            .map_err(|e| FramingError::InvalidNamespace(e.to_string()))?;
        if closes_stanza {
            if let Some(el) = tree.root.take() {
                out.push(Frame::Element(el));
            }
            self.tree = None;
            self.pending = 0;
        }
        Ok(())
    }

    /// Elements open in the tree being built (0 when none is).
    fn tree_depth(&self) -> usize {
        self.tree.as_ref().map_or(0, |tree| tree.depth())
    }

    /// Once the header is read: the wire's default namespace becomes the internal one in the
    /// declarations every stanza is built with (see `stanzas_in`), once per stream rather
    /// than once per stanza.
    fn build_stanzas_in_internal_default(&mut self) {
        let Some((wire, internal)) = self.internal_default else {
            return;
        };
        let default = self.stream_prefixes.iter_mut().find(|(p, _)| p.is_none());
        if let Some((_, uri)) = default.filter(|(_, uri)| uri.as_str() == wire) {
            *uri = internal.to_owned();
        }
    }

    fn declare(&mut self, prefix: Option<String>, uri: String) {
        match self.stream_prefixes.iter_mut().find(|(p, _)| *p == prefix) {
            Some((_, existing)) => *existing = uri,
            None => self.stream_prefixes.push((prefix, uri)),
        }
    }
}

/// A builder for the next stanza, with the stream header's declarations in scope.
fn stanza_tree(declarations: &Declarations) -> TreeBuilder {
    let prefixes: Prefixes = declarations.iter().cloned().collect();
    TreeBuilder::new().with_prefixes_stack(vec![prefixes.into()])
}

fn new_raw_parser(max_stanza: usize) -> RawParser {
    let options = rxml::Options {
        max_token_length: max_stanza.min(MAX_TOKEN),
        ..Default::default()
    };
    // The lexer reserves this much scratch space per connection, so it stays small: text longer
    // than it is split into several text nodes, and a longer name or attribute value is refused
    // as a size violation (see `map_rxml_error`).
    RawParser::with_options(options)
}

const MAX_TOKEN: usize = 8192;

fn map_rxml_error(e: rxml::Error) -> FramingError {
    match e {
        rxml::Error::RestrictedXml("long name or reference" | "event too long") => {
            FramingError::TooLarge(MAX_TOKEN)
        }
        rxml::Error::RestrictedXml(what) => FramingError::RestrictedXml(what),
        rxml::Error::UndeclaredEntity => FramingError::RestrictedXml("entity reference"),
        // rxml knows only `<!--` and `<![CDATA[` after `<!`; anything else there is a markup
        // declaration (DOCTYPE, ENTITY, ELEMENT, ATTLIST), which XMPP forbids (RFC 6120 §11.1).
        rxml::Error::InvalidSyntax(what) if what.contains("cdata or comment section start") => {
            FramingError::RestrictedXml("document type declaration")
        }
        other => FramingError::NotWellFormed(other.to_string()),
    }
}

/// Parses one complete element, as carried by a WebSocket message (RFC 7395 §3.3.3). The
/// `stream` prefix and the `jabber:client` default namespace are pre-bound, so a client that
/// leaves them out of a frame is still understood.
pub fn parse_standalone(data: &[u8], limits: XmlLimits) -> Result<Element, FramingError> {
    if data.len() > limits.max_stanza_size {
        return Err(FramingError::TooLarge(limits.max_stanza_size));
    }
    let mut check = LimitCheck::new(limits);
    let mut raw = new_raw_parser(limits.max_stanza_size);
    let mut prefixes = std::collections::BTreeMap::new();
    prefixes.insert(None, ns::CLIENT.to_string());
    prefixes.insert(Some("stream".to_string()), ns::STREAM.to_string());
    let mut tree = TreeBuilder::new().with_prefixes_stack(vec![prefixes.into()]);
    let mut input = data;
    loop {
        match raw.parse(&mut input, true) {
            Ok(Some(event)) => {
                if matches!(event, RawEvent::Text(..)) && tree.depth() == 0 {
                    continue;
                }
                check.check(&event, tree.depth())?;
                tree.process_event(event)
                    .map_err(|e| FramingError::InvalidNamespace(e.to_string()))?;
            }
            Ok(None) => break,
            Err(EndOrError::NeedMoreData) => {
                return Err(FramingError::NotWellFormed("incomplete element".into()))
            }
            Err(EndOrError::Error(e)) => return Err(map_rxml_error(e)),
        }
    }
    tree.root
        .take()
        .ok_or_else(|| FramingError::NotWellFormed("no element".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0' xml:lang='en'>";

    fn frames_of(input: &str, chunk: usize) -> Result<Vec<Frame>, FramingError> {
        let mut parser = StreamParser::new(XmlLimits::with_max_size(4096));
        let mut out = Vec::new();
        for piece in input.as_bytes().chunks(chunk) {
            parser.feed(piece, &mut out)?;
        }
        Ok(out)
    }

    fn describe(frames: &[Frame]) -> Vec<String> {
        frames
            .iter()
            .map(|f| match f {
                Frame::StreamOpen(h) => format!("open to={:?} lang={:?}", h.to, h.lang),
                Frame::Element(el) => super::super::to_string(el),
                Frame::StreamClose => "close".into(),
            })
            .collect()
    }

    #[test]
    fn same_frames_whatever_the_split() {
        let input = format!(
            "{OPEN} <message to='a@b'><body>h&#xE9;llo &amp; bye</body></message>\n \
             <iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq></stream:stream>"
        );
        let whole = describe(&frames_of(&input, input.len()).unwrap());
        assert_eq!(whole.len(), 4, "{whole:?}");
        assert_eq!(whole[0], "open to=Some(\"localhost\") lang=Some(\"en\")");
        assert!(whole[1].contains("héllo &amp; bye"), "{}", whole[1]);
        for chunk in 1..8 {
            assert_eq!(describe(&frames_of(&input, chunk).unwrap()), whole);
        }
    }

    #[test]
    fn self_closing_element_at_end_of_input_is_complete() {
        let mut parser = StreamParser::new(XmlLimits::with_max_size(4096));
        let mut out = Vec::new();
        parser.feed(OPEN.as_bytes(), &mut out).unwrap();
        parser
            .feed(
                b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
                &mut out,
            )
            .unwrap();
        assert_eq!(out.len(), 2, "{:?}", describe(&out));
    }

    #[test]
    fn restricted_constructs_are_refused() {
        for bad in [
            "<?xml version='1.0'?><!DOCTYPE foo [<!ENTITY x 'y'>]><stream:stream/>",
            "<?xml version='1.0'?><?foo bar?>",
            &format!("{OPEN}<message><!-- hi --></message>"),
            &format!("{OPEN}<message>&xxe;</message>"),
        ] {
            let err = frames_of(bad, 3).unwrap_err();
            assert_eq!(
                err.condition(),
                StreamCondition::RestrictedXml,
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn malformed_xml_is_not_well_formed() {
        let err = frames_of(&format!("{OPEN}<message></presence>"), 5).unwrap_err();
        assert_eq!(err.condition(), StreamCondition::NotWellFormed);
    }

    #[test]
    fn oversized_stanza_is_a_policy_violation_even_without_closing_tag() {
        let big = format!("{OPEN}<message><body>{}", "x".repeat(5000));
        assert_eq!(
            frames_of(&big, 100).unwrap_err(),
            FramingError::TooLarge(4096)
        );
        let big_attr = format!("{OPEN}<message to='{}'/>", "y".repeat(5000));
        assert_eq!(
            frames_of(&big_attr, 1000).unwrap_err().condition(),
            StreamCondition::PolicyViolation
        );
    }

    #[test]
    fn many_small_stanzas_never_add_up_to_the_limit() {
        let mut input = OPEN.to_string();
        for _ in 0..200 {
            input.push_str("<presence/> ");
        }
        assert_eq!(frames_of(&input, 7).unwrap().len(), 201);
    }

    #[test]
    fn server_stanzas_are_built_as_client_stanzas_when_asked() {
        let mut parser =
            StreamParser::new(XmlLimits::with_max_size(4096)).stanzas_in(ns::SERVER, ns::CLIENT);
        let mut out = Vec::new();
        parser
            .feed(
                b"<stream:stream xmlns='jabber:server' xmlns:db='jabber:server:dialback' \
                  xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>\
                  <message to='a@b'><body>hi</body></message><db:result from='x' to='y'>k</db:result>",
                &mut out,
            )
            .expect("parses");
        let Frame::Element(message) = &out[1] else {
            panic!("a stanza: {:?}", out[1]);
        };
        assert!(message.is("message", ns::CLIENT));
        assert!(message.has_child("body", ns::CLIENT));
        let Frame::Element(result) = &out[2] else {
            panic!("dialback: {:?}", out[2]);
        };
        assert!(result.is("result", "jabber:server:dialback"));
        parser.reset();
        out.clear();
        parser
            .feed(
                b"<stream:stream xmlns='jabber:server' \
                  xmlns:stream='http://etherx.jabber.org/streams' version='1.0'><iq/>",
                &mut out,
            )
            .expect("parses after a restart");
        assert!(matches!(&out[1], Frame::Element(iq) if iq.is("iq", ns::CLIENT)));
    }

    #[test]
    fn wrong_stream_namespace_is_refused() {
        let err = frames_of(
            "<stream:stream xmlns:stream='urn:wrong' xmlns='jabber:client'>",
            4,
        )
        .unwrap_err();
        assert_eq!(err.condition(), StreamCondition::InvalidNamespace);
    }

    #[test]
    fn standalone_frames_get_the_client_namespace() {
        let el = parse_standalone(b"<message to='x@y'/>", XmlLimits::with_max_size(100)).unwrap();
        assert_eq!(el.ns(), ns::CLIENT);
        let open = parse_standalone(
            b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
            XmlLimits::with_max_size(100),
        )
        .unwrap();
        assert_eq!(open.ns(), ns::FRAMING);
        assert_eq!(
            parse_standalone(b"<a>", XmlLimits::with_max_size(100))
                .unwrap_err()
                .condition(),
            StreamCondition::NotWellFormed
        );
    }
}
