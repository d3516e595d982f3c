-- What a snapshot import into empty tables left out, to build once its rows are in
-- (crates/store/src/sql/deferred.rs): a new device's join writes its rows in key order, so
-- the table itself grows at its end, while every secondary index (and the derived `files`)
-- is keyed by something else and would take a random page write per row. Recorded in the
-- transaction that drops the index, removed by the one that builds it again, so a device
-- killed in between still has the statement.
--
-- `name`: the index's name (or `files`, the derived table of `file_paths`). `tbl`: its
-- table. `sql`: the `CREATE INDEX` statement as SQLite stored it (NULL for `files`).
-- `after`: for `files`, the last cas_id rebuilt so far (NULL: none yet); the rebuild runs
-- in cas_id order over several transactions, and a write below it is kept up as usual.
CREATE TABLE crdt_deferred (
    name TEXT PRIMARY KEY NOT NULL,
    tbl TEXT NOT NULL,
    sql TEXT,
    after TEXT
) WITHOUT ROWID;
