-- What several replicas on one database share beyond the data itself.

-- The gateway's keys, each wrapped (AES-256-GCM) under the master key that every replica holds
-- in its key directory. A database dump alone does not give them away. `generation` orders
-- rotations of one purpose; the highest signs, older ones only verify until they retire.
CREATE TABLE gateway_keys (
    kid         TEXT PRIMARY KEY,
    purpose     TEXT NOT NULL,
    generation  BIGINT NOT NULL,
    public_key  TEXT,
    wrapped     TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (purpose, generation)
);

-- One counter per kind of change that replicas hold in memory. A change bumps its topic in
-- the same transaction; every replica polls this small table and refreshes what moved.
CREATE TABLE replica_signals (
    topic   TEXT PRIMARY KEY,
    version BIGINT NOT NULL,
    detail  TEXT
);
INSERT INTO replica_signals (topic, version) VALUES ('keys', 0), ('policies', 0), ('objections', 0);

-- A delivery is claimed before it is attempted, so that with a deliverer on every replica each
-- objection goes out once. A claim lapses (a replica died mid-delivery) and is taken over.
ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
ALTER TABLE outbox ADD COLUMN claimed_until BIGINT;

-- The row every audit batch updates first. Its row lock serialises the writers of all replicas,
-- so the chain keeps one head: each batch reads the head under the lock, chains onto it and
-- commits before the next writer may read. Group commit still holds, one transaction a batch.
CREATE TABLE audit_writer (
    id      INTEGER PRIMARY KEY,
    batches BIGINT NOT NULL
);
INSERT INTO audit_writer (id, batches) VALUES (1, 0);
