-- Objections of data subjects to records about them, their history, and the outbox that
-- delivers accepted ones to the store (written in the same transaction as the acceptance).
CREATE TABLE objections (
    id                   TEXT PRIMARY KEY,
    subject_id           TEXT NOT NULL,
    subject_type         TEXT NOT NULL,
    store                TEXT NOT NULL,
    dataset              TEXT NOT NULL,
    record_ref           TEXT NOT NULL,
    field                TEXT,
    reason               TEXT NOT NULL,
    requested_correction TEXT,
    status               TEXT NOT NULL,
    created_at           BIGINT NOT NULL,
    accept_due_at        BIGINT NOT NULL,
    decide_due_at        BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    store_ticket         TEXT,
    store_finding        TEXT,
    correction           TEXT,
    outcome              TEXT,
    overdue_alerted      BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX objections_subject ON objections (subject_id, created_at);
CREATE INDEX objections_record ON objections (store, record_ref);
CREATE INDEX objections_status ON objections (status);

CREATE TABLE workflow_events (
    kind        TEXT NOT NULL,
    item_id     TEXT NOT NULL,
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    from_status TEXT,
    to_status   TEXT NOT NULL,
    note        TEXT
);
CREATE INDEX workflow_events_item ON workflow_events (kind, item_id, at);

CREATE TABLE outbox (
    id              TEXT PRIMARY KEY,
    objection_id    TEXT NOT NULL,
    store           TEXT NOT NULL,
    payload         TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    delivered_at    BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL
);
CREATE INDEX outbox_due ON outbox (delivered_at, next_attempt_at);
