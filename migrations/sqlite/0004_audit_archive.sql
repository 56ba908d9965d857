-- Archiving: records up to a signed checkpoint, older than the retention minimum, may be moved
-- to an archive file. The delete trigger permits deleting exactly the records an archive row
-- covers; archive rows themselves are append-only.
CREATE TABLE audit_archives (
    upto_seq    BIGINT PRIMARY KEY,
    hash        TEXT NOT NULL,
    archived_at BIGINT NOT NULL,
    file_name   TEXT NOT NULL,
    records     BIGINT NOT NULL
);

DROP TRIGGER audit_log_no_delete;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
WHEN OLD.seq > (SELECT COALESCE(MAX(upto_seq), 0) FROM audit_archives)
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;

CREATE TRIGGER audit_archives_no_update BEFORE UPDATE ON audit_archives
BEGIN SELECT RAISE(ABORT, 'audit_archives is append-only'); END;
CREATE TRIGGER audit_archives_no_delete BEFORE DELETE ON audit_archives
BEGIN SELECT RAISE(ABORT, 'audit_archives is append-only'); END;
