-- XEP-0191 blocklists and XEP-0054 vCards (with the XEP-0153 photo hash kept beside them).

-- One row per blocked JID; `jid` is the normalized JID as the user sent it (full, bare, domain
-- or domain/resource).
CREATE TABLE blocklist_items (
    username TEXT COLLATE "C" NOT NULL REFERENCES accounts (username) ON DELETE CASCADE,
    jid      TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (username, jid)
);

CREATE TABLE vcards (
    username   TEXT COLLATE "C" NOT NULL PRIMARY KEY REFERENCES accounts (username) ON DELETE CASCADE,
    -- The <vCard xmlns='vcard-temp'/> element, serialized.
    vcard      TEXT             NOT NULL,
    -- Lower-case hex SHA-1 of the decoded PHOTO/BINVAL, '' when the vCard has no photo; stored
    -- so presence decoration never has to load and parse the vCard itself.
    photo_hash TEXT             NOT NULL DEFAULT ''
);
