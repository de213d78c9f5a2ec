//! Serializes `minidom::Element`s for the wire.
//!
//! We do not use minidom's own writer: it re-declares the prefixes a parsed element carried and
//! asserts when a child re-binds one of them, which a client could trigger on purpose. Here every
//! element is written in default-namespace form (`xmlns='…'` wherever the namespace changes), so
//! prefixes from the input never reach the output.

use minidom::{Element, Node};

use super::ns;

/// The element as bytes, with `xmlns` on the top element.
pub fn to_bytes(el: &Element) -> Vec<u8> {
    let mut out = String::with_capacity(256);
    write_element(el, None, &mut out);
    out.into_bytes()
}

pub fn to_string(el: &Element) -> String {
    let mut out = String::with_capacity(256);
    write_element(el, None, &mut out);
    out
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
    let mut nodes = el.nodes().peekable();
    if nodes.peek().is_none() {
        out.push_str("/>");
        return;
    }
    out.push('>');
    for node in nodes {
        match node {
            Node::Element(child) => write_element(child, Some(el_ns.as_str()), out),
            Node::Text(text) => escape_text_into(text, out),
        }
    }
    out.push_str("</");
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
    fn child_in_same_namespace_omits_xmlns() {
        let el = parse_standalone(
            b"<iq xmlns='jabber:client'><a/></iq>",
            XmlLimits::with_max_size(4096),
        )
        .unwrap();
        assert_eq!(to_string(&el), "<iq xmlns='jabber:client'><a/></iq>");
    }
}
