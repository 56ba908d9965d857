-- Institutions (machine clients). Secrets are stored only as argon2id PHC strings.
CREATE TABLE clients (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    org         TEXT NOT NULL,
    role        TEXT NOT NULL,
    region      TEXT,
    secret_hash TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    created_at  BIGINT NOT NULL,  -- unix microseconds, UTC
    disabled_at BIGINT
);
CREATE INDEX clients_org ON clients (org);
