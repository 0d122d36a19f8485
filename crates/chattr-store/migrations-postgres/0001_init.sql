-- Chattr's PostgreSQL schema (the SQLite schema lives in ../migrations).
--
-- Ids are native UUIDs. Timestamps are BIGINT unix milliseconds: the store's timestamps are
-- whole milliseconds (chattr_core::now truncates), BIGINT round-trips them exactly with no
-- time-zone or precision conversion, and it is the same model as the SQLite schema, so
-- copying data between backends is a plain column copy. Flags are BOOLEAN.
--
-- Tables whose counters are updated on every message (conversations.last_seq,
-- members.read_seq) leave free space in each page (fillfactor) and keep those columns out
-- of every index, so the updates are HOT (no index writes, little bloat).

CREATE TABLE users (
    id            UUID   PRIMARY KEY,
    -- COLLATE "C": usernames are case-sensitive keys compared byte by byte, and search
    -- returns them in byte order, whatever the database's default collation is. It also
    -- lets the unique index serve prefix range scans.
    username      TEXT   COLLATE "C" NOT NULL,
    password_hash TEXT   NOT NULL,
    created_at    BIGINT NOT NULL,
    -- Named, because the store recognises a taken username by this constraint's name.
    CONSTRAINT users_username_key UNIQUE (username)
);

CREATE TABLE sessions (
    id                     UUID    PRIMARY KEY,
    user_id                UUID    NOT NULL REFERENCES users (id),
    refresh_hash           TEXT    NOT NULL,
    refresh_expires_at     BIGINT  NOT NULL,
    user_agent             TEXT,
    created_at             BIGINT  NOT NULL,
    last_seen_at           BIGINT  NOT NULL,
    revoked                BOOLEAN NOT NULL DEFAULT FALSE,
    -- Hashes of the refresh tokens this session rotated away, newest first, at most
    -- ROTATED_KEEP of them. Presenting one is a replay of a stolen token and revokes the
    -- session; any other wrong hash is merely invalid.
    rotated_refresh_hashes TEXT[]  NOT NULL DEFAULT '{}'
);

CREATE INDEX sessions_by_user ON sessions (user_id, created_at);

CREATE TABLE conversations (
    id               UUID   PRIMARY KEY,
    kind             TEXT   NOT NULL CHECK (kind IN ('direct', 'group')),
    title            TEXT,
    owner_id         UUID   REFERENCES users (id),
    created_at       BIGINT NOT NULL,
    -- Seq of the newest message. Incremented (under the row lock) by the transaction that
    -- inserts the message, which serialises senders per conversation.
    last_seq         BIGINT NOT NULL DEFAULT 0,
    -- The two sorted member ids of a direct conversation ("a:b"); NULL for groups (NULLs
    -- never collide). UNIQUE makes "one direct conversation per pair" race-free.
    direct_key       TEXT   UNIQUE,
    -- Time of the newest message, or creation time while empty; drives list order.
    last_activity_at BIGINT NOT NULL
) WITH (fillfactor = 90);

CREATE TABLE members (
    conversation_id UUID   NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id         UUID   NOT NULL REFERENCES users (id),
    read_seq        BIGINT NOT NULL DEFAULT 0,
    joined_at       BIGINT NOT NULL,
    -- Breaks joined_at ties in insertion order (what rowid does in SQLite), so members
    -- added together keep the order they were given in.
    join_order      BIGINT GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (conversation_id, user_id)
) WITH (fillfactor = 90);

-- A user's conversation list, contacts and latest seqs start here.
CREATE INDEX members_by_user ON members (user_id, conversation_id);

CREATE TABLE messages (
    id              UUID    PRIMARY KEY,
    conversation_id UUID    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq             BIGINT  NOT NULL,
    sender_id       UUID    NOT NULL REFERENCES users (id),
    client_msg_id   TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    edited_at       BIGINT,
    deleted         BOOLEAN NOT NULL DEFAULT FALSE,
    -- Also the index of history paging (both directions) and of the last-message lookup.
    CONSTRAINT messages_seq_key UNIQUE (conversation_id, seq),
    -- Idempotent sends: a retried (sender, client_msg_id) can never become a second row.
    CONSTRAINT messages_client_msg_id_key UNIQUE (conversation_id, sender_id, client_msg_id)
);

-- Unread counts: "live messages of others after my read position" is a range of this
-- partial index, and INCLUDE (sender_id) lets it be answered by an index-only scan.
CREATE INDEX messages_unread ON messages (conversation_id, seq) INCLUDE (sender_id) WHERE NOT deleted;

-- The transactional outbox. BIGSERIAL ids are never reused (a sequence never goes back,
-- not even on rollback); the relay publishes in id order. Published rows are deleted.
CREATE TABLE outbox (
    id         BIGSERIAL PRIMARY KEY,
    topic      TEXT   NOT NULL,
    key        TEXT   NOT NULL,
    kind       TEXT   NOT NULL,
    payload    TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);

-- A queue table: rows are inserted and deleted all the time, and dead rows at the head of
-- the id index slow the relay's "oldest first" scan. Vacuum it after a fixed number of
-- dead rows instead of a fraction of a (tiny) table.
ALTER TABLE outbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);
