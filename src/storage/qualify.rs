//! Accounts keyed by their full bare JID. Releases that served one domain stored an account, and
//! everything kept for it, under its localpart alone; the first start of a release with several
//! hosted domains moves those rows under `localpart@domain` (the configured main domain), in one
//! transaction, so either every row moved or none did.
//!
//! The statements are plain SQL both backends run as they are. Parent rows are copied before
//! their children move and deleted after, so no foreign key is ever broken midway (PostgreSQL's
//! cannot be deferred). A localpart never contains '@' (RFC 7622 §3.3.1), so "has no '@'" is
//! exactly "not moved yet", and running them again moves nothing.

/// `$1` is the domain. In order: copy the parents, move the children, drop the old parents.
pub(crate) const STATEMENTS: &[&str] = &[
    "INSERT INTO accounts (username, created_at) \
     SELECT username || '@' || $1, created_at FROM accounts WHERE username NOT LIKE '%@%'",
    "INSERT INTO pep_nodes (owner, node, access_model, max_items, persist_items, send_last_item) \
     SELECT owner || '@' || $1, node, access_model, max_items, persist_items, send_last_item \
     FROM pep_nodes WHERE owner NOT LIKE '%@%'",
    "UPDATE pep_items SET owner = owner || '@' || $1 WHERE owner NOT LIKE '%@%'",
    "DELETE FROM pep_nodes WHERE owner NOT LIKE '%@%'",
    "UPDATE scram_credentials SET username = username || '@' || $1 WHERE username NOT LIKE '%@%'",
    "UPDATE offline_messages SET username = username || '@' || $1 WHERE username NOT LIKE '%@%'",
    "UPDATE roster_items SET username = username || '@' || $1 WHERE username NOT LIKE '%@%'",
    "UPDATE roster_versions SET username = username || '@' || $1 WHERE username NOT LIKE '%@%'",
    "UPDATE roster_pending_in SET username = username || '@' || $1 WHERE username NOT LIKE '%@%'",
    "UPDATE last_activity SET username = username || '@' || $1 WHERE username NOT LIKE '%@%'",
    "UPDATE blocklist_items SET username = username || '@' || $1 WHERE username NOT LIKE '%@%'",
    "UPDATE vcards SET username = username || '@' || $1 WHERE username NOT LIKE '%@%'",
    "UPDATE fast_tokens SET username = username || '@' || $1 WHERE username NOT LIKE '%@%'",
    "UPDATE push_registrations SET username = username || '@' || $1 WHERE username NOT LIKE '%@%'",
    "DELETE FROM accounts WHERE username NOT LIKE '%@%'",
];
