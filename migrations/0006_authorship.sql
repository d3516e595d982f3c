-- Authorship (crates/store/src/proof.rs): each author's log is a hash chain whose heads the
-- author signs. A chunk of the log keeps the chain hash before its first op (`prev`);
-- `op_heads` keeps the signed heads this replica holds (with the op hashes between the
-- last op it holds and the head, when it lacks them); `authors` the key of every author
-- whose proof this replica verified; `version_vector.pruned_chain` the chain hash at the
-- pruned seq, so that a run starting there can still be proven.
--
-- The ops logged before this version carry no proof: they leave the log as if pruned, and
-- a peer that lacks them gets a snapshot (whose rows are state, and carry them).
ALTER TABLE op_chunks ADD COLUMN prev BLOB;
DELETE FROM op_chunks;
ALTER TABLE version_vector ADD COLUMN pruned_chain BLOB;
UPDATE version_vector SET pruned_through = contiguous;
CREATE TABLE op_heads (
    client_uuid TEXT NOT NULL,
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    sig BLOB NOT NULL,
    tail BLOB,
    PRIMARY KEY (client_uuid, seq)
) WITHOUT ROWID;
CREATE TABLE authors (
    client_uuid TEXT PRIMARY KEY NOT NULL,
    public_key BLOB NOT NULL,
    nonce BLOB NOT NULL,
    device TEXT NOT NULL
) WITHOUT ROWID;
