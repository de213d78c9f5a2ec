-- XEP-0401 invites: a secret token that lets one person create an account (or, XEP-0379, have
-- a subscription approved) until it expires; used at most once.
CREATE TABLE invites (
    token         TEXT COLLATE "C" PRIMARY KEY,
    -- The hosted domain the account is created on.
    domain        TEXT COLLATE "C" NOT NULL,
    -- Who invited; NULL when the operator did. Their invites go with their account.
    inviter       TEXT COLLATE "C" REFERENCES accounts (username) ON DELETE CASCADE,
    -- The only username the invite may create, when the inviter fixed one.
    username      TEXT COLLATE "C",
    -- The new account and the inviter become mutual contacts.
    roster        BOOLEAN NOT NULL DEFAULT FALSE,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    -- Set once, atomically, by the one use the invite gets.
    used_by       TEXT COLLATE "C",
    used_at_ms    BIGINT
);
CREATE INDEX invites_inviter ON invites (inviter);
