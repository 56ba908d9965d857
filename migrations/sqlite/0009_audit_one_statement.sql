-- A batch of audit records is now one INSERT, committed on its own (one round trip, one fsync).
--
-- Writers no longer serialise on a lock row. A batch takes the sequence numbers after the head
-- its writer knows; the primary key on `seq` refuses it if another writer (another replica)
-- took them first, and the writer then rereads the head and chains again.
DROP TABLE audit_writer;

-- The database itself refuses a record that does not link to the one before it (or, after an
-- archive, to the archive's last record). A writer with a stale head, or a buggy one, cannot
-- fork the chain, even where the primary key alone would not notice (a head archived away).
CREATE TRIGGER audit_log_links BEFORE INSERT ON audit_log
WHEN NEW.prev_hash IS NOT COALESCE(
    (SELECT hash FROM audit_log WHERE seq = NEW.seq - 1),
    (SELECT hash FROM audit_archives WHERE upto_seq = NEW.seq - 1),
    CASE WHEN NEW.seq = 1
         THEN '0000000000000000000000000000000000000000000000000000000000000000' END)
BEGIN SELECT RAISE(ABORT, 'audit_log: record does not link to the head'); END;

-- The subjects each record names are indexed in the same statement, so no second statement is
-- needed and a record is never stored without its index rows.
CREATE TRIGGER audit_log_subjects AFTER INSERT ON audit_log
BEGIN
    INSERT OR IGNORE INTO audit_subjects (subject_id, seq)
    SELECT DISTINCT value, NEW.seq FROM json_each(NEW.subjects);
END;
