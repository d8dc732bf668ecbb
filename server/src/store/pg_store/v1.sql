-- Version 1 of the PostgreSQL store's schema: the records of the sled
-- store, as tables. Values the hub encodes itself (entries, audit rows)
-- are kept in the encoding the sled store uses (store/codec.rs).
CREATE TABLE registry (
    id smallint PRIMARY KEY CHECK (id = 1),
    bytes bytea NOT NULL
);
-- The head of each channel: appends lock its row (SELECT ... FOR UPDATE),
-- so that one channel's entries are sequenced by one writer at a time.
CREATE TABLE channel_heads (
    channel text PRIMARY KEY,
    next_seq bigint NOT NULL,
    last_leaf_hash bytea NOT NULL,
    last_hub_micros bigint NOT NULL
);
CREATE TABLE entries (
    channel text NOT NULL,
    seq bigint NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (channel, seq)
);
-- The idempotency index: a message id once per sender, by constraint.
CREATE TABLE messages (
    channel text NOT NULL,
    message_id text NOT NULL,
    seq bigint NOT NULL,
    digest bytea NOT NULL,
    PRIMARY KEY (channel, message_id)
);
CREATE TABLE tree_hashes (
    channel text NOT NULL,
    seq bigint NOT NULL,
    hashes bytea NOT NULL,
    PRIMARY KEY (channel, seq)
);
CREATE TABLE inbox (
    inbox text NOT NULL,
    position bigint NOT NULL,
    channel text NOT NULL,
    seq bigint NOT NULL,
    PRIMARY KEY (inbox, position)
);
CREATE TABLE inbox_heads (
    inbox text PRIMARY KEY,
    last bigint NOT NULL
);
-- An entry is answered once: a second answer breaks the constraint.
CREATE TABLE answers (
    inbox text NOT NULL,
    position bigint NOT NULL,
    exception boolean NOT NULL,
    seq bigint NOT NULL,
    hub_micros bigint NOT NULL,
    PRIMARY KEY (inbox, position)
);
CREATE TABLE fetched (
    inbox text NOT NULL,
    position bigint NOT NULL,
    hub_micros bigint NOT NULL,
    PRIMARY KEY (inbox, position)
);
-- Keyed as the sled store keys them, so ranges read alike.
CREATE TABLE audit_scope (
    key bytea PRIMARY KEY,
    row_bytes bytea NOT NULL
);
CREATE TABLE checkpoints (
    channel text PRIMARY KEY,
    note text NOT NULL
);
CREATE TABLE state (
    space text NOT NULL,
    key bytea NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (space, key)
);
