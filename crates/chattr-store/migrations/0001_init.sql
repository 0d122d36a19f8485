-- Chattr's initial SQLite schema.
-- Timestamps are INTEGER unix milliseconds, ids are TEXT (hyphenated lowercase UUIDs),
-- booleans are INTEGER 0/1.

CREATE TABLE users (
    id            TEXT    PRIMARY KEY NOT NULL,
    username      TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
);

CREATE TABLE sessions (
    id                 TEXT    PRIMARY KEY NOT NULL,
    user_id            TEXT    NOT NULL REFERENCES users (id),
    refresh_hash       TEXT    NOT NULL,
    refresh_expires_at INTEGER NOT NULL,
    user_agent         TEXT,
    created_at         INTEGER NOT NULL,
    last_seen_at       INTEGER NOT NULL,
    revoked            INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX sessions_by_user ON sessions (user_id, created_at);

CREATE TABLE conversations (
    id               TEXT    PRIMARY KEY NOT NULL,
    kind             TEXT    NOT NULL CHECK (kind IN ('direct', 'group')),
    title            TEXT,
    owner_id         TEXT    REFERENCES users (id),
    created_at       INTEGER NOT NULL,
    last_seq         INTEGER NOT NULL DEFAULT 0,
    -- The two sorted member ids of a direct conversation ("a:b"); NULL for groups.
    -- UNIQUE makes "one direct conversation per pair" hold even across processes.
    direct_key       TEXT    UNIQUE,
    -- Time of the newest message, or creation time while empty; drives list order.
    last_activity_at INTEGER NOT NULL
);

CREATE TABLE members (
    conversation_id TEXT    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id         TEXT    NOT NULL REFERENCES users (id),
    read_seq        INTEGER NOT NULL DEFAULT 0,
    joined_at       INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
);

CREATE INDEX members_by_user ON members (user_id);

CREATE TABLE messages (
    id              TEXT    PRIMARY KEY NOT NULL,
    conversation_id TEXT    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq             INTEGER NOT NULL,
    sender_id       TEXT    NOT NULL REFERENCES users (id),
    client_msg_id   TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    edited_at       INTEGER,
    deleted         INTEGER NOT NULL DEFAULT 0,
    UNIQUE (conversation_id, seq),
    UNIQUE (conversation_id, sender_id, client_msg_id)
);

-- AUTOINCREMENT so ids are never reused: the relay publishes in id order.
CREATE TABLE outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    topic        TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    published_at INTEGER
);

-- Partial index: the relay only ever scans pending rows, which stay few.
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;
