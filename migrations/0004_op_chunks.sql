-- The op log in chunks (crates/store/src/oplog.rs): one row per run of consecutive ops of
-- one author written in one transaction, as one CBOR blob, instead of one row per op. The
-- store moves the ops of `operations` here when it opens, then drops that table.
CREATE TABLE op_chunks (
    client_uuid TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    ops BLOB NOT NULL,
    PRIMARY KEY (client_uuid, last_seq)
) WITHOUT ROWID;
