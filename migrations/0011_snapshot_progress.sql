-- A snapshot import under way (at most one: `id` is always 1), so that a device killed in
-- the middle of joining continues where it stopped instead of from the beginning. Written
-- in the same transaction as each imported page (crates/store/src/sql/snapshots.rs),
-- removed by the transaction that finishes the snapshot.
--
-- `source`: who served it (the peer's device UUID, or its peer id while the device was not
-- known). `schema`: the serving registry's schema hash (a position names a resource in
-- the server's registry order, which another schema may change). `position`: the CBOR of
-- the `SnapshotPosition` the next page starts after (NULL: no page yet, or, with `done`,
-- every page is in). `pages`, `rows`: imported so far. `resumed`: restarts continued.
CREATE TABLE crdt_snapshot_progress (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    source TEXT NOT NULL,
    schema BLOB,
    position BLOB,
    done INTEGER NOT NULL DEFAULT 0,
    pages INTEGER NOT NULL DEFAULT 0,
    rows INTEGER NOT NULL DEFAULT 0,
    resumed INTEGER NOT NULL DEFAULT 0,
    started_at INTEGER NOT NULL
);

-- What the snapshot under way may claim when it finishes: one proof (CBOR) per author, of
-- the lowest seq any serving state proved (a resumed snapshot's rows come from two states),
-- without the authors of rows set aside. Only these move the version vector.
CREATE TABLE crdt_snapshot_proofs (
    author TEXT PRIMARY KEY,
    proof BLOB NOT NULL
) WITHOUT ROWID;
