//! Building blocks for rate limits. The limits themselves live with what they limit
//! (connections in `listen::admission`, bytes and stanzas in `stream::shaper`, subscription
//! requests in `modules::presence`, groupchat messages in `modules::muc`); see README
//! "Limits".

pub mod bucket;
