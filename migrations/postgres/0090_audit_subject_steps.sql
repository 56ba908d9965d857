-- The subject index as one row per subject per indexing step (issue 18, decision 3): see the
-- SQLite migration of the same number for why. `seqs` is a JSON array of integers as text on
-- both backends, so readers share one shape.
-- Rows of a bucket of 256 `seq`s, and no unique key: see the SQLite migration.
CREATE TABLE audit_subject_steps (
    subject_id TEXT NOT NULL,
    writer_id  TEXT NOT NULL,
    first_seq  BIGINT NOT NULL,
    last_seq   BIGINT NOT NULL,
    seqs       TEXT NOT NULL
);
CREATE INDEX audit_subject_steps_last ON audit_subject_steps (subject_id, last_seq, first_seq);
CREATE INDEX audit_subject_steps_first ON audit_subject_steps (subject_id, first_seq, last_seq);
CREATE INDEX audit_subject_steps_writer ON audit_subject_steps (writer_id, first_seq);

-- 0080's trigger function, now writing a row per subject for the records the progress moves
-- over. A name that is not a string (a JSON null or number, planted in a record) is left out:
-- a NULL would fail the NOT NULL and stop the chain's indexing for good.
CREATE OR REPLACE FUNCTION audit_index_progress_rows() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE from_seq BIGINT := 0;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        from_seq := OLD.chain_seq;
    END IF;
    IF NEW.chain_seq <= from_seq THEN
        RETURN NULL;
    END IF;
    INSERT INTO audit_subject_steps (subject_id, writer_id, first_seq, last_seq, seqs)
    SELECT s.value, NEW.writer_id, MIN(l.seq), MAX(l.seq), json_agg(DISTINCT l.seq)::text
    FROM audit_log l, jsonb_array_elements_text(credgate_subject_list(l.subjects)) s(value)
    WHERE l.writer_id = NEW.writer_id AND l.chain_seq > from_seq
      AND l.chain_seq <= NEW.chain_seq AND s.value IS NOT NULL
    GROUP BY s.value, l.seq / 256;
    RETURN NULL;
END;
$$;

-- Append-only like `audit_subjects`: a row leaves only when an archive of its own chain
-- covers all of it (its greatest `seq`); one straddling an archive's cut stays whole.
CREATE FUNCTION audit_subject_steps_delete_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM audit_archives a
                   WHERE a.writer_id = OLD.writer_id AND a.upto_seq >= OLD.last_seq) THEN
        RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
    END IF;
    RETURN OLD;
END;
$$;
CREATE TRIGGER audit_subject_steps_no_update BEFORE UPDATE ON audit_subject_steps
    FOR EACH ROW EXECUTE FUNCTION credgate_append_only();
CREATE TRIGGER audit_subject_steps_no_delete BEFORE DELETE ON audit_subject_steps
    FOR EACH ROW EXECUTE FUNCTION audit_subject_steps_delete_guard();
CREATE TRIGGER audit_subject_steps_no_truncate BEFORE TRUNCATE ON audit_subject_steps
    FOR EACH STATEMENT EXECUTE FUNCTION credgate_append_only();
