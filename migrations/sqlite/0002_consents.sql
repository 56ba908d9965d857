-- A data subject's authorization for one org to use their data for one purpose, until expiry
-- or revocation.
CREATE TABLE consents (
    id           TEXT PRIMARY KEY,
    subject_id   TEXT NOT NULL,
    subject_type TEXT NOT NULL,
    grantee_org  TEXT NOT NULL,
    purpose      TEXT NOT NULL,
    created_at   BIGINT NOT NULL,  -- unix microseconds, UTC
    expires_at   BIGINT NOT NULL,
    revoked_at   BIGINT
);
CREATE INDEX consents_subject ON consents (subject_id, created_at);
