-- Per-writer chains (issue 18, decision 1). Each gateway process appends to its own hash
-- chain, named by its `[audit] writer_id`, so no replica waits on another's head.
--
-- `seq` stays the primary key: the order officers page through and the key the subject index
-- points at. It is no longer a chain position: the INSERT itself assigns it (the largest seq
-- so far plus the record's place in its batch), so writers never collide on it. A record's place
-- in its chain is (`writer_id`, `chain_seq`), unique, and its `prev_hash` links to the record
-- before it in the same chain.
--
-- Everything written so far becomes one chain, `legacy`, with `chain_seq = seq`: its records
-- keep their bytes and hashes (v1..v3 hash `seq`, equal to their `chain_seq`), and its archive
-- rows and checkpoints become the legacy chain's. The append-only guards are lifted only for
-- the length of these UPDATEs, inside the migration's transaction.
ALTER TABLE audit_log ADD COLUMN writer_id TEXT NOT NULL DEFAULT 'legacy';
ALTER TABLE audit_log ADD COLUMN chain_seq BIGINT NOT NULL DEFAULT 0;
DROP TRIGGER audit_log_no_update;
UPDATE audit_log SET chain_seq = seq;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE UNIQUE INDEX audit_log_chain ON audit_log (writer_id, chain_seq);

ALTER TABLE audit_checkpoints ADD COLUMN writer_id TEXT NOT NULL DEFAULT 'legacy';
ALTER TABLE audit_checkpoints ADD COLUMN chain_seq BIGINT NOT NULL DEFAULT 0;
DROP TRIGGER audit_checkpoints_no_update;
UPDATE audit_checkpoints SET chain_seq = seq;
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;
CREATE INDEX audit_checkpoints_chain ON audit_checkpoints (writer_id, chain_seq);

ALTER TABLE audit_archives ADD COLUMN writer_id TEXT NOT NULL DEFAULT 'legacy';
ALTER TABLE audit_archives ADD COLUMN upto_chain_seq BIGINT NOT NULL DEFAULT 0;
DROP TRIGGER audit_archives_no_update;
UPDATE audit_archives SET upto_chain_seq = upto_seq;
CREATE TRIGGER audit_archives_no_update BEFORE UPDATE ON audit_archives
BEGIN SELECT RAISE(ABORT, 'audit_archives is append-only'); END;
CREATE INDEX audit_archives_chain ON audit_archives (writer_id, upto_chain_seq);

-- The database refuses a record that does not link to its chain's head: its `prev_hash` must
-- be the hash of the chain's record before it (or of the chain's archive boundary, or genesis
-- for a chain's first record), and the unique index refuses a second record at one place. Two
-- processes misconfigured with one writer id therefore cannot fork a chain: one of them is
-- refused, and its writer chains again onto the real head.
DROP TRIGGER audit_log_links;
CREATE TRIGGER audit_log_links BEFORE INSERT ON audit_log
WHEN NEW.chain_seq < 1 OR NEW.prev_hash IS NOT COALESCE(
    (SELECT hash FROM audit_log WHERE writer_id = NEW.writer_id AND chain_seq = NEW.chain_seq - 1),
    (SELECT hash FROM audit_archives WHERE writer_id = NEW.writer_id AND upto_chain_seq = NEW.chain_seq - 1),
    CASE WHEN NEW.chain_seq = 1
         THEN '0000000000000000000000000000000000000000000000000000000000000000' END)
BEGIN SELECT RAISE(ABORT, 'audit_log: record does not link to the head'); END;

-- Deletion stays refused except for what an archive row of the record's own chain covers: the
-- old guard compared a global seq with the newest archive, which with several chains would
-- have unlocked another chain's unarchived records.
DROP TRIGGER audit_log_no_delete;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
WHEN NOT EXISTS (SELECT 1 FROM audit_archives a
                 WHERE a.writer_id = OLD.writer_id AND a.upto_chain_seq >= OLD.chain_seq)
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;

DROP TRIGGER audit_subjects_no_delete;
CREATE TRIGGER audit_subjects_no_delete BEFORE DELETE ON audit_subjects
WHEN NOT EXISTS (SELECT 1 FROM audit_log l JOIN audit_archives a
                   ON a.writer_id = l.writer_id AND a.upto_chain_seq >= l.chain_seq
                 WHERE l.seq = OLD.seq)
BEGIN SELECT RAISE(ABORT, 'audit_subjects is append-only'); END;
