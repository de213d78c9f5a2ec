//! Building blocks for rate limits that modules share. The limits themselves live with what
//! they limit (subscription requests in `modules::presence`, groupchat messages in
//! `modules::muc`); see README "Limits".

pub mod bucket;
