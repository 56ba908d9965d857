-- Complaints get the regulation's handling deadline (existing rows: 30 days from filing, the
-- default of `[workflows] complaint_days`), the answer the subject reads, and the deadline the
-- watcher last alerted (0: none), so each deadline is alerted once.
ALTER TABLE complaints ADD COLUMN due_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE complaints ADD COLUMN answer TEXT;
ALTER TABLE complaints ADD COLUMN alerted_due_at BIGINT NOT NULL DEFAULT 0;
UPDATE complaints SET due_at = created_at + 30 * 86400000000;

-- A data subject's request about one of their records (credit repair, correction,
-- restriction, deletion), worked by handlers like an objection, with deadlines: accept or
-- refuse by `accept_due_at`, finish by `finish_due_at` (set on acceptance, moved once by an
-- extension).
CREATE TABLE requests (
    id             TEXT PRIMARY KEY,
    subject_id     TEXT NOT NULL,
    subject_type   TEXT NOT NULL,
    kind           TEXT NOT NULL,
    store          TEXT NOT NULL,
    dataset        TEXT NOT NULL,
    record_ref     TEXT NOT NULL,
    reason         TEXT NOT NULL,
    status         TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    accept_due_at  BIGINT NOT NULL,
    finish_due_at  BIGINT,
    outcome        TEXT,
    answer         TEXT,
    alerted_due_at BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX requests_subject ON requests (subject_id, subject_type, created_at);
CREATE INDEX requests_status ON requests (status);
ALTER TABLE complaints ALTER COLUMN due_at DROP DEFAULT;
