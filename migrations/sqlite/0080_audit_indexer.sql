-- The subject index is written behind the request's path (issue 18, decision 3). A record's
-- `audit_subjects` rows were inserted by a trigger in the record's own INSERT, so a 100-row
-- list waited for 100 index rows before its answer could leave. A background indexer
-- (`audit::indexer`) now reads each chain's committed records after its progress, inserts
-- their index rows and advances the progress in one transaction. Searches stay exact before
-- it catches up: they also scan each chain's records after its progress (`audit::index_store`).
DROP TRIGGER audit_log_subjects;

-- How far each chain is indexed: every record of `writer_id` with `chain_seq <= chain_seq`
-- has its index rows. Progress is kept per chain, never as a global `seq`: on PostgreSQL a
-- lower `seq` may commit after a higher one of another replica's chain, while within a chain
-- records commit in chain order. `indexed_us` is when it last moved (so replicas leave a
-- chain its own writer keeps indexed alone).
CREATE TABLE audit_index_progress (
    writer_id  TEXT PRIMARY KEY,
    chain_seq  BIGINT NOT NULL,
    indexed_us BIGINT NOT NULL
);

-- Everything already in the log was indexed by the trigger dropped above.
INSERT INTO audit_index_progress (writer_id, chain_seq, indexed_us)
SELECT writer_id, MAX(chain_seq), 0 FROM audit_log GROUP BY writer_id;

-- On SQLite a step is one statement: moving the progress indexes the records it moves over.
-- A transaction of several statements would keep SQLite's one write lock across the
-- indexer task's awaits; one statement commits on its own, atomically, rows and progress
-- together. (PostgreSQL, with row locks, does the same in an explicit transaction.)
CREATE TRIGGER audit_index_progress_moved AFTER UPDATE OF chain_seq ON audit_index_progress
WHEN NEW.chain_seq > OLD.chain_seq
BEGIN
    INSERT OR IGNORE INTO audit_subjects (subject_id, seq)
    SELECT j.value, l.seq FROM audit_log l, json_each(l.subjects) j
    WHERE l.writer_id = NEW.writer_id AND l.chain_seq > OLD.chain_seq
      AND l.chain_seq <= NEW.chain_seq AND json_valid(l.subjects);
END;
CREATE TRIGGER audit_index_progress_first AFTER INSERT ON audit_index_progress
BEGIN
    INSERT OR IGNORE INTO audit_subjects (subject_id, seq)
    SELECT j.value, l.seq FROM audit_log l, json_each(l.subjects) j
    WHERE l.writer_id = NEW.writer_id AND l.chain_seq <= NEW.chain_seq
      AND json_valid(l.subjects);
END;

-- Progress never runs ahead of its chain: a place above the chain's last record would say
-- "indexed" over records not yet written (planted for a writer that has not written, they
-- would never be indexed and a search would miss them until verification).
CREATE TRIGGER audit_index_progress_within_insert BEFORE INSERT ON audit_index_progress
WHEN NEW.chain_seq > COALESCE((SELECT MAX(chain_seq) FROM audit_log
                               WHERE writer_id = NEW.writer_id), 0)
BEGIN SELECT RAISE(ABORT, 'audit_index_progress ahead of its chain'); END;
CREATE TRIGGER audit_index_progress_within_update BEFORE UPDATE ON audit_index_progress
WHEN NEW.chain_seq > COALESCE((SELECT MAX(chain_seq) FROM audit_log
                               WHERE writer_id = NEW.writer_id), 0)
BEGIN SELECT RAISE(ABORT, 'audit_index_progress ahead of its chain'); END;

-- Progress only moves forward and is never removed: lowering it would let verification
-- accept records whose index rows were deleted as "not indexed yet".
CREATE TRIGGER audit_index_progress_forward BEFORE UPDATE ON audit_index_progress
WHEN NEW.chain_seq < OLD.chain_seq OR NEW.writer_id IS NOT OLD.writer_id
BEGIN SELECT RAISE(ABORT, 'audit_index_progress only moves forward'); END;
CREATE TRIGGER audit_index_progress_no_delete BEFORE DELETE ON audit_index_progress
BEGIN SELECT RAISE(ABORT, 'audit_index_progress only moves forward'); END;

-- The index's own guards are unchanged: `audit_subjects` stays append-only except for rows of
-- records an archive of their chain covers (0060, `audit_subjects_no_delete`), which the
-- archive removes with the records. An archive never needs the progress moved: it removes
-- records, and the indexer reads only the records still in the log.
