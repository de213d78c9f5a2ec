-- XEP-0484 FAST tokens: at most two per account and client, in the slots 'current' (last used)
-- and 'new' (issued, not used yet). client_id is the SASL2 <user-agent id='…'/>.
CREATE TABLE fast_tokens (
    username      TEXT COLLATE "C" NOT NULL REFERENCES accounts (username) ON DELETE CASCADE,
    client_id     TEXT COLLATE "C" NOT NULL,
    slot          TEXT COLLATE "C" NOT NULL CHECK (slot IN ('current', 'new')),
    -- Kept as issued: the HT mechanisms need the token itself as their HMAC key (see
    -- src/storage/fast.rs).
    token         TEXT COLLATE "C" NOT NULL,
    mechanism     TEXT COLLATE "C" NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    -- Highest <fast count='…'/> accepted with this token; NULL until a client sends one.
    last_count    BIGINT,
    PRIMARY KEY (username, client_id, slot)
);
