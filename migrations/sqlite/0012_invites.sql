-- XEP-0401 invites: a secret token that lets one person create an account (or, XEP-0379, have
-- a subscription approved) until it expires; used at most once.
CREATE TABLE invites (
    token         TEXT PRIMARY KEY,
    -- The hosted domain the account is created on.
    domain        TEXT NOT NULL,
    -- Who invited; NULL when the operator did. Their invites go with their account.
    inviter       TEXT REFERENCES accounts (username) ON DELETE CASCADE,
    -- The only username the invite may create, when the inviter fixed one.
    username      TEXT,
    -- The new account and the inviter become mutual contacts.
    roster        INTEGER NOT NULL DEFAULT 0 CHECK (roster IN (0, 1)),
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    -- Set once, atomically, by the one use the invite gets.
    used_by       TEXT,
    used_at_ms    INTEGER
);
CREATE INDEX invites_inviter ON invites (inviter);
