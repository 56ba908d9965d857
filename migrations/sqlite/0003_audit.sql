-- The audit log: one row per request, hash-chained in `seq` order. Append-only: the triggers
-- below refuse UPDATE and DELETE, so tampering needs someone who can drop them (and is then
-- caught by verification).
CREATE TABLE audit_log (
    seq          BIGINT PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    time_us      BIGINT NOT NULL,
    request_id   TEXT NOT NULL,
    kind         TEXT NOT NULL,
    client_id    TEXT,
    org          TEXT,
    role         TEXT,
    actor_subject TEXT,
    purpose      TEXT,
    consent_id   TEXT,
    method       TEXT NOT NULL,
    path         TEXT NOT NULL,
    store        TEXT,
    dataset      TEXT,
    subjects     TEXT NOT NULL,
    decision     TEXT NOT NULL,
    rule         TEXT,
    masked       TEXT NOT NULL,
    status       INTEGER NOT NULL,
    bytes_out    BIGINT NOT NULL,
    upstream_us  BIGINT,
    total_us     BIGINT NOT NULL,
    client_addr  TEXT NOT NULL,
    prev_hash    TEXT NOT NULL,
    hash         TEXT NOT NULL
);
CREATE INDEX audit_log_time ON audit_log (time_us);
CREATE INDEX audit_log_org ON audit_log (org, seq);
CREATE INDEX audit_log_client ON audit_log (client_id, seq);

-- Which data subjects each record touched, for the subject's access log and officers' filters.
CREATE TABLE audit_subjects (
    subject_id TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    PRIMARY KEY (subject_id, seq)
);

-- Signed checkpoints: every N records or T seconds, the chain head signed with Ed25519.
CREATE TABLE audit_checkpoints (
    seq        BIGINT PRIMARY KEY,
    time_us    BIGINT NOT NULL,
    hash       TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    signature  TEXT NOT NULL
);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;

CREATE TABLE lockdowns (
    id         TEXT PRIMARY KEY,
    client_id  TEXT,
    org        TEXT,
    reason     TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    lifted_at  BIGINT,
    lifted_by  TEXT
);
CREATE INDEX lockdowns_active ON lockdowns (lifted_at);

CREATE TABLE alerts (
    id         TEXT PRIMARY KEY,
    rule       TEXT NOT NULL,
    client_id  TEXT,
    detail     TEXT NOT NULL,
    audit_ids  TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    acked_at   BIGINT,
    acked_by   TEXT
);
