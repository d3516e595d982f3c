-- Row clocks (`crdt_clock` of live shared rows) are written in version 2 from here on (see
-- crates/store/src/rowclock.rs): the column names first, then the existence timestamp and
-- fixed 24-byte slots, so SQLite can check a clock's layout and merge an update in place.
-- Version 1 clocks are still read, and rewritten in version 2 when their row is next
-- written. Earlier binaries cannot read version 2: this migration is their fence, as they
-- refuse to open a library that has a migration they do not know.
SELECT 1;
