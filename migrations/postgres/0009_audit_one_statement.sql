-- A batch of audit records is now one INSERT, committed on its own (one round trip, one fsync).
--
-- Writers no longer serialise on a lock row. A batch takes the sequence numbers after the head
-- its writer knows; the primary key on `seq` refuses it if another writer (another replica)
-- took them first, and the writer then rereads the head and chains again.
DROP TABLE audit_writer;

-- The database itself refuses a record that does not link to the one before it (or, after an
-- archive, to the archive's last record). A writer with a stale head, or a buggy one, cannot
-- fork the chain, even where the primary key alone would not notice (a head archived away).
-- Raised as a unique violation: to a writer it is the same news as a taken `seq`.
CREATE FUNCTION audit_log_links() RETURNS trigger AS $$
BEGIN
    IF NEW.prev_hash IS DISTINCT FROM COALESCE(
        (SELECT hash FROM audit_log WHERE seq = NEW.seq - 1),
        (SELECT hash FROM audit_archives WHERE upto_seq = NEW.seq - 1),
        CASE WHEN NEW.seq = 1
             THEN '0000000000000000000000000000000000000000000000000000000000000000' END)
    THEN
        RAISE EXCEPTION 'audit_log: record does not link to the head' USING ERRCODE = 'unique_violation';
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_log_links BEFORE INSERT ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_links();

-- The subjects each record names are indexed in the same statement, so no second statement is
-- needed and a record is never stored without its index rows.
CREATE FUNCTION audit_log_subjects() RETURNS trigger AS $$
BEGIN
    INSERT INTO audit_subjects (subject_id, seq)
    SELECT DISTINCT s.value, n.seq
    FROM new_rows n, jsonb_array_elements_text(n.subjects::jsonb) AS s(value)
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_log_subjects AFTER INSERT ON audit_log
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION audit_log_subjects();
