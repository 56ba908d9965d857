-- The progress move reads its carried rows as JSONB (issue 18). 0100's trigger walked them
-- with `json_each`, which hands every row back as JSON text; each row's `json_type` and
-- `json_extract` then parsed that text again, for the insert and once more for the count.
-- Under a 100-row list load a step carries ~150 rows of ~170 `seq`s each (every record of a
-- step names the same subjects), and rendering them back to text
-- (`jsonTranslateBlobToText` under `jsonEachColumn`) was 3.6% of the gateway's CPU (perf,
-- call graphs), all of it inside SQLite's write lock. Here the text is parsed once into JSONB
-- (`jsonb`, after `json_valid` of the same value: SQLite's parse cache), `jsonb_each` hands
-- each row back as JSONB, and only a row's `seqs` is rendered as text, once, for its column.
--
-- What the move accepts is unchanged: the same `json_valid` test of the whole value, the same
-- shape test of each row, the same count check and the same derivation; `json_extract`
-- answers the same values from JSONB as from text (`seqs` as minified JSON text, as before).
-- `tests/api/step_rows.rs` holds both to 0090's derivation.
DROP TRIGGER audit_index_progress_moved;
CREATE TRIGGER audit_index_progress_moved AFTER UPDATE OF chain_seq ON audit_index_progress
WHEN NEW.chain_seq > OLD.chain_seq
BEGIN
    INSERT OR IGNORE INTO audit_subject_steps (subject_id, writer_id, first_seq, last_seq, seqs)
    SELECT json_extract(r.value, '$[0]'), NEW.writer_id, json_extract(r.value, '$[1]'),
           json_extract(r.value, '$[2]'), json_extract(r.value, '$[3]')
    FROM jsonb_each(CASE WHEN json_valid(NEW.step_rows) THEN jsonb(NEW.step_rows)
                    ELSE jsonb('[]') END) r
    WHERE CASE WHEN r.type = 'array' THEN json_type(r.value, '$[0]') = 'text'
      AND json_type(r.value, '$[1]') = 'integer' AND json_type(r.value, '$[2]') = 'integer'
      AND json_type(r.value, '$[3]') = 'array' ELSE 0 END;
    INSERT OR IGNORE INTO audit_subject_steps (subject_id, writer_id, first_seq, last_seq, seqs)
    SELECT j.value, NEW.writer_id, MIN(l.seq), MAX(l.seq), json_group_array(DISTINCT l.seq)
    FROM audit_log l, json_each(l.subjects) j
    WHERE l.writer_id = NEW.writer_id AND l.chain_seq > OLD.chain_seq
      AND l.chain_seq <= NEW.chain_seq AND json_valid(l.subjects) AND typeof(l.seq) = 'integer'
      AND (SELECT COALESCE(SUM(json_array_length(r.value, '$[3]')), 0)
           FROM jsonb_each(CASE WHEN json_valid(NEW.step_rows) THEN jsonb(NEW.step_rows)
                           ELSE jsonb('[]') END) r
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
