-- The maintained digest (crates/store/src/digest.rs). Per resource, fingerprints of key
-- ranges: a range is a prefix of the rows' UUID text ('' the whole resource, 2 hex digits,
-- 5 hex digits: the leaves). A fingerprint is the XOR of the blake3 hashes of the rows in
-- its range (synced content: values, registers, tombstones), with how many rows (entries)
-- and live rows it holds. Triggers mark the leaf a written row falls in dirty; the fold
-- recomputes dirty leaves and moves their ancestors by the difference. The triggers test
-- for the mark rather than `INSERT OR IGNORE`: an outer statement's conflict policy
-- (`INSERT OR ROLLBACK`) would override the trigger's.
CREATE TABLE crdt_digest (
    resource TEXT NOT NULL,
    prefix TEXT NOT NULL,
    hash BLOB NOT NULL,
    entries INTEGER NOT NULL,
    live INTEGER NOT NULL,
    PRIMARY KEY (resource, prefix)
) WITHOUT ROWID;

CREATE TABLE crdt_digest_dirty (
    resource TEXT NOT NULL,
    bucket TEXT NOT NULL,
    PRIMARY KEY (resource, bucket)
) WITHOUT ROWID;

-- The register side tables of synced rows. The data tables get the same triggers when
-- the store opens (one set per registered resource). Each names the collation
-- `murmur_writer`, which only murmur's own connections register: a write by another
-- program fails with "no such collation sequence: murmur_writer" and changes nothing.
CREATE TRIGGER crdt_rows_digest_i AFTER INSERT ON crdt_rows BEGIN
    INSERT INTO crdt_digest_dirty (resource, bucket)
    SELECT NEW.resource, substr(NEW.uuid, 1, 5) WHERE 'm' = 'm' COLLATE murmur_writer
    AND NOT EXISTS (SELECT 1 FROM crdt_digest_dirty WHERE resource = NEW.resource
    AND bucket = substr(NEW.uuid, 1, 5));
END;
CREATE TRIGGER crdt_rows_digest_u AFTER UPDATE ON crdt_rows BEGIN
    INSERT INTO crdt_digest_dirty (resource, bucket)
    SELECT NEW.resource, substr(NEW.uuid, 1, 5) WHERE 'm' = 'm' COLLATE murmur_writer
    AND NOT EXISTS (SELECT 1 FROM crdt_digest_dirty WHERE resource = NEW.resource
    AND bucket = substr(NEW.uuid, 1, 5));
END;
CREATE TRIGGER crdt_rows_digest_d AFTER DELETE ON crdt_rows BEGIN
    INSERT INTO crdt_digest_dirty (resource, bucket)
    SELECT OLD.resource, substr(OLD.uuid, 1, 5) WHERE 'm' = 'm' COLLATE murmur_writer
    AND NOT EXISTS (SELECT 1 FROM crdt_digest_dirty WHERE resource = OLD.resource
    AND bucket = substr(OLD.uuid, 1, 5));
END;
CREATE TRIGGER crdt_props_digest_i AFTER INSERT ON crdt_props BEGIN
    INSERT INTO crdt_digest_dirty (resource, bucket)
    SELECT NEW.resource, substr(NEW.uuid, 1, 5) WHERE 'm' = 'm' COLLATE murmur_writer
    AND NOT EXISTS (SELECT 1 FROM crdt_digest_dirty WHERE resource = NEW.resource
    AND bucket = substr(NEW.uuid, 1, 5));
END;
CREATE TRIGGER crdt_props_digest_u AFTER UPDATE ON crdt_props BEGIN
    INSERT INTO crdt_digest_dirty (resource, bucket)
    SELECT NEW.resource, substr(NEW.uuid, 1, 5) WHERE 'm' = 'm' COLLATE murmur_writer
    AND NOT EXISTS (SELECT 1 FROM crdt_digest_dirty WHERE resource = NEW.resource
    AND bucket = substr(NEW.uuid, 1, 5));
END;
CREATE TRIGGER crdt_props_digest_d AFTER DELETE ON crdt_props BEGIN
    INSERT INTO crdt_digest_dirty (resource, bucket)
    SELECT OLD.resource, substr(OLD.uuid, 1, 5) WHERE 'm' = 'm' COLLATE murmur_writer
    AND NOT EXISTS (SELECT 1 FROM crdt_digest_dirty WHERE resource = OLD.resource
    AND bucket = substr(OLD.uuid, 1, 5));
END;
CREATE TRIGGER crdt_owned_claims_digest_i AFTER INSERT ON crdt_owned_claims BEGIN
    INSERT INTO crdt_digest_dirty (resource, bucket)
    SELECT NEW.resource, substr(NEW.uuid, 1, 5) WHERE 'm' = 'm' COLLATE murmur_writer
    AND NOT EXISTS (SELECT 1 FROM crdt_digest_dirty WHERE resource = NEW.resource
    AND bucket = substr(NEW.uuid, 1, 5));
END;
CREATE TRIGGER crdt_owned_claims_digest_u AFTER UPDATE ON crdt_owned_claims BEGIN
    INSERT INTO crdt_digest_dirty (resource, bucket)
    SELECT NEW.resource, substr(NEW.uuid, 1, 5) WHERE 'm' = 'm' COLLATE murmur_writer
    AND NOT EXISTS (SELECT 1 FROM crdt_digest_dirty WHERE resource = NEW.resource
    AND bucket = substr(NEW.uuid, 1, 5));
END;
CREATE TRIGGER crdt_owned_claims_digest_d AFTER DELETE ON crdt_owned_claims BEGIN
    INSERT INTO crdt_digest_dirty (resource, bucket)
    SELECT OLD.resource, substr(OLD.uuid, 1, 5) WHERE 'm' = 'm' COLLATE murmur_writer
    AND NOT EXISTS (SELECT 1 FROM crdt_digest_dirty WHERE resource = OLD.resource
    AND bucket = substr(OLD.uuid, 1, 5));
END;
