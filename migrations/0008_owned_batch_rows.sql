-- An owned batch's header commits to its rows (groups of row hashes, `Op::groups`), so a
-- store that sends the batch on must send every row with the values the batch wrote. A
-- row that no longer holds them here (the owner rewrote or deleted it later, or its
-- device's later op arrived first) keeps them in this table while the batch's header is
-- in the op log: written by the owned engine when a row of a batch leaves (or never takes)
-- the batch's state, removed when the log is pruned past the batch. Keyed by the batch's
-- author (an incarnation) and seq.
CREATE TABLE crdt_owned_originals (
    resource TEXT NOT NULL,
    author TEXT NOT NULL,
    seq INTEGER NOT NULL,
    uuid TEXT NOT NULL,
    vals BLOB NOT NULL,
    PRIMARY KEY (resource, author, seq, uuid)
) WITHOUT ROWID;
CREATE INDEX crdt_owned_originals_author ON crdt_owned_originals (author, seq);

-- How far the pages of an owned batch not yet complete here have come: the next group a
-- page must start at or before. A page that would skip groups is refused, so a batch
-- counts as applied only once every one of its groups has been.
CREATE TABLE owned_batch_progress (
    client_uuid TEXT NOT NULL,
    seq INTEGER NOT NULL,
    next_group INTEGER NOT NULL,
    PRIMARY KEY (client_uuid, seq)
) WITHOUT ROWID;
