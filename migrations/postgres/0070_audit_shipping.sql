-- Audit shipping (issue 19, part 3): see the SQLite migration of the same name.
CREATE TABLE audit_shipping (
    writer_id TEXT NOT NULL,
    sink TEXT NOT NULL,
    -- The chain's place of the last record written and flushed to the sink (0: none).
    records_through BIGINT NOT NULL,
    -- The chain's place of the last checkpoint written and flushed to the sink (0: none).
    checkpoints_through BIGINT NOT NULL,
    updated_us BIGINT NOT NULL,
    PRIMARY KEY (writer_id, sink)
);
