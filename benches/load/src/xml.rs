//! Minimal incremental XMPP stream splitter: finds the stream header and the
//! complete top-level stanzas in a byte buffer, without building a tree.
//!
//! It only tracks tag boundaries and nesting depth (respecting both quote
//! styles inside tags), so it is robust to TCP splitting at any byte and costs
//! one pass over the input.

use std::ops::Range;

/// Something found in the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Ev {
    /// `<stream:stream ...>` (the stream header).
    Open,
    /// A complete top-level element, as a byte range of the buffer.
    Stanza(Range<usize>),
    /// `</stream:stream>`.
    Close,
}

/// Resumable scanner state over a growing buffer.
#[derive(Debug, Default)]
pub struct Splitter {
    /// Scan position; always at a tag boundary or inside text.
    pos: usize,
    /// 0 = before the stream header, 1 = between stanzas, >= 2 inside a stanza.
    depth: u32,
    /// Start of the stanza currently being read (when depth >= 2).
    start: Option<usize>,
}

impl Splitter {
    pub fn reset(&mut self) {
        *self = Splitter::default();
    }

    /// Bytes at the front of the buffer that are no longer needed.
    pub fn consumed(&self) -> usize {
        self.start.unwrap_or(self.pos)
    }

    /// Drop consumed bytes from the front of `buf` and shift positions.
    pub fn compact(&mut self, buf: &mut Vec<u8>) {
        let cut = self.consumed();
        if cut == 0 {
            return;
        }
        if cut == buf.len() {
            buf.clear();
        } else {
            buf.drain(..cut);
        }
        self.pos -= cut;
        if let Some(s) = self.start.as_mut() {
            *s -= cut;
        }
    }

    /// Next event in `buf`, or `None` if more bytes are needed.
    pub fn next(&mut self, buf: &[u8]) -> Result<Option<Ev>, String> {
        loop {
            let Some(off) = buf[self.pos..].iter().position(|&b| b == b'<') else {
                // Text (whitespace keepalives between stanzas, or content).
                self.pos = buf.len();
                return Ok(None);
            };
            let lt = self.pos + off;
            let Some(gt) = tag_end(buf, lt) else {
                self.pos = lt;
                return Ok(None);
            };
            let tag = &buf[lt..=gt];
            self.pos = gt + 1;
            if tag.len() < 3 {
                return Err(format!("malformed tag {}", snippet(tag)));
            }
            match tag[1] {
                b'?' | b'!' => continue,
                b'/' => {
                    if self.depth == 0 {
                        return Err(format!("unexpected end tag {}", snippet(tag)));
                    }
                    self.depth -= 1;
                    match self.depth {
                        0 => return Ok(Some(Ev::Close)),
                        1 => {
                            let s = self.start.take().unwrap_or(lt);
                            return Ok(Some(Ev::Stanza(s..self.pos)));
                        }
                        _ => {}
                    }
                }
                _ => {
                    let self_closing = tag[tag.len() - 2] == b'/';
                    match self.depth {
                        0 => {
                            if self_closing {
                                return Err(format!(
                                    "expected a stream header, got {}",
                                    snippet(tag)
                                ));
                            }
                            self.depth = 1;
                            return Ok(Some(Ev::Open));
                        }
                        1 => {
                            if self_closing {
                                return Ok(Some(Ev::Stanza(lt..self.pos)));
                            }
                            self.start = Some(lt);
                            self.depth = 2;
                        }
                        _ => {
                            if !self_closing {
                                self.depth += 1;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Index of the `>` closing the tag that starts at `lt`, skipping quoted values.
fn tag_end(buf: &[u8], lt: usize) -> Option<usize> {
    let mut quote = 0u8;
    for (i, &b) in buf.iter().enumerate().skip(lt + 1) {
        if quote != 0 {
            if b == quote {
                quote = 0;
            }
        } else if b == b'\'' || b == b'"' {
            quote = b;
        } else if b == b'>' {
            return Some(i);
        }
    }
    None
}

/// Qualified name of the element starting at `el[0] == b'<'`.
pub fn name(el: &[u8]) -> &[u8] {
    let rest = el.get(1..).unwrap_or_default();
    let end = rest
        .iter()
        .position(|&b| b.is_ascii_whitespace() || b == b'/' || b == b'>')
        .unwrap_or(rest.len());
    &rest[..end]
}

/// Local name (prefix stripped) of the element starting at `el[0] == b'<'`.
pub fn local_name(el: &[u8]) -> &[u8] {
    let n = name(el);
    match n.iter().position(|&b| b == b':') {
        Some(i) => &n[i + 1..],
        None => n,
    }
}

/// Value of attribute `attr` in the start tag of `el` (either quote style).
pub fn attr<'a>(el: &'a [u8], attr: &[u8]) -> Option<&'a [u8]> {
    let end = tag_end(el, 0).unwrap_or(el.len());
    let tag = &el[..end];
    let mut from = 0;
    while let Some(i) = find(&tag[from..], attr) {
        let at = from + i;
        from = at + attr.len();
        if at == 0 || !tag[at - 1].is_ascii_whitespace() {
            continue;
        }
        let mut j = at + attr.len();
        while j < tag.len() && tag[j].is_ascii_whitespace() {
            j += 1;
        }
        if tag.get(j) != Some(&b'=') {
            continue;
        }
        j += 1;
        while j < tag.len() && tag[j].is_ascii_whitespace() {
            j += 1;
        }
        let q = *tag.get(j)?;
        if q != b'\'' && q != b'"' {
            return None;
        }
        let v = &tag[j + 1..];
        let close = v.iter().position(|&b| b == q)?;
        return Some(&v[..close]);
    }
    None
}

/// Text content of the first `<tag>...</tag>` child (no attributes expected).
pub fn child_text<'a>(el: &'a [u8], open: &[u8], close: &[u8]) -> Option<&'a [u8]> {
    let s = find(el, open)? + open.len();
    let e = find(&el[s..], close)?;
    Some(&el[s..s + e])
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        let off = hay[i..=hay.len() - needle.len()]
            .iter()
            .position(|&b| b == first)?;
        i += off;
        if &hay[i..i + needle.len()] == needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}

/// Printable prefix of some bytes, for error messages.
pub fn snippet(b: &[u8]) -> String {
    const MAX: usize = 300;
    let s = String::from_utf8_lossy(&b[..b.len().min(MAX)]).into_owned();
    if b.len() > MAX {
        format!("{s}...")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8]) -> Vec<String> {
        let mut s = Splitter::default();
        let mut out = Vec::new();
        while let Some(ev) = s.next(input).unwrap() {
            out.push(match ev {
                Ev::Open => "OPEN".into(),
                Ev::Close => "CLOSE".into(),
                Ev::Stanza(r) => String::from_utf8_lossy(&input[r]).into_owned(),
            });
        }
        out
    }

    const STREAM: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' id=\"a>b\">\n\
        <stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features> \
        <success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/><message to='a' type=\"chat\"><body>1 2</body></message></stream:stream>";

    #[test]
    fn splits_whole() {
        let v = all(STREAM);
        assert_eq!(v.len(), 5);
        assert_eq!(v[0], "OPEN");
        assert!(v[1].starts_with("<stream:features>") && v[1].ends_with("</stream:features>"));
        assert_eq!(v[2], "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
        assert!(v[3].starts_with("<message"));
        assert_eq!(v[4], "CLOSE");
    }

    #[test]
    fn splits_byte_by_byte_with_compaction() {
        let mut s = Splitter::default();
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for &b in STREAM {
            buf.push(b);
            while let Some(ev) = s.next(&buf).unwrap() {
                out.push(match ev {
                    Ev::Open => "OPEN".to_string(),
                    Ev::Close => "CLOSE".to_string(),
                    Ev::Stanza(r) => String::from_utf8_lossy(&buf[r]).into_owned(),
                });
            }
            s.compact(&mut buf);
        }
        assert_eq!(out, all(STREAM));
    }

    #[test]
    fn attributes_both_quotes() {
        let el = b"<iq type=\"result\" id='b' xml:lang='en'><bind/></iq>";
        assert_eq!(attr(el, b"type"), Some(&b"result"[..]));
        assert_eq!(attr(el, b"id"), Some(&b"b"[..]));
        assert_eq!(attr(el, b"lang"), None);
        assert_eq!(
            attr(b"<message xid='1' id = \"2\">", b"id"),
            Some(&b"2"[..])
        );
        assert_eq!(local_name(b"<stream:error>"), b"error");
        assert_eq!(name(b"<iq/>"), b"iq");
        assert_eq!(
            child_text(
                b"<message><body>1 2</body></message>",
                b"<body>",
                b"</body>"
            ),
            Some(&b"1 2"[..])
        );
    }

    #[test]
    fn rejects_garbage_end_tag() {
        let mut s = Splitter::default();
        assert!(s.next(b"</x>").is_err());
    }
}
