-- Message archive (XEP-0313) and archiving preferences.
-- `owner` is the archive's bare JID (a user's `user@domain`; later also MUC rooms), so there is
-- no foreign key to `accounts`. `id` is the server-generated, time-sortable id (src/ids.rs),
-- globally unique, so it is the rowid; paging scans (owner, id), filtering on with_jid when a
-- query names one. There is no (owner, with_jid, id) index here, unlike PostgreSQL: every index
-- is one more page written per archived message on the embedded database's single writer, and
-- archives are capped (mam.max_messages_per_user), so a `with` query scans at most one archive.

CREATE TABLE archive (
    id       INTEGER NOT NULL PRIMARY KEY,
    owner    TEXT    NOT NULL,
    ts_ms    INTEGER NOT NULL,
    with_jid TEXT    NOT NULL,
    -- 1 when the owner sent it, 0 when the owner received it.
    outgoing INTEGER NOT NULL CHECK (outgoing IN (0, 1)),
    stanza   TEXT    NOT NULL
);

CREATE INDEX archive_owner_id ON archive (owner, id);

CREATE TABLE archive_prefs (
    owner        TEXT NOT NULL PRIMARY KEY,
    default_mode TEXT NOT NULL CHECK (default_mode IN ('always', 'never', 'roster')),
    -- JSON arrays of bare JIDs.
    always_jids  TEXT NOT NULL,
    never_jids   TEXT NOT NULL
);
