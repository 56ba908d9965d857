-- The subject index that feeds the access log is append-only like the log itself: only rows
-- of records an archive covers may be deleted (with those records). SQLite has no TRUNCATE;
-- its `DELETE FROM t` meets these row guards.
CREATE TRIGGER audit_subjects_no_update BEFORE UPDATE ON audit_subjects
BEGIN SELECT RAISE(ABORT, 'audit_subjects is append-only'); END;
CREATE TRIGGER audit_subjects_no_delete BEFORE DELETE ON audit_subjects
WHEN OLD.seq > (SELECT COALESCE(MAX(upto_seq), 0) FROM audit_archives)
BEGIN SELECT RAISE(ABORT, 'audit_subjects is append-only'); END;

-- The primary key leads with the subject: lookups by record (archiving, verification) need
-- their own index.
CREATE INDEX audit_subjects_seq ON audit_subjects (seq);

-- A complaint belongs to a subject of a type, as consents and objections do: a person whose
-- resident id spells a company's USCC is a stranger to the company's complaints. Existing
-- rows take the type their id's form tells (17 digits, a digit or X, a birth date in
-- between: a resident id), else legal.
ALTER TABLE complaints ADD COLUMN subject_type TEXT NOT NULL DEFAULT 'legal';
UPDATE complaints SET subject_type = 'natural'
WHERE length(subject_id) = 18
  AND substr(subject_id, 1, 17) NOT GLOB '*[^0-9]*'
  AND substr(subject_id, 18, 1) GLOB '[0-9X]'
  AND substr(subject_id, 7, 4) BETWEEN '1800' AND '2099'
  AND substr(subject_id, 11, 2) BETWEEN '01' AND '12'
  AND substr(subject_id, 13, 2) BETWEEN '01' AND '31';
DROP INDEX complaints_subject;
CREATE INDEX complaints_subject ON complaints (subject_id, subject_type, created_at);
