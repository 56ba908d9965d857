-- The subject index as one row per subject per indexing step (issue 18, decision 3).
-- `audit_subjects` held one row per (subject, record): a 100-row list names 200 subjects, so
-- each list record cost the indexer 200 B-tree inserts (2-9 us each), more CPU than the
-- request itself, and the indexer fell behind at full load by a second every second. A step
-- now writes one row per subject it saw, holding the exact `seq`s of the step's records that
-- name that subject: still exact (nothing is scanned at read time but these lists), and a
-- step of 100 list records naming the same 200 subjects writes 200 rows instead of 20,000.
-- Rows of `audit_subjects` written before this migration stay where they are; readers take
-- both (`audit::index_store`), verification checks both.
--
-- `first_seq`/`last_seq` are the least and greatest of `seqs` (a JSON array of integers), so
-- a reader walking a subject's records newest first reads rows by `last_seq` and knows every
-- row it has not read holds only smaller `seq`s. Within a chain steps cover disjoint ranges
-- (a chain's `seq` grows with its place, 0060), so `last_seq` is unique a subject and a
-- record's index entries are in exactly one row of its writer.
CREATE TABLE audit_subject_steps (
    subject_id TEXT NOT NULL,
    writer_id  TEXT NOT NULL,
    first_seq  BIGINT NOT NULL,
    last_seq   BIGINT NOT NULL,
    seqs       TEXT NOT NULL,
    PRIMARY KEY (subject_id, last_seq)
) WITHOUT ROWID;
-- Oldest first (the officers' export walks up), and a chain in order (verification, archive).
CREATE INDEX audit_subject_steps_first ON audit_subject_steps (subject_id, first_seq, last_seq);
CREATE INDEX audit_subject_steps_writer ON audit_subject_steps (writer_id, first_seq);

-- Moving the progress writes the step's rows in the same statement, as 0080's triggers did
-- for `audit_subjects` (progress implies rows stays a rule of the database). `OR IGNORE`: a
-- row already at that key (planted) is left for verification to report, never a stop of the
-- chain's indexing (see `index_store::move_progress`).
DROP TRIGGER audit_index_progress_moved;
DROP TRIGGER audit_index_progress_first;
CREATE TRIGGER audit_index_progress_moved AFTER UPDATE OF chain_seq ON audit_index_progress
WHEN NEW.chain_seq > OLD.chain_seq
BEGIN
    INSERT OR IGNORE INTO audit_subject_steps (subject_id, writer_id, first_seq, last_seq, seqs)
    SELECT j.value, NEW.writer_id, MIN(l.seq), MAX(l.seq), json_group_array(DISTINCT l.seq)
    FROM audit_log l, json_each(l.subjects) j
    WHERE l.writer_id = NEW.writer_id AND l.chain_seq > OLD.chain_seq
      AND l.chain_seq <= NEW.chain_seq AND json_valid(l.subjects)
    GROUP BY j.value;
END;
CREATE TRIGGER audit_index_progress_first AFTER INSERT ON audit_index_progress
BEGIN
    INSERT OR IGNORE INTO audit_subject_steps (subject_id, writer_id, first_seq, last_seq, seqs)
    SELECT j.value, NEW.writer_id, MIN(l.seq), MAX(l.seq), json_group_array(DISTINCT l.seq)
    FROM audit_log l, json_each(l.subjects) j
    WHERE l.writer_id = NEW.writer_id AND l.chain_seq <= NEW.chain_seq
      AND json_valid(l.subjects)
    GROUP BY j.value;
END;

-- Append-only like `audit_subjects`: a row leaves only when an archive of its own chain
-- covers all of it (its greatest `seq`). A row that straddles an archive's cut stays whole;
-- the `seq`s of archived records in it name nothing in the log any more, and verification
-- accepts them only below its chain's archive.
CREATE TRIGGER audit_subject_steps_no_update BEFORE UPDATE ON audit_subject_steps
BEGIN SELECT RAISE(ABORT, 'audit_subject_steps is append-only'); END;
CREATE TRIGGER audit_subject_steps_no_delete BEFORE DELETE ON audit_subject_steps
WHEN NOT EXISTS (SELECT 1 FROM audit_archives a
                 WHERE a.writer_id = OLD.writer_id AND a.upto_seq >= OLD.last_seq)
BEGIN SELECT RAISE(ABORT, 'audit_subject_steps is append-only'); END;
