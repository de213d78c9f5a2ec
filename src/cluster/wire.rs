//! What the nodes write to Redis, in a compact text form: a session's directory entry, the
//! directory events, and the envelopes carried on the node channels. Everything read back is
//! checked: a malformed value is refused with an error, never trusted.

use jid::FullJid;

use crate::router::{Availability, NodeId, SessionFlags};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("malformed cluster record: {0}")]
    Malformed(&'static str),
}

fn malformed(what: &'static str) -> WireError {
    WireError::Malformed(what)
}

/// One session as the directory shares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Grows with every bind on the node (it starts from the clock, so a restarted node's
    /// sessions come after its earlier ones).
    pub seq: u64,
    pub availability: Availability,
    pub flags: SessionFlags,
}

impl Entry {
    /// `seq availability flags`, availability being `-` or the priority.
    pub fn encode(&self) -> String {
        format!(
            "{} {} {}",
            self.seq,
            encode_availability(self.availability),
            self.flags.bits()
        )
    }

    pub fn decode(value: &str) -> Result<Entry, WireError> {
        let mut parts = value.split(' ');
        let seq = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or(malformed("entry sequence"))?;
        let availability = decode_availability(parts.next())?;
        let flags = parts
            .next()
            .and_then(|s| s.parse().ok())
            .map(SessionFlags::from_bits)
            .ok_or(malformed("entry flags"))?;
        if parts.next().is_some() {
            return Err(malformed("entry has extra fields"));
        }
        Ok(Entry {
            seq,
            availability,
            flags,
        })
    }
}

fn encode_availability(availability: Availability) -> String {
    match availability {
        Availability::Unavailable => "-".to_owned(),
        Availability::Available(priority) => priority.to_string(),
    }
}

fn decode_availability(value: Option<&str>) -> Result<Availability, WireError> {
    match value {
        Some("-") => Ok(Availability::Unavailable),
        Some(priority) => priority
            .parse()
            .map(Availability::Available)
            .map_err(|_| malformed("availability")),
        None => Err(malformed("availability missing")),
    }
}

/// A change to a node's sessions, published on the directory channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The session is bound with this state (a bind, or a change of presence or flags).
    Set {
        node: NodeId,
        jid: FullJid,
        entry: Entry,
    },
    /// The session `seq` of `jid` ended.
    Unbound {
        node: NodeId,
        jid: FullJid,
        seq: u64,
    },
}

impl Event {
    pub fn node(&self) -> NodeId {
        match self {
            Event::Set { node, .. } | Event::Unbound { node, .. } => *node,
        }
    }

    /// The JID goes last: a resource may contain spaces.
    pub fn encode(&self) -> String {
        match self {
            Event::Set { node, jid, entry } => format!("S {} {} {}", node.0, entry.encode(), jid),
            Event::Unbound { node, jid, seq } => format!("D {} {} {}", node.0, seq, jid),
        }
    }

    pub fn decode(value: &str) -> Result<Event, WireError> {
        let (kind, rest) = value.split_once(' ').ok_or(malformed("event kind"))?;
        let (node, rest) = split_node(rest)?;
        match kind {
            "S" => {
                // seq, availability and flags, then the JID.
                let mut fields = rest.splitn(4, ' ');
                let seq = fields.next().ok_or(malformed("event sequence"))?;
                let availability = fields.next().ok_or(malformed("event availability"))?;
                let flags = fields.next().ok_or(malformed("event flags"))?;
                let jid = parse_jid(fields.next())?;
                let entry = Entry::decode(&format!("{seq} {availability} {flags}"))?;
                Ok(Event::Set { node, jid, entry })
            }
            "D" => {
                let (seq, jid) = rest.split_once(' ').ok_or(malformed("event sequence"))?;
                let seq = seq.parse().map_err(|_| malformed("event sequence"))?;
                Ok(Event::Unbound {
                    node,
                    jid: parse_jid(Some(jid))?,
                    seq,
                })
            }
            _ => Err(malformed("event kind")),
        }
    }
}

fn split_node(value: &str) -> Result<(NodeId, &str), WireError> {
    let (node, rest) = value.split_once(' ').ok_or(malformed("node"))?;
    let node = node.parse().map_err(|_| malformed("node"))?;
    Ok((NodeId(node), rest))
}

fn parse_jid(value: Option<&str>) -> Result<FullJid, WireError> {
    value
        .and_then(full_jid_in_normal_form)
        .ok_or(malformed("full JID"))
}

/// A full JID as nodes write it: already in its normal form (`address::parse`), so it reads
/// back as itself. Anything else was not written by a node. The `jid` crate's preparation
/// alone is not idempotent for some input (U+03F9 comes out as an upper-case sigma that a
/// second pass lower-cases), and a JID that changes on each reading would name different
/// sessions on different nodes.
pub(super) fn full_jid_in_normal_form(value: &str) -> Option<FullJid> {
    let jid = crate::address::parse_full(value)?;
    (jid.as_str() == value).then_some(jid)
}

/// What travels on a node channel (or the channel for all nodes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Envelope {
    /// A stanza for the session `to`, serialized; `seq` counts the stanzas from `from` to
    /// the receiving node, which acknowledges them (`Ack`).
    Stanza {
        from: NodeId,
        seq: u64,
        to: FullJid,
        xml: Vec<u8>,
    },
    /// One stanza for several sessions of the receiving node (a room's message to its
    /// occupants there), serialized once without `to`; numbered as `Stanza`.
    Group {
        from: NodeId,
        seq: u64,
        to: Vec<FullJid>,
        xml: Vec<u8>,
    },
    /// The receiving node handed every stanza from `from` up to `upto` to its sessions.
    Ack { from: NodeId, upto: u64 },
    /// Another node bound `to`: the session here must end with `<conflict/>`.
    Replaced { from: NodeId, to: FullJid },
    /// A module's message on `topic`.
    Topic {
        from: NodeId,
        topic: String,
        payload: Vec<u8>,
    },
    /// A module's message on `topic` that every node answers with `Applied { id }` once it
    /// handled it (`confirm`).
    Awaited {
        from: NodeId,
        id: u64,
        topic: String,
        payload: Vec<u8>,
    },
    /// The node `from` handled the `Awaited` broadcast numbered `id`.
    Applied { from: NodeId, id: u64 },
}

impl Envelope {
    /// A header line, then the body.
    pub fn encode(&self) -> Vec<u8> {
        let (header, body): (String, &[u8]) = match self {
            Envelope::Stanza { from, seq, to, xml } => {
                (format!("M {} {} {}\n", from.0, seq, to), xml)
            }
            Envelope::Group { from, seq, to, xml } => {
                // The recipients one per line after the header, then an empty line.
                let mut header = format!("G {} {}\n", from.0, seq);
                for jid in to {
                    header.push_str(jid.as_str());
                    header.push('\n');
                }
                header.push('\n');
                (header, xml)
            }
            Envelope::Ack { from, upto } => (format!("A {} {}\n", from.0, upto), &[]),
            Envelope::Replaced { from, to } => (format!("R {} {}\n", from.0, to), &[]),
            Envelope::Topic {
                from,
                topic,
                payload,
            } => (format!("T {} {}\n", from.0, topic), payload),
            Envelope::Awaited {
                from,
                id,
                topic,
                payload,
            } => (format!("W {} {} {}\n", from.0, id, topic), payload),
            Envelope::Applied { from, id } => (format!("P {} {}\n", from.0, id), &[]),
        };
        let mut out = Vec::with_capacity(header.len() + body.len());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(body);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Envelope, WireError> {
        let newline = bytes
            .iter()
            .position(|b| *b == b'\n')
            .ok_or(malformed("envelope header"))?;
        let header =
            std::str::from_utf8(&bytes[..newline]).map_err(|_| malformed("envelope header"))?;
        let body = &bytes[newline + 1..];
        let (kind, rest) = header.split_once(' ').ok_or(malformed("envelope kind"))?;
        let (from, rest) = split_node(rest)?;
        match kind {
            "M" => {
                let (seq, to) = rest.split_once(' ').ok_or(malformed("stanza sequence"))?;
                Ok(Envelope::Stanza {
                    from,
                    seq: seq.parse().map_err(|_| malformed("stanza sequence"))?,
                    to: parse_jid(Some(to))?,
                    xml: body.to_vec(),
                })
            }
            "G" => {
                let seq = rest.parse().map_err(|_| malformed("group sequence"))?;
                let end = body
                    .windows(2)
                    .position(|w| w == b"\n\n")
                    .ok_or(malformed("group recipients"))?;
                let list =
                    std::str::from_utf8(&body[..end]).map_err(|_| malformed("group recipients"))?;
                let to = list
                    .split('\n')
                    .map(|jid| parse_jid(Some(jid)))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Envelope::Group {
                    from,
                    seq,
                    to,
                    xml: body[end + 2..].to_vec(),
                })
            }
            "A" if body.is_empty() => Ok(Envelope::Ack {
                from,
                upto: rest
                    .parse()
                    .map_err(|_| malformed("acknowledged sequence"))?,
            }),
            "R" => Ok(Envelope::Replaced {
                from,
                to: parse_jid(Some(rest))?,
            }),
            "T" if !rest.is_empty() => Ok(Envelope::Topic {
                from,
                topic: rest.to_owned(),
                payload: body.to_vec(),
            }),
            "W" => {
                let (id, topic) = rest.split_once(' ').ok_or(malformed("awaited topic"))?;
                if topic.is_empty() {
                    return Err(malformed("awaited topic"));
                }
                Ok(Envelope::Awaited {
                    from,
                    id: id.parse().map_err(|_| malformed("awaited number"))?,
                    topic: topic.to_owned(),
                    payload: body.to_vec(),
                })
            }
            "P" if body.is_empty() => Ok(Envelope::Applied {
                from,
                id: rest.parse().map_err(|_| malformed("applied number"))?,
            }),
            _ => Err(malformed("envelope kind")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> FullJid {
        FullJid::new(s).unwrap()
    }

    #[test]
    fn entries_and_events_read_back_as_written() {
        let entry = Entry {
            seq: 1_733_000_000_000_123,
            availability: Availability::Available(-5),
            flags: SessionFlags::from_bits(6),
        };
        assert_eq!(Entry::decode(&entry.encode()), Ok(entry));
        let set = Event::Set {
            node: NodeId(3),
            jid: jid("a@x/phone with spaces"),
            entry,
        };
        assert_eq!(Event::decode(&set.encode()), Ok(set));
        let gone = Event::Unbound {
            node: NodeId(1023),
            jid: jid("b@x/r"),
            seq: 9,
        };
        assert_eq!(Event::decode(&gone.encode()), Ok(gone));
    }

    #[test]
    fn envelopes_read_back_as_written() {
        for envelope in [
            Envelope::Stanza {
                from: NodeId(2),
                seq: 41,
                to: jid("a@x/r"),
                xml: b"<message xmlns='jabber:client'>\n<body/></message>".to_vec(),
            },
            Envelope::Replaced {
                from: NodeId(0),
                to: jid("a@x/r r"),
            },
            Envelope::Ack {
                from: NodeId(5),
                upto: 7,
            },
            Envelope::Group {
                from: NodeId(1),
                seq: 9,
                to: vec![jid("a@x/r"), jid("b@x/with space")],
                xml: b"<message xmlns='jabber:client'>\n\n</message>".to_vec(),
            },
            Envelope::Topic {
                from: NodeId(7),
                topic: "iq-answer".into(),
                payload: vec![0, 1, 2, b'\n'],
            },
            Envelope::Awaited {
                from: NodeId(3),
                id: 1_765_000_000_000_000_001,
                topic: "blocklist".into(),
                payload: b"alice".to_vec(),
            },
            Envelope::Applied {
                from: NodeId(4),
                id: 12,
            },
        ] {
            assert_eq!(Envelope::decode(&envelope.encode()), Ok(envelope));
        }
    }

    #[test]
    fn malformed_records_are_refused() {
        for bad in ["", "1", "1 x 0", "1 - 0 9", "x - 0", "1 300 0"] {
            assert!(Entry::decode(bad).is_err(), "{bad:?}");
        }
        for bad in [
            "",
            "S",
            "S 1",
            "S 1 2 - 0",
            "D 1 x a@b/c",
            "D 99999 1 a@b/c",
            "X 1 1 a@b/c",
            "D 1 1 @@",
            "D 1 9 b@((rO~OOO\u{3f9}ppppppp,,\u{1cd}+/,,,,W",
            "D 1 9 B@x/r",
        ] {
            assert!(Event::decode(bad).is_err(), "{bad:?}");
        }
        for bad in [
            &b""[..],
            b"M 1 a@b/c",
            b"Q 1 a@b/c\n",
            b"T 1 \n",
            b"M x a@b/c\n",
            b"M 1 a@b/c\n",
            b"M 1 x a@b/c\n",
            b"A 1 x\n",
            b"A 1 2\nbody",
            b"G 1 2\na@b/c\n",
            b"G 1 2\n\n<x/>",
            b"G 1 2\nnot a jid\n\n<x/>",
            b"R 1 a@b\n",
            // Found by the fuzzer: the `jid` crate alone reads this as one JID, and its own
            // output as another.
            "R 1 b@((rO~OOO\u{3f9}ppppppp,,\u{1cd}+/,,,,W\n".as_bytes(),
            b"R 1 A@b/c\n",
            b"W 1 2\n",
            b"W 1 2 \n",
            b"W 1 x topic\n",
            b"P 1 x\n",
            b"P 1 2\nbody",
        ] {
            assert!(Envelope::decode(bad).is_err(), "{bad:?}");
        }
    }
}
