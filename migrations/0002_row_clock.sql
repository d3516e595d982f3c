-- The registers of a live shared row move beside its data: `crdt_clock` holds the
-- timestamps of its existence register and of each property register (format in
-- crates/store/src/rowclock.rs), and the property values are the data columns themselves.
-- `crdt_rows` and `crdt_props` keep only deleted rows and rows known from updates alone.
--
-- Rows written before this migration get an empty clock here; the store moves their
-- registers out of `crdt_rows`/`crdt_props` into the clock when it opens (it cannot be done
-- in SQL), before anything reads them.
ALTER TABLE tags ADD COLUMN crdt_clock BLOB NOT NULL DEFAULT x'';
ALTER TABLE albums ADD COLUMN crdt_clock BLOB NOT NULL DEFAULT x'';
ALTER TABLE comments ADD COLUMN crdt_clock BLOB NOT NULL DEFAULT x'';
ALTER TABLE jobs ADD COLUMN crdt_clock BLOB NOT NULL DEFAULT x'';
ALTER TABLE tags_on_files ADD COLUMN crdt_clock BLOB NOT NULL DEFAULT x'';
