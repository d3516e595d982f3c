-- murmur's default library schema.
--
-- Data tables hold the live rows an application reads. The `crdt_*` tables beside them hold
-- the merge state (per-property timestamps, row existence and tombstones), so pruning the
-- operation log never changes a later merge. Timestamps are 24-byte BLOBs: the HLC time
-- (NTP64, big-endian) followed by the author's client UUID, so bytewise order is
-- (time, author) order.

-- Shared resources: any member may create, update or delete them.
CREATE TABLE tags (
    uuid TEXT PRIMARY KEY NOT NULL,
    name TEXT,
    color TEXT
) WITHOUT ROWID;

CREATE TABLE albums (
    uuid TEXT PRIMARY KEY NOT NULL,
    name TEXT,
    is_hidden INTEGER
) WITHOUT ROWID;

CREATE TABLE comments (
    uuid TEXT PRIMARY KEY NOT NULL,
    content TEXT,
    cas_id TEXT
) WITHOUT ROWID;

CREATE TABLE jobs (
    uuid TEXT PRIMARY KEY NOT NULL,
    name TEXT,
    status TEXT
) WITHOUT ROWID;

CREATE TABLE tags_on_files (
    uuid TEXT PRIMARY KEY NOT NULL,
    tag_uuid TEXT,
    cas_id TEXT
) WITHOUT ROWID;
CREATE INDEX tags_on_files_cas_id ON tags_on_files (cas_id);

-- Owned resources: only the owner client changes them. `crdt_ts` is the timestamp of the
-- OwnedBatchCreate that last wrote the row and `crdt_seq` that op's sequence number, so a
-- batch can be expanded into its rows when it is sent.
CREATE TABLE file_paths (
    uuid TEXT PRIMARY KEY NOT NULL,
    owner TEXT NOT NULL,
    crdt_ts BLOB NOT NULL,
    crdt_seq INTEGER NOT NULL,
    materialized_path TEXT,
    name TEXT,
    extension TEXT,
    size_bytes INTEGER,
    cas_id TEXT,
    date_modified TEXT
) WITHOUT ROWID;
CREATE INDEX file_paths_batch ON file_paths (owner, crdt_seq, uuid);
CREATE INDEX file_paths_cas_id ON file_paths (cas_id);

CREATE TABLE media_data (
    uuid TEXT PRIMARY KEY NOT NULL,
    owner TEXT NOT NULL,
    crdt_ts BLOB NOT NULL,
    crdt_seq INTEGER NOT NULL,
    file_path_uuid TEXT,
    width INTEGER,
    height INTEGER,
    duration_ms INTEGER
) WITHOUT ROWID;
CREATE INDEX media_data_batch ON media_data (owner, crdt_seq, uuid);

-- Derived, never synced: rebuilt locally from file_paths.
CREATE TABLE files (
    cas_id TEXT PRIMARY KEY NOT NULL,
    size_bytes INTEGER,
    path_count INTEGER NOT NULL
) WITHOUT ROWID;

-- Row existence register of shared rows (alive or tombstone, with its timestamp) and the
-- tombstones of deleted owned rows (with their owner).
CREATE TABLE crdt_rows (
    resource TEXT NOT NULL,
    uuid TEXT NOT NULL,
    ts BLOB NOT NULL,
    alive INTEGER NOT NULL,
    owner TEXT,
    PRIMARY KEY (resource, uuid)
) WITHOUT ROWID;

-- Per-property last-writer-wins registers of shared rows. `value` (BLOB affinity: stored as
-- written, never converted) is kept for deleted rows too, so a later re-create merges
-- exactly as on every other replica.
CREATE TABLE crdt_props (
    resource TEXT NOT NULL,
    uuid TEXT NOT NULL,
    property TEXT NOT NULL,
    ts BLOB NOT NULL,
    value BLOB,
    PRIMARY KEY (resource, uuid, property)
) WITHOUT ROWID;

-- The operation log (the seed's pending_operations), with the per-author sequence number.
-- `value` is CBOR (a SharedCreate's fields, a SharedUpdate's value, an OwnedBatchCreate's row
-- count). Ops are pruned once every non-stale client has them.
CREATE TABLE operations (
    client_uuid TEXT NOT NULL,
    seq INTEGER NOT NULL,
    uhlc_timestamp BLOB NOT NULL,
    method TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_uuid TEXT,
    resource_property TEXT,
    value BLOB,
    -- Set when the op was refused by a merge rule (e.g. a non-owner's change): it is kept so
    -- that every replica sees it, refuses it the same way, and has no gap in its log.
    rejected TEXT,
    PRIMARY KEY (client_uuid, seq)
) WITHOUT ROWID;

-- This replica's version vector: per author, the highest contiguous sequence number applied
-- here, and the highest one pruned from the log (the horizon).
CREATE TABLE version_vector (
    client_uuid TEXT PRIMARY KEY NOT NULL,
    contiguous INTEGER NOT NULL,
    pruned_through INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- The client pool: every client known to this library.
CREATE TABLE clients (
    uuid TEXT PRIMARY KEY NOT NULL,
    peer_id TEXT,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER,
    last_synchronized INTEGER
) WITHOUT ROWID;

-- The version vectors other clients last reported (author -> contiguous), for pruning.
CREATE TABLE client_versions (
    client_uuid TEXT NOT NULL,
    author TEXT NOT NULL,
    contiguous INTEGER NOT NULL,
    PRIMARY KEY (client_uuid, author)
) WITHOUT ROWID;

-- Node-local settings (identity and the like); never synced.
CREATE TABLE meta (
    key TEXT PRIMARY KEY NOT NULL,
    value BLOB
) WITHOUT ROWID;
