-- The subject index is written behind the request's path (issue 18, decision 3). A record's
-- `audit_subjects` rows were inserted by a trigger in the record's own INSERT, so a 100-row
-- list waited for 100 index rows before its answer could leave. A background indexer
-- (`audit::indexer`) now reads each chain's committed records after its progress, inserts
-- their index rows and advances the progress in one transaction. Searches stay exact before
-- it catches up: they also scan each chain's records after its progress (`audit::index_store`).
DROP TRIGGER audit_log_subjects ON audit_log;
DROP FUNCTION audit_log_subjects();

-- How far each chain is indexed: every record of `writer_id` with `chain_seq <= chain_seq`
-- has its index rows. Progress is kept per chain, never as a global `seq`: a lower `seq` (a
-- sequence value) may commit after a higher one of another replica's chain, while within a
-- chain records commit in chain order. `indexed_us` is when it last moved (so replicas leave a
-- chain its own writer keeps indexed alone).
CREATE TABLE audit_index_progress (
    writer_id  TEXT PRIMARY KEY,
    chain_seq  BIGINT NOT NULL,
    indexed_us BIGINT NOT NULL
);

-- Everything already in the log was indexed by the trigger dropped above.
INSERT INTO audit_index_progress (writer_id, chain_seq, indexed_us)
SELECT writer_id, MAX(chain_seq), 0 FROM audit_log GROUP BY writer_id;

-- A record's `subjects` as a JSON array, or an empty one when the text is not a JSON array:
-- one malformed row (planted, or written by a bug) must neither fail a subject's search nor
-- stop its chain's indexing. A function that catches the parse error, since PostgreSQL 15 has
-- no `pg_input_is_valid`; a regex precheck would also refuse valid JSON the index accepts.
-- SQLite's counterpart is `json_valid`.
-- PARALLEL UNSAFE (the default), not SAFE: the exception block is a subtransaction, which
-- PostgreSQL refuses in a parallel query.
CREATE FUNCTION credgate_subject_list(t TEXT) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE
PARALLEL UNSAFE AS $$
DECLARE v jsonb;
BEGIN
    v := t::jsonb;
    IF jsonb_typeof(v) = 'array' THEN
        RETURN v;
    END IF;
    RETURN '[]'::jsonb;
EXCEPTION WHEN data_exception THEN
    RETURN '[]'::jsonb;
END;
$$;

-- The `seq` of every record above its chain's progress whose own `subjects` names the
-- subject: the tail a subject's search adds to the index's candidates (`audit::index_store::
-- unindexed_union`). A function, not a join in the search: one range read of the
-- `(writer_id, chain_seq)` index a chain (writers found by a skip over that index), and its
-- ROWS 10 keeps the planner reading the search as a semi-join by the index. Written as a
-- join, the planner guessed a third of the log above the progress and scanned all of it
-- (300,000 records: 948 ms; this: 3 ms).
CREATE FUNCTION credgate_unindexed_naming(p_subject TEXT) RETURNS SETOF BIGINT
LANGUAGE plpgsql STABLE ROWS 10 AS $$
DECLARE
    v_writer TEXT := (SELECT MIN(writer_id) FROM audit_log);
    v_done   BIGINT;
BEGIN
    WHILE v_writer IS NOT NULL LOOP
        v_done := COALESCE((SELECT chain_seq FROM audit_index_progress
                            WHERE writer_id = v_writer), 0);
        RETURN QUERY SELECT l.seq FROM audit_log l
            WHERE l.writer_id = v_writer AND l.chain_seq > v_done
              AND jsonb_exists(credgate_subject_list(l.subjects), p_subject);
        v_writer := (SELECT MIN(writer_id) FROM audit_log WHERE writer_id > v_writer);
    END LOOP;
END;
$$;

-- Progress implies rows: moving a chain's progress (insert or update) inserts the index rows
-- of the records it moves over, in the same statement, as on SQLite. Nothing can then say
-- "indexed" over a record without its rows. A plain INSERT first: ON CONFLICT DO NOTHING
-- probes the primary key once more a row (measured: 490 -> 315 ms a step of 100,000 rows);
-- rows already there (a race lost long ago, a record naming a subject twice) fall back to it.
CREATE FUNCTION audit_index_progress_rows() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE from_seq BIGINT := 0;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        from_seq := OLD.chain_seq;
    END IF;
    IF NEW.chain_seq <= from_seq THEN
        RETURN NULL;
    END IF;
    BEGIN
        INSERT INTO audit_subjects (subject_id, seq)
        SELECT s.value, l.seq
        FROM audit_log l, jsonb_array_elements_text(credgate_subject_list(l.subjects)) s(value)
        WHERE l.writer_id = NEW.writer_id AND l.chain_seq > from_seq
          AND l.chain_seq <= NEW.chain_seq;
    EXCEPTION WHEN unique_violation THEN
        INSERT INTO audit_subjects (subject_id, seq)
        SELECT s.value, l.seq
        FROM audit_log l, jsonb_array_elements_text(credgate_subject_list(l.subjects)) s(value)
        WHERE l.writer_id = NEW.writer_id AND l.chain_seq > from_seq
          AND l.chain_seq <= NEW.chain_seq
        ON CONFLICT DO NOTHING;
    END;
    RETURN NULL;
END;
$$;
CREATE TRIGGER audit_index_progress_rows AFTER INSERT OR UPDATE OF chain_seq
    ON audit_index_progress FOR EACH ROW EXECUTE FUNCTION audit_index_progress_rows();

-- Progress never runs ahead of its chain: a place above the chain's last record would say
-- "indexed" over records not yet written (planted for a writer that has not written, they
-- would never be indexed and a search would miss them until verification).
CREATE FUNCTION audit_index_progress_within() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.chain_seq > COALESCE((SELECT MAX(chain_seq) FROM audit_log
                                 WHERE writer_id = NEW.writer_id), 0) THEN
        RAISE EXCEPTION 'audit_index_progress ahead of its chain';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER audit_index_progress_within BEFORE INSERT OR UPDATE ON audit_index_progress
    FOR EACH ROW EXECUTE FUNCTION audit_index_progress_within();

-- Progress only moves forward and is never removed: lowering it would let verification
-- accept records whose index rows were deleted as "not indexed yet".
CREATE FUNCTION audit_index_progress_forward() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.chain_seq < OLD.chain_seq OR NEW.writer_id IS DISTINCT FROM OLD.writer_id THEN
        RAISE EXCEPTION 'audit_index_progress only moves forward';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER audit_index_progress_forward BEFORE UPDATE ON audit_index_progress
    FOR EACH ROW EXECUTE FUNCTION audit_index_progress_forward();
CREATE FUNCTION audit_index_progress_no_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_index_progress only moves forward';
END;
$$;
CREATE TRIGGER audit_index_progress_no_delete BEFORE DELETE ON audit_index_progress
    FOR EACH ROW EXECUTE FUNCTION audit_index_progress_no_delete();
CREATE TRIGGER audit_index_progress_no_truncate BEFORE TRUNCATE ON audit_index_progress
    FOR EACH STATEMENT EXECUTE FUNCTION audit_index_progress_no_delete();

-- The index's own guards are unchanged: `audit_subjects` stays append-only except for rows of
-- records an archive of their chain covers (0060, `credgate_archived_delete_guard`), which the
-- archive removes with the records. An archive never needs the progress moved: it removes
-- records, and the indexer reads only the records still in the log.
