-- A data subject's own statement (本人声明) on one of their records, shown with it to every
-- reader until the subject withdraws it.
CREATE TABLE statements (
    id           TEXT PRIMARY KEY,
    subject_id   TEXT NOT NULL,
    subject_type TEXT NOT NULL,
    store        TEXT NOT NULL,
    dataset      TEXT NOT NULL,
    record_ref   TEXT NOT NULL,
    text         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,  -- unix microseconds, UTC
    withdrawn_at BIGINT
);
CREATE INDEX statements_subject ON statements (subject_id, subject_type, created_at);
CREATE INDEX statements_record ON statements (store, record_ref);

-- Self-queries (GET /subject/record) per subject and calendar year (UTC), counted in the
-- transaction of the query's audit record.
CREATE TABLE self_queries (
    subject_id   TEXT NOT NULL,
    subject_type TEXT NOT NULL,
    year         BIGINT NOT NULL,
    queries      BIGINT NOT NULL,
    PRIMARY KEY (subject_id, subject_type, year)
);

-- Consent as evidence: what the person agreed to, how, until when, and the signed receipt.
ALTER TABLE consents ADD COLUMN scope TEXT;              -- JSON array of dataset names
ALTER TABLE consents ADD COLUMN notice_version TEXT;
ALTER TABLE consents ADD COLUMN notice_sha256 TEXT;      -- hex SHA-256 of the notice text
ALTER TABLE consents ADD COLUMN separate_consent BIGINT NOT NULL DEFAULT 0;
ALTER TABLE consents ADD COLUMN ends_with TEXT;          -- 'expiry' or 'business_relationship'
ALTER TABLE consents ADD COLUMN revoked_by TEXT;
ALTER TABLE consents ADD COLUMN receipt TEXT;            -- the signed receipt, as issued
