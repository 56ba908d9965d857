-- The subject index as one row per subject per indexing step (issue 18, decision 3).
-- `audit_subjects` held one row per (subject, record): a 100-row list names 200 subjects, so
-- each list record cost the indexer 200 B-tree inserts (2-9 us each), more CPU than the
-- request itself, and the indexer fell behind at full load by a second every second. A step
-- now writes one row per subject it saw, holding the exact `seq`s of the step's records that
-- name that subject: still exact (nothing is scanned at read time but these lists), and a
-- step of 100 list records naming the same 200 subjects writes 200-400 rows, not 20,000.
-- Rows of `audit_subjects` written before this migration stay where they are; readers take
-- both (`audit::index_store`), verification checks both.
--
-- `first_seq`/`last_seq` are the least and greatest of `seqs` (a JSON array of integers), so
-- a reader walking a subject's records newest first reads rows by `last_seq` and knows every
-- row it has not read holds only `seq`s at or below the last one read. A row holds the `seq`s
-- of one bucket of 256 (`seq / 256`): its span is under 256, so a walk finds the rows that
-- straddle its cursor within 256 of it (one index range, not a scan of every newer row), and
-- a row of a hot subject holds at most 256 `seq`s, however large the step.
--
-- No unique key: a row planted at the key the indexer will write (insert-only access is
-- enough) would otherwise keep the genuine row out for good, the table being append-only;
-- without one it only adds candidates, which searches check against the records themselves
-- and verification reports. STRICT: a value of another type (a blob for `seqs`, text for a
-- `seq`) is refused, so readers never meet one.
CREATE TABLE audit_subject_steps (
    subject_id TEXT NOT NULL,
    writer_id  TEXT NOT NULL,
    first_seq  INTEGER NOT NULL,
    last_seq   INTEGER NOT NULL,
    seqs       TEXT NOT NULL
) STRICT;
-- Newest first by `last_seq`, oldest first by `first_seq` (the export walks up), and a chain in
-- order (verification, archive).
CREATE INDEX audit_subject_steps_last ON audit_subject_steps (subject_id, last_seq, first_seq);
CREATE INDEX audit_subject_steps_first ON audit_subject_steps (subject_id, first_seq, last_seq);
CREATE INDEX audit_subject_steps_writer ON audit_subject_steps (writer_id, first_seq);

-- Moving the progress writes the step's rows in the same statement, as 0080's triggers did
-- for `audit_subjects` (progress implies rows stays a rule of the database). `OR IGNORE` keeps
-- a name that is not text (planted in a record's `subjects`; a NULL) from stopping the chain's
-- indexing (see `index_store::move_progress`). A record whose `seq` is not an integer (only a
-- planted one: `seq` is no rowid alias, so it takes text) is left out: STRICT would refuse its
-- row, and OR IGNORE does not cover a type error, so it would stop the chain for good.
DROP TRIGGER audit_index_progress_moved;
DROP TRIGGER audit_index_progress_first;
CREATE TRIGGER audit_index_progress_moved AFTER UPDATE OF chain_seq ON audit_index_progress
WHEN NEW.chain_seq > OLD.chain_seq
BEGIN
    INSERT OR IGNORE INTO audit_subject_steps (subject_id, writer_id, first_seq, last_seq, seqs)
    SELECT j.value, NEW.writer_id, MIN(l.seq), MAX(l.seq), json_group_array(DISTINCT l.seq)
    FROM audit_log l, json_each(l.subjects) j
    WHERE l.writer_id = NEW.writer_id AND l.chain_seq > OLD.chain_seq
      AND l.chain_seq <= NEW.chain_seq AND json_valid(l.subjects) AND typeof(l.seq) = 'integer'
    GROUP BY j.value, l.seq / 256;
END;
CREATE TRIGGER audit_index_progress_first AFTER INSERT ON audit_index_progress
BEGIN
    INSERT OR IGNORE INTO audit_subject_steps (subject_id, writer_id, first_seq, last_seq, seqs)
    SELECT j.value, NEW.writer_id, MIN(l.seq), MAX(l.seq), json_group_array(DISTINCT l.seq)
    FROM audit_log l, json_each(l.subjects) j
    WHERE l.writer_id = NEW.writer_id AND l.chain_seq <= NEW.chain_seq
      AND json_valid(l.subjects) AND typeof(l.seq) = 'integer'
    GROUP BY j.value, l.seq / 256;
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
