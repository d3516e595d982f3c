-- Owned rows have one owner everywhere (crates/store/src/merge.rs, `OwnedRegisters`): the
-- device whose create has the lowest timestamp (its claim) owns the row, and the row is the
-- owner's latest op. The row itself stays where it was (a live row in its table, or a
-- tombstone in `crdt_rows` with its owner); these tables hold the rest of the registers,
-- and are empty for a row its owner wrote once, the usual case.

-- The owner's claim, where it is not the row's own timestamp: the owner wrote the row again,
-- or deleted it (a tombstone keeps the claim, so a later create of another device is
-- refused). A tombstone written before this table has none: its claim is taken to be its
-- own timestamp.
CREATE TABLE crdt_owned_claims (
    resource TEXT NOT NULL,
    uuid TEXT NOT NULL,
    claim BLOB NOT NULL,
    PRIMARY KEY (resource, uuid)
) WITHOUT ROWID;
-- An owned batch is expanded into its rows when it is sent, the rows it claimed included.
CREATE INDEX crdt_owned_claims_batch ON crdt_owned_claims (resource, claim, uuid);

-- Per row, the latest op of each device that does not own it (refused, and kept in case
-- that device's earlier create arrives and takes the row over), and the deletes of a row no
-- device has created yet: a create (`alive` 1) with its batch's seq and values (CBOR, in
-- column order), or a delete (`alive` 0, seq 0, no values). At most one per device and row.
CREATE TABLE crdt_owned_others (
    resource TEXT NOT NULL,
    uuid TEXT NOT NULL,
    device TEXT NOT NULL,
    ts BLOB NOT NULL,
    seq INTEGER NOT NULL,
    alive INTEGER NOT NULL,
    vals BLOB,
    PRIMARY KEY (resource, uuid, device)
) WITHOUT ROWID;
-- An owned batch is expanded into its rows when it is sent, these included.
CREATE INDEX crdt_owned_others_batch ON crdt_owned_others (resource, device, seq, uuid);
