-- Accounts, their SCRAM credentials and their offline messages.
-- Usernames use the "C" collation so they sort byte-wise whatever the database locale is,
-- exactly like SQLite's default BINARY collation.

CREATE TABLE accounts (
    username   TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    created_at TIMESTAMPTZ      NOT NULL DEFAULT now()
);

CREATE TABLE scram_credentials (
    username   TEXT COLLATE "C" NOT NULL REFERENCES accounts (username) ON DELETE CASCADE,
    hash       TEXT             NOT NULL CHECK (hash IN ('SCRAM-SHA-1', 'SCRAM-SHA-256')),
    salt       BYTEA            NOT NULL,
    -- BIGINT because the iteration count is a u32, which does not fit INTEGER.
    iterations BIGINT           NOT NULL CHECK (iterations > 0 AND iterations <= 4294967295),
    stored_key BYTEA            NOT NULL,
    server_key BYTEA            NOT NULL,
    PRIMARY KEY (username, hash)
);

-- `id` is supplied by the server (time-sortable, see src/ids.rs), not generated here.
CREATE TABLE offline_messages (
    id             BIGINT           NOT NULL PRIMARY KEY,
    username       TEXT COLLATE "C" NOT NULL REFERENCES accounts (username) ON DELETE CASCADE,
    received_at_ms BIGINT           NOT NULL,
    stanza         TEXT             NOT NULL
);

CREATE INDEX offline_messages_username_id ON offline_messages (username, id);
