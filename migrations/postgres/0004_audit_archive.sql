-- Archiving: see the SQLite migration of the same name.
CREATE TABLE audit_archives (
    upto_seq    BIGINT PRIMARY KEY,
    hash        TEXT NOT NULL,
    archived_at BIGINT NOT NULL,
    file_name   TEXT NOT NULL,
    records     BIGINT NOT NULL
);

CREATE FUNCTION credgate_audit_delete_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.seq > (SELECT COALESCE(MAX(upto_seq), 0) FROM audit_archives) THEN
        RAISE EXCEPTION 'audit_log is append-only';
    END IF;
    RETURN OLD;
END;
$$;
DROP TRIGGER audit_log_append_only ON audit_log;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION credgate_append_only();
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION credgate_audit_delete_guard();
CREATE TRIGGER audit_archives_append_only BEFORE UPDATE OR DELETE ON audit_archives
    FOR EACH ROW EXECUTE FUNCTION credgate_append_only();
