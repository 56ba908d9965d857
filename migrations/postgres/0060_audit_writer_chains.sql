-- Per-writer chains (issue 18, decision 1): see the SQLite migration of the same name.
--
-- On PostgreSQL `seq` comes from a sequence: each replica's INSERT takes the next numbers
-- without waiting for any other replica (numbers of a rolled-back batch are skipped; verification
-- follows each chain's `chain_seq`, which has no gaps).
ALTER TABLE audit_log ADD COLUMN writer_id TEXT NOT NULL DEFAULT 'legacy';
ALTER TABLE audit_log ADD COLUMN chain_seq BIGINT;
ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update;
UPDATE audit_log SET chain_seq = seq;
ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update;
ALTER TABLE audit_log ALTER COLUMN chain_seq SET NOT NULL;
ALTER TABLE audit_log ALTER COLUMN writer_id DROP DEFAULT;
CREATE UNIQUE INDEX audit_log_chain ON audit_log (writer_id, chain_seq);

ALTER TABLE audit_checkpoints ADD COLUMN writer_id TEXT NOT NULL DEFAULT 'legacy';
ALTER TABLE audit_checkpoints ADD COLUMN chain_seq BIGINT;
ALTER TABLE audit_checkpoints DISABLE TRIGGER audit_checkpoints_append_only;
UPDATE audit_checkpoints SET chain_seq = seq;
ALTER TABLE audit_checkpoints ENABLE TRIGGER audit_checkpoints_append_only;
ALTER TABLE audit_checkpoints ALTER COLUMN chain_seq SET NOT NULL;
ALTER TABLE audit_checkpoints ALTER COLUMN writer_id DROP DEFAULT;
CREATE INDEX audit_checkpoints_chain ON audit_checkpoints (writer_id, chain_seq);

ALTER TABLE audit_archives ADD COLUMN writer_id TEXT NOT NULL DEFAULT 'legacy';
ALTER TABLE audit_archives ADD COLUMN upto_chain_seq BIGINT;
ALTER TABLE audit_archives DISABLE TRIGGER audit_archives_append_only;
UPDATE audit_archives SET upto_chain_seq = upto_seq;
ALTER TABLE audit_archives ENABLE TRIGGER audit_archives_append_only;
ALTER TABLE audit_archives ALTER COLUMN upto_chain_seq SET NOT NULL;
ALTER TABLE audit_archives ALTER COLUMN writer_id DROP DEFAULT;
CREATE INDEX audit_archives_chain ON audit_archives (writer_id, upto_chain_seq);

CREATE SEQUENCE audit_log_seq_gen AS BIGINT OWNED BY audit_log.seq;
SELECT setval('audit_log_seq_gen',
              GREATEST(COALESCE((SELECT MAX(seq) FROM audit_log), 0),
                       COALESCE((SELECT MAX(upto_seq) FROM audit_archives), 0)) + 1,
              false);
ALTER TABLE audit_log ALTER COLUMN seq SET DEFAULT nextval('audit_log_seq_gen');

-- A record must link to its chain's head (see the SQLite migration). Raised as a unique
-- violation: to a writer it is the same news as a taken place in its chain.
--
-- Within a chain `seq` must grow with `chain_seq` (verification checks it). The column's
-- default numbers a batch in chain order, which is enough for one writer per chain; should two
-- processes race under one writer id, a record's default number may have been taken before
-- that of the record it now follows. It then takes a new one here, after the check has seen
-- that record committed, and so after its number was taken.
CREATE OR REPLACE FUNCTION audit_log_links() RETURNS trigger AS $$
DECLARE
    head_hash TEXT;
    head_seq BIGINT;
BEGIN
    SELECT hash, seq INTO head_hash, head_seq FROM audit_log
    WHERE writer_id = NEW.writer_id AND chain_seq = NEW.chain_seq - 1;
    IF NOT FOUND THEN
        SELECT hash, upto_seq INTO head_hash, head_seq FROM audit_archives
        WHERE writer_id = NEW.writer_id AND upto_chain_seq = NEW.chain_seq - 1;
    END IF;
    IF head_hash IS NULL AND NEW.chain_seq = 1 THEN
        head_hash := '0000000000000000000000000000000000000000000000000000000000000000';
    END IF;
    IF NEW.chain_seq < 1 OR NEW.prev_hash IS DISTINCT FROM head_hash THEN
        RAISE EXCEPTION 'audit_log: record does not link to the head' USING ERRCODE = 'unique_violation';
    END IF;
    IF head_seq IS NOT NULL AND NEW.seq <= head_seq THEN
        NEW.seq := nextval('audit_log_seq_gen');
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

-- Deletion only of what an archive row of the record's own chain covers.
CREATE OR REPLACE FUNCTION credgate_audit_delete_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM audit_archives a
                   WHERE a.writer_id = OLD.writer_id AND a.upto_chain_seq >= OLD.chain_seq) THEN
        RAISE EXCEPTION 'audit_log is append-only';
    END IF;
    RETURN OLD;
END;
$$;

CREATE OR REPLACE FUNCTION credgate_archived_delete_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM audit_log l JOIN audit_archives a
                     ON a.writer_id = l.writer_id AND a.upto_chain_seq >= l.chain_seq
                   WHERE l.seq = OLD.seq) THEN
        RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
    END IF;
    RETURN OLD;
END;
$$;
