-- TRUNCATE fires no row trigger: without these statement guards, anyone who may truncate
-- could empty the checkpoints, the archive rows or the subject index with the row guards in
-- place (the log itself has had one since 0003).
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION credgate_append_only();
CREATE TRIGGER audit_archives_no_truncate BEFORE TRUNCATE ON audit_archives
    FOR EACH STATEMENT EXECUTE FUNCTION credgate_append_only();
CREATE TRIGGER audit_subjects_no_truncate BEFORE TRUNCATE ON audit_subjects
    FOR EACH STATEMENT EXECUTE FUNCTION credgate_append_only();

-- The subject index that feeds the access log is append-only like the log itself: only rows
-- of records an archive covers may be deleted (with those records).
CREATE FUNCTION credgate_archived_delete_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.seq > (SELECT COALESCE(MAX(upto_seq), 0) FROM audit_archives) THEN
        RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
    END IF;
    RETURN OLD;
END;
$$;
CREATE TRIGGER audit_subjects_no_update BEFORE UPDATE ON audit_subjects
    FOR EACH ROW EXECUTE FUNCTION credgate_append_only();
CREATE TRIGGER audit_subjects_no_delete BEFORE DELETE ON audit_subjects
    FOR EACH ROW EXECUTE FUNCTION credgate_archived_delete_guard();

-- The primary key leads with the subject: lookups by record (archiving, verification) need
-- their own index.
CREATE INDEX audit_subjects_seq ON audit_subjects (seq);

-- A complaint belongs to a subject of a type, as consents and objections do: a person whose
-- resident id spells a company's USCC is a stranger to the company's complaints. Existing
-- rows take the type their id's form tells (17 digits, a digit or X, a birth date in
-- between: a resident id), else legal. Every new row names its type: no default stays.
ALTER TABLE complaints ADD COLUMN subject_type TEXT NOT NULL DEFAULT 'legal';
UPDATE complaints SET subject_type = 'natural'
WHERE subject_id ~ '^[0-9]{17}[0-9X]$'
  AND substr(subject_id, 7, 4) BETWEEN '1800' AND '2099'
  AND substr(subject_id, 11, 2) BETWEEN '01' AND '12'
  AND substr(subject_id, 13, 2) BETWEEN '01' AND '31';
ALTER TABLE complaints ALTER COLUMN subject_type DROP DEFAULT;
DROP INDEX complaints_subject;
CREATE INDEX complaints_subject ON complaints (subject_id, subject_type, created_at);
