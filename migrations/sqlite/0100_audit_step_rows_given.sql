-- The indexer groups a step's subject rows itself and hands them to the progress move (issue
-- 18, decision 3). The triggers of 0090 derived them with one GROUP BY over every name the
-- step's records hold: under a 100-row list load a step of ~360 records sorts ~72,000 names,
-- 30-36 ms a step (about 90 us a list record, a fifth of the gateway's CPU). The indexer
-- (`audit::step_rows::Grouper`) now groups them in a hash map, a few ms a step, and sets
-- them in `step_rows` in the same UPDATE that moves the progress: still one statement, so rows
-- and progress commit together and SQLite's write lock is never held across an await.
--
-- Progress still implies rows: the database derives them as before whenever a move does not
-- carry rows holding one `seq` for each name of the records it moves over (a move by hand, an
-- archive's move, a first progress, a record whose `subjects` is not a list of names, or rows
-- that were forged short; malformed carried rows count as none). Carried rows that hold as
-- many `seq`s but say something else are not checked here (that is the sort this removes):
-- verification reports them (`audit::verify`, as any planted row), and SECURITY.md says what
-- that leaves to an attacker who can write this table. Short carried rows are inserted beside
-- the derived ones: extra candidates, which searches check against the records. `step_rows`
-- is emptied in the same statement, and set only by a move forward: it never stays.
ALTER TABLE audit_index_progress ADD COLUMN step_rows TEXT;

DROP TRIGGER audit_index_progress_moved;
DROP TRIGGER audit_index_progress_first;
-- A carried row is `[text, integer, integer, array]`; anything else is not one (the CASE keeps
-- `json_type` off an element that is not an array: on a bare string it raises an error, and
-- the move would fail for good).
CREATE TRIGGER audit_index_progress_moved AFTER UPDATE OF chain_seq ON audit_index_progress
WHEN NEW.chain_seq > OLD.chain_seq
BEGIN
    INSERT OR IGNORE INTO audit_subject_steps (subject_id, writer_id, first_seq, last_seq, seqs)
    SELECT json_extract(r.value, '$[0]'), NEW.writer_id, json_extract(r.value, '$[1]'),
           json_extract(r.value, '$[2]'), json_extract(r.value, '$[3]')
    FROM json_each(CASE WHEN json_valid(NEW.step_rows) THEN NEW.step_rows ELSE '[]' END) r
    WHERE CASE WHEN r.type = 'array' THEN json_type(r.value, '$[0]') = 'text'
      AND json_type(r.value, '$[1]') = 'integer' AND json_type(r.value, '$[2]') = 'integer'
      AND json_type(r.value, '$[3]') = 'array' ELSE 0 END;
    INSERT OR IGNORE INTO audit_subject_steps (subject_id, writer_id, first_seq, last_seq, seqs)
    SELECT j.value, NEW.writer_id, MIN(l.seq), MAX(l.seq), json_group_array(DISTINCT l.seq)
    FROM audit_log l, json_each(l.subjects) j
    WHERE l.writer_id = NEW.writer_id AND l.chain_seq > OLD.chain_seq
      AND l.chain_seq <= NEW.chain_seq AND json_valid(l.subjects) AND typeof(l.seq) = 'integer'
      AND (SELECT COALESCE(SUM(json_array_length(r.value, '$[3]')), 0)
           FROM json_each(CASE WHEN json_valid(NEW.step_rows) THEN NEW.step_rows ELSE '[]' END) r
           WHERE CASE WHEN r.type = 'array' THEN json_type(r.value, '$[0]') = 'text'
             AND json_type(r.value, '$[1]') = 'integer' AND json_type(r.value, '$[2]') = 'integer'
             AND json_type(r.value, '$[3]') = 'array' ELSE 0 END)
          IS NOT (SELECT COALESCE(SUM(json_array_length(n.subjects)), 0) FROM audit_log n
                  WHERE n.writer_id = NEW.writer_id AND n.chain_seq > OLD.chain_seq
                    AND n.chain_seq <= NEW.chain_seq AND json_valid(n.subjects)
                    AND typeof(n.seq) = 'integer')
    GROUP BY j.value, l.seq / 256;
    UPDATE audit_index_progress SET step_rows = NULL
    WHERE writer_id = NEW.writer_id AND step_rows IS NOT NULL;
END;
-- A chain's first progress derives its rows as 0090 did (once a chain; an archive's first
-- move too); it cannot carry `step_rows` (refused below).
CREATE TRIGGER audit_index_progress_first AFTER INSERT ON audit_index_progress
BEGIN
    INSERT OR IGNORE INTO audit_subject_steps (subject_id, writer_id, first_seq, last_seq, seqs)
    SELECT j.value, NEW.writer_id, MIN(l.seq), MAX(l.seq), json_group_array(DISTINCT l.seq)
    FROM audit_log l, json_each(l.subjects) j
    WHERE l.writer_id = NEW.writer_id AND l.chain_seq <= NEW.chain_seq
      AND json_valid(l.subjects) AND typeof(l.seq) = 'integer'
    GROUP BY j.value, l.seq / 256;
END;

-- Carried rows only with a move forward: a value set without one would wait in the row for the
-- next move (an archive's, or a step whose rows the database derives) and be inserted by it.
CREATE TRIGGER audit_index_progress_rows_moving BEFORE UPDATE OF step_rows ON audit_index_progress
WHEN NEW.step_rows IS NOT NULL AND NEW.chain_seq <= OLD.chain_seq
BEGIN SELECT RAISE(ABORT, 'audit_index_progress: step rows only with a move forward'); END;
CREATE TRIGGER audit_index_progress_rows_first BEFORE INSERT ON audit_index_progress
WHEN NEW.step_rows IS NOT NULL
BEGIN SELECT RAISE(ABORT, 'audit_index_progress: step rows only with a move forward'); END;
