-- Accounts, their SCRAM credentials and their offline messages.
-- Usernames compare byte-wise (BINARY), matching the "C" collation used on PostgreSQL, so both
-- backends sort them the same way.

CREATE TABLE accounts (
    username   TEXT NOT NULL PRIMARY KEY,
    -- UTC, ISO 8601; informational only.
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE scram_credentials (
    username   TEXT    NOT NULL REFERENCES accounts (username) ON DELETE CASCADE,
    hash       TEXT    NOT NULL CHECK (hash IN ('SCRAM-SHA-1', 'SCRAM-SHA-256')),
    salt       BLOB    NOT NULL,
    iterations INTEGER NOT NULL CHECK (iterations > 0 AND iterations <= 4294967295),
    stored_key BLOB    NOT NULL,
    server_key BLOB    NOT NULL,
    PRIMARY KEY (username, hash)
);

-- `id` is supplied by the server (time-sortable, see src/ids.rs); INTEGER PRIMARY KEY makes it
-- the rowid, so it costs no extra index.
CREATE TABLE offline_messages (
    id             INTEGER NOT NULL PRIMARY KEY,
    username       TEXT    NOT NULL REFERENCES accounts (username) ON DELETE CASCADE,
    received_at_ms INTEGER NOT NULL,
    stanza         TEXT    NOT NULL
);

CREATE INDEX offline_messages_username_id ON offline_messages (username, id);
