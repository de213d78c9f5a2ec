//! `<stream:error/>` (RFC 6120 §4.9) and the stream header, written one way for every stream
//! corvid opens (c2s over TCP today, s2s and components later) and for the accept loop's
//! refusal, which answers before any stream task exists.

use minidom::Element;
use xmpp_parsers::message::Lang;
use xmpp_parsers::stream_error::StreamError;

/// RFC 6120 §4.9.3 stream error conditions, as xmpp-parsers models them.
pub use xmpp_parsers::stream_error::DefinedCondition as StreamCondition;

use super::{escape_attr, ns};

/// The condition, our text in English when there is one, then an application-specific
/// condition (RFC 6120 §4.9.4).
pub fn element(condition: StreamCondition, text: Option<String>, app: Option<Element>) -> Element {
    Element::from(StreamError {
        condition,
        texts: text
            .map(|text| (Lang::from("en".to_owned()), text))
            .into_iter()
            .collect(),
        application_specific: app.into_iter().collect(),
    })
}

/// Our `<stream:stream>` opening tag for a stream whose default namespace is `default_ns`
/// (`jabber:client` for c2s), from `from` with stream id `id`.
pub fn header(default_ns: &str, id: &str, from: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' id='{}' from='{}' \
         version='1.0' xml:lang='en'>",
        escape_attr(default_ns),
        ns::STREAM,
        escape_attr(id),
        escape_attr(from),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_carries_its_condition_text_and_application_condition() {
        let app = Element::bare("too-many", "urn:example");
        let el = element(
            StreamCondition::PolicyViolation,
            Some("slow down".into()),
            Some(app),
        );
        assert!(el.is("error", ns::STREAM));
        assert!(el.has_child("policy-violation", ns::STREAMS_ERRORS));
        let text = el.get_child("text", ns::STREAMS_ERRORS).map(Element::text);
        assert_eq!(text.as_deref(), Some("slow down"));
        assert!(el.has_child("too-many", "urn:example"));
    }
}
