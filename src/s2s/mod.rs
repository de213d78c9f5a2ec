//! Server-to-server federation (RFC 6120 §13): streams in the `jabber:server` namespace with
//! other servers, in both directions, authenticated with certificates (SASL EXTERNAL,
//! XEP-0178) or Server Dialback (XEP-0220), and the router's egress to other domains.

pub mod resolve;
