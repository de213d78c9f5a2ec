-- Message archive (XEP-0313) and archiving preferences.
-- `owner` is the archive's bare JID (a user's `user@domain`; later also MUC rooms), so there is
-- no foreign key to `accounts`. `id` is the server-generated, time-sortable id (src/ids.rs);
-- paging scans (owner, id) or (owner, with_jid, id).

CREATE TABLE archive (
    owner    TEXT COLLATE "C" NOT NULL,
    id       BIGINT  NOT NULL,
    ts_ms    BIGINT  NOT NULL,
    with_jid TEXT COLLATE "C" NOT NULL,
    outgoing BOOLEAN NOT NULL,
    stanza   TEXT    NOT NULL,
    PRIMARY KEY (owner, id)
);

CREATE INDEX archive_owner_with_id ON archive (owner, with_jid, id);

CREATE TABLE archive_prefs (
    owner        TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    default_mode TEXT NOT NULL CHECK (default_mode IN ('always', 'never', 'roster')),
    -- JSON arrays of bare JIDs.
    always_jids  TEXT NOT NULL,
    never_jids   TEXT NOT NULL
);
