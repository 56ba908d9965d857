-- The indexer groups a step's subject rows itself and hands them to the progress move (issue
-- 18, decision 3). The triggers of 0090 derived them with one GROUP BY over every name the
-- step's records hold: under a 100-row list load a step of ~360 records sorts ~72,000 names,
-- 30-36 ms a step (about 90 us a list record, a fifth of the gateway's CPU). The indexer
-- (`audit::index_store::group_rows`) now groups them in a hash map, a few ms a step, and sets
-- them in `step_rows` in the same UPDATE that moves the progress: still one statement, so rows
-- and progress commit together and SQLite's write lock is never held across an await.
--
-- Progress still implies rows: the database derives them as before whenever a move does not
-- carry rows holding one `seq` for each name of the records it moves over (a move by hand, an
-- archive's move, a first progress, a record whose `subjects` is not a list of names, or rows
-- that were forged short). Given rows that do hold as many `seq`s but say something else
-- are what verification reports (`audit::verify`, as for any planted row). `step_rows` is
-- emptied in the same statement: it never stays in the table.
ALTER TABLE audit_index_progress ADD COLUMN step_rows TEXT;

DROP TRIGGER audit_index_progress_moved;
DROP TRIGGER audit_index_progress_first;
CREATE TRIGGER audit_index_progress_moved AFTER UPDATE OF chain_seq ON audit_index_progress
WHEN NEW.chain_seq > OLD.chain_seq
BEGIN
    INSERT OR IGNORE INTO audit_subject_steps (subject_id, writer_id, first_seq, last_seq, seqs)
    SELECT json_extract(r.value, '$[0]'), NEW.writer_id, json_extract(r.value, '$[1]'),
           json_extract(r.value, '$[2]'), json_extract(r.value, '$[3]')
    FROM json_each(CASE WHEN json_valid(NEW.step_rows) THEN NEW.step_rows ELSE '[]' END) r
    WHERE json_type(r.value, '$[3]') = 'array';
    INSERT OR IGNORE INTO audit_subject_steps (subject_id, writer_id, first_seq, last_seq, seqs)
    SELECT j.value, NEW.writer_id, MIN(l.seq), MAX(l.seq), json_group_array(DISTINCT l.seq)
    FROM audit_log l, json_each(l.subjects) j
    WHERE l.writer_id = NEW.writer_id AND l.chain_seq > OLD.chain_seq
      AND l.chain_seq <= NEW.chain_seq AND json_valid(l.subjects) AND typeof(l.seq) = 'integer'
      AND (SELECT COALESCE(SUM(json_array_length(r.value, '$[3]')), 0)
           FROM json_each(CASE WHEN json_valid(NEW.step_rows) THEN NEW.step_rows ELSE '[]' END) r
           WHERE json_type(r.value, '$[3]') = 'array')
          IS NOT (SELECT COALESCE(SUM(json_array_length(n.subjects)), 0) FROM audit_log n
                  WHERE n.writer_id = NEW.writer_id AND n.chain_seq > OLD.chain_seq
                    AND n.chain_seq <= NEW.chain_seq AND json_valid(n.subjects)
                    AND typeof(n.seq) = 'integer')
    GROUP BY j.value, l.seq / 256;
    UPDATE audit_index_progress SET step_rows = NULL
    WHERE writer_id = NEW.writer_id AND step_rows IS NOT NULL;
END;
-- A chain's first progress derives its rows as 0090 did (once a chain; an archive's first
-- move too), and never keeps `step_rows`.
CREATE TRIGGER audit_index_progress_first AFTER INSERT ON audit_index_progress
BEGIN
    INSERT OR IGNORE INTO audit_subject_steps (subject_id, writer_id, first_seq, last_seq, seqs)
    SELECT j.value, NEW.writer_id, MIN(l.seq), MAX(l.seq), json_group_array(DISTINCT l.seq)
    FROM audit_log l, json_each(l.subjects) j
    WHERE l.writer_id = NEW.writer_id AND l.chain_seq <= NEW.chain_seq
      AND json_valid(l.subjects) AND typeof(l.seq) = 'integer'
    GROUP BY j.value, l.seq / 256;
    UPDATE audit_index_progress SET step_rows = NULL
    WHERE writer_id = NEW.writer_id AND step_rows IS NOT NULL;
END;
