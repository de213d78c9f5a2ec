-- RFC 6121 rosters: items, the roster version, pending inbound subscription requests, and the
-- last time each account went offline (XEP-0012).

CREATE TABLE roster_items (
    username     TEXT COLLATE "C" NOT NULL REFERENCES accounts (username) ON DELETE CASCADE,
    -- The contact's bare JID, as a string.
    contact      TEXT COLLATE "C" NOT NULL,
    name         TEXT,
    subscription TEXT             NOT NULL CHECK (subscription IN ('none', 'to', 'from', 'both')),
    -- An outbound subscribe is pending (RFC 6121 "Pending Out").
    ask          BOOLEAN          NOT NULL DEFAULT FALSE,
    -- A subscription request from the contact is pre-approved (§3.4).
    approved     BOOLEAN          NOT NULL DEFAULT FALSE,
    -- JSON array of group names.
    groups       TEXT             NOT NULL DEFAULT '[]',
    PRIMARY KEY (username, contact)
);

CREATE TABLE roster_versions (
    username TEXT COLLATE "C" NOT NULL PRIMARY KEY REFERENCES accounts (username) ON DELETE CASCADE,
    version  BIGINT           NOT NULL
);

-- Inbound subscription requests not yet answered ("Pending In"), whether or not the contact
-- is in the roster; the stanza is redelivered at every login until answered.
CREATE TABLE roster_pending_in (
    username TEXT COLLATE "C" NOT NULL REFERENCES accounts (username) ON DELETE CASCADE,
    contact  TEXT COLLATE "C" NOT NULL,
    stanza   TEXT             NOT NULL,
    PRIMARY KEY (username, contact)
);

CREATE TABLE last_activity (
    username TEXT COLLATE "C" NOT NULL PRIMARY KEY REFERENCES accounts (username) ON DELETE CASCADE,
    -- Seconds since the Unix epoch at which the last session ended.
    at_secs  BIGINT           NOT NULL,
    status   TEXT             NOT NULL DEFAULT ''
);
