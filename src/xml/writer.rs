//! Serializes `minidom::Element`s for the wire.
//!
//! We do not use minidom's own writer: it re-declares the prefixes a parsed element carried and
//! asserts when a child re-binds one of them, which a client could trigger on purpose. Here every
//! element is written in default-namespace form (`xmlns='…'` wherever the namespace changes), so
//! prefixes from the input never reach the output. The one prefix written is our own `stream:`,
//! on the top-level elements of the stream namespace (`stream_element_to_bytes`).

use minidom::{Element, Node};

use super::ns;

/// The element as bytes, with `xmlns` on the top element.
pub fn to_bytes(el: &Element) -> Vec<u8> {
    let mut out = String::with_capacity(256);
    write_element(el, None, &mut out);
    out.into_bytes()
}

/// The element as bytes for a stream whose default namespace stands for `default_ns`: a
/// `jabber:client` stanza written on a server-to-server stream carries no `xmlns`, so it is
/// read in the stream's `jabber:server` (RFC 6120 §4.8.3), children included; elements of
/// other namespaces, and `jabber:client` ones nested under them (a forwarded message), keep
/// their own declaration.
pub fn to_bytes_in_default(el: &Element, default_ns: &str) -> Vec<u8> {
    let mut out = String::with_capacity(256);
    write_element(el, Some(default_ns), &mut out);
    out.into_bytes()
}

pub fn to_string(el: &Element) -> String {
    let mut out = String::with_capacity(256);
    write_element(el, None, &mut out);
    out
}

/// An element of the stream namespace (`<stream:features>`, `<stream:error>`) as bytes, with
/// the `stream` prefix clients look for. `declare_prefix` binds it on the element itself, for
/// transports where no stream header did (RFC 7395 WebSocket messages stand alone). Its
/// children declare their namespaces whatever the default in scope: the stream header's
/// `jabber:client` on TCP, none on WebSocket.
pub fn stream_element_to_bytes(el: &Element, declare_prefix: bool) -> Vec<u8> {
    if el.ns() != ns::STREAM {
        return to_bytes(el);
    }
    let mut out = String::with_capacity(256);
    out.push_str("<stream:");
    out.push_str(el.name());
    if declare_prefix {
        out.push_str(" xmlns:stream='");
        escape_attr_into(ns::STREAM, &mut out);
        out.push('\'');
    }
    write_attrs(el, &mut out);
    write_content(el, "stream:", None, &mut out);
    out.into_bytes()
}

/// The element written with `prefix`, which the stream header bound to its namespace: how
/// Server Dialback's `<db:result/>` and `<db:verify/>` go out, since some servers (ejabberd)
/// match those by their prefixed name rather than by namespace. Children declare their own
/// namespaces.
pub fn prefixed_to_bytes(el: &Element, prefix: &str) -> Vec<u8> {
    let mut out = String::with_capacity(128);
    let prefix = format!("{prefix}:");
    out.push('<');
    out.push_str(&prefix);
    out.push_str(el.name());
    write_attrs(el, &mut out);
    write_content(el, &prefix, None, &mut out);
    out.into_bytes()
}

fn write_element(el: &Element, parent_ns: Option<&str>, out: &mut String) {
    let el_ns = el.ns();
    out.push('<');
    out.push_str(el.name());
    if parent_ns != Some(el_ns.as_str()) {
        out.push_str(" xmlns='");
        escape_attr_into(&el_ns, out);
        out.push('\'');
    }
    write_attrs(el, out);
    write_content(el, "", Some(el_ns.as_str()), out);
}

fn write_attrs(el: &Element, out: &mut String) {
    let mut extra_prefix = 0usize;
    for ((attr_ns, name), value) in el.attrs().iter() {
        out.push(' ');
        let attr_ns = attr_ns.as_str();
        if attr_ns.is_empty() {
            out.push_str(name.as_str());
        } else if attr_ns == ns::XML {
            out.push_str("xml:");
            out.push_str(name.as_str());
        } else {
            // A namespaced attribute needs a prefix; bind a fresh one on this element.
            extra_prefix += 1;
            let prefix = format!("a{extra_prefix}");
            out.push_str("xmlns:");
            out.push_str(&prefix);
            out.push_str("='");
            escape_attr_into(attr_ns, out);
            out.push_str("' ");
            out.push_str(&prefix);
            out.push(':');
            out.push_str(name.as_str());
        }
        out.push_str("='");
        escape_attr_into(value, out);
        out.push('\'');
    }
}

/// Ends the start tag, then writes the children and the end tag (`prefix` is the start tag's);
/// children declare their namespace unless it is `default_ns`.
fn write_content(el: &Element, prefix: &str, default_ns: Option<&str>, out: &mut String) {
    let mut nodes = el.nodes().peekable();
    if nodes.peek().is_none() {
        out.push_str("/>");
        return;
    }
    out.push('>');
    for node in nodes {
        match node {
            Node::Element(child) => write_element(child, default_ns, out),
            Node::Text(text) => escape_text_into(text, out),
        }
    }
    out.push_str("</");
    out.push_str(prefix);
    out.push_str(el.name());
    out.push('>');
}

pub fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_text_into(s, &mut out);
    out
}

pub fn escape_attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_attr_into(s, &mut out);
    out
}

fn escape_text_into(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\r' => out.push_str("&#xD;"),
            _ => out.push(c),
        }
    }
}

fn escape_attr_into(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            '\t' => out.push_str("&#x9;"),
            _ => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{parse_standalone, XmlLimits};

    fn roundtrip(xml: &str) -> (Element, Element) {
        let first = parse_standalone(xml.as_bytes(), XmlLimits::with_max_size(1 << 20))
            .expect("input parses");
        let written = to_string(&first);
        let second = parse_standalone(written.as_bytes(), XmlLimits::with_max_size(1 << 20))
            .unwrap_or_else(|e| panic!("output {written} does not parse: {e}"));
        (first, second)
    }

    #[test]
    fn a_prefixed_element_keeps_the_prefix_and_its_children_their_namespaces() {
        let el: Element = "<result xmlns='jabber:server:dialback' from='a' to='b' type='error'>\
            <error xmlns='jabber:server' type='cancel'/></result>"
            .parse()
            .expect("parses");
        let written = String::from_utf8(prefixed_to_bytes(&el, "db")).expect("utf8");
        assert!(written.starts_with("<db:result "), "{written}");
        assert!(written.ends_with("<error xmlns='jabber:server' type='cancel'/></db:result>"));
        assert!(!written.contains("xmlns='jabber:server:dialback'"));
    }

    #[test]
    fn a_client_stanza_on_a_server_stream_takes_the_streams_namespace() {
        let el: Element = "<message xmlns='jabber:client' to='a@b'><body>hi</body>\
            <forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client'/></forwarded>\
            </message>"
            .parse()
            .expect("parses");
        let written = String::from_utf8(to_bytes_in_default(&el, ns::CLIENT)).expect("utf8");
        assert_eq!(
            written,
            "<message to='a@b'><body>hi</body><forwarded xmlns='urn:xmpp:forward:0'>\
             <message xmlns='jabber:client'/></forwarded></message>"
        );
    }

    #[test]
    fn conflicting_prefixes_and_special_characters_survive() {
        let (a, b) = roundtrip(
            "<message xmlns='jabber:client' xmlns:x='urn:a' to='b&amp;c' xml:lang='en'>\
             <x:body xmlns:x='urn:b' x:attr='&apos;&quot;'>1 &lt; 2 &amp; 3</x:body>\
             <y xmlns='urn:c'><z/></y></message>",
        );
        assert_eq!(to_string(&a), to_string(&b));
        let body = b
            .get_child("body", "urn:b")
            .expect("body kept its namespace");
        assert_eq!(body.text(), "1 < 2 & 3");
        assert_eq!(body.attr_ns("urn:a", "attr"), None);
        assert_eq!(b.attr("to"), Some("b&c"));
        assert_eq!(b.attr_ns(ns::XML, "lang"), Some("en"));
    }

    #[test]
    fn stream_elements_keep_their_prefix() {
        let mut features = Element::bare("features", ns::STREAM);
        let mut starttls = Element::bare("starttls", ns::TLS);
        starttls.append_child(Element::bare("required", ns::TLS));
        features.append_child(starttls);
        features.append_child(Element::bare("sm", "urn:xmpp:sm:3"));
        let tcp = String::from_utf8(stream_element_to_bytes(&features, false)).unwrap();
        assert_eq!(
            tcp,
            "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/>\
             </starttls><sm xmlns='urn:xmpp:sm:3'/></stream:features>"
        );
        let ws = String::from_utf8(stream_element_to_bytes(&features, true)).unwrap();
        assert_eq!(
            ws,
            tcp.replacen(
                "<stream:features>",
                "<stream:features xmlns:stream='http://etherx.jabber.org/streams'>",
                1
            )
        );
        let read = parse_standalone(ws.as_bytes(), XmlLimits::with_max_size(4096)).unwrap();
        assert!(read.is("features", ns::STREAM));
        assert!(read.has_child("starttls", ns::TLS));
        assert!(read.has_child("sm", "urn:xmpp:sm:3"));

        let empty = Element::bare("features", ns::STREAM);
        assert_eq!(
            stream_element_to_bytes(&empty, false),
            b"<stream:features/>"
        );
        let other = Element::bare("x", "urn:x");
        assert_eq!(stream_element_to_bytes(&other, true), to_bytes(&other));
    }

    #[test]
    fn child_in_same_namespace_omits_xmlns() {
        let el = parse_standalone(
            b"<iq xmlns='jabber:client'><a/></iq>",
            XmlLimits::with_max_size(4096),
        )
        .unwrap();
        assert_eq!(to_string(&el), "<iq xmlns='jabber:client'><a/></iq>");
    }
}
