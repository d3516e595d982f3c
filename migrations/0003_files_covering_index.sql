-- `files` is rebuilt per cas_id from file_paths (COUNT and MAX(size_bytes)); with size_bytes
-- in the index the rebuild reads the index alone, not each file_paths row.
DROP INDEX file_paths_cas_id;
CREATE INDEX file_paths_cas_id ON file_paths (cas_id, size_bytes);
