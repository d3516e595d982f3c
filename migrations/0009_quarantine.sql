-- What peers sent for a resource or a field this build's registry does not know (a peer
-- runs a newer schema): kept, not applied, until a build that knows it opens the library,
-- which applies it through the engine and removes it. An op (`kind` 'op') is also in the
-- op log, with its proof, so this node still counts it as received, relays and serves it;
-- a snapshot row (`kind` 'row') is only here. Snapshots this node serves carry both, so a
-- device that joins through it gets them too. `body` is the CBOR of the op or the row;
-- `hash` its blake3 (the same row from two snapshots is kept once).
CREATE TABLE crdt_quarantine (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    resource TEXT NOT NULL,
    hash BLOB NOT NULL UNIQUE,
    body BLOB NOT NULL
);
