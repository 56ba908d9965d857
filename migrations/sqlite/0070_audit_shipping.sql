-- Audit shipping (issue 19, part 3): how far each writer's chain has been shipped to each
-- external sink (`[audit.ship]`), so that a restarted process resumes where the sink last
-- received its chain instead of from the start (or not at all). One row per (writer, sink);
-- only the process writing that chain updates it. Not part of the chain: losing a row only
-- ships the chain again (at least once), it never hides a record.
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
