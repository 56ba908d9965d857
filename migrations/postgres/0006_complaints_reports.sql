-- Complaints of data subjects about an institution's use of their data, and whistleblower
-- reports. A report's contact is sealed (AES-256-GCM) and its receipt stored only as a hash.
CREATE TABLE complaints (
    id          TEXT PRIMARY KEY,
    subject_id  TEXT NOT NULL,
    against_org TEXT NOT NULL,
    category    TEXT NOT NULL,
    description TEXT NOT NULL,
    status      TEXT NOT NULL,
    outcome     TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX complaints_subject ON complaints (subject_id, created_at);

CREATE TABLE reports (
    id             TEXT PRIMARY KEY,
    receipt_hash   TEXT NOT NULL UNIQUE,
    about          TEXT NOT NULL,
    category       TEXT NOT NULL,
    description    TEXT NOT NULL,
    contact_sealed TEXT,
    status         TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
