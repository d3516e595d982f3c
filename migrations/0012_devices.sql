-- Membership (crates/store/src/members.rs): the library's devices as signed events, one row
-- per event, created once and never changed. `event` is the hex of the event's CBOR (the
-- signer's key, its time, what it did, the signature); the row's UUID is a hash of it. It
-- is a shared resource like the others, so its rows travel by gossip, catch-up, snapshots
-- and relays. The trust root (the founder's device key) is node-local, in `meta`
-- (`member_root`).
CREATE TABLE devices_log (
    uuid TEXT PRIMARY KEY NOT NULL,
    event TEXT,
    crdt_clock BLOB NOT NULL DEFAULT x''
) WITHOUT ROWID;
