-- XEP-0484 FAST tokens: at most two per account and client, in the slots 'current' (last used)
-- and 'new' (issued, not used yet). client_id is the SASL2 <user-agent id='…'/>.
CREATE TABLE fast_tokens (
    username      TEXT NOT NULL REFERENCES accounts (username) ON DELETE CASCADE,
    client_id     TEXT NOT NULL,
    slot          TEXT NOT NULL CHECK (slot IN ('current', 'new')),
    -- Kept as issued: the HT mechanisms need the token itself as their HMAC key (see
    -- src/storage/fast.rs).
    token         TEXT NOT NULL,
    mechanism     TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    -- Highest <fast count='…'/> accepted with this token; NULL until a client sends one.
    last_count    INTEGER,
    PRIMARY KEY (username, client_id, slot)
);
