-- Audit shipping (issue 19, part 3): how far each writer's chain has been shipped to each
-- external sink (`[audit.ship]`), so that a restarted process resumes where the sink last
-- received its chain instead of from the start (or not at all). One row per (writer, sink);
-- updated by whoever holds the chain's lease (its own writer, or a process that adopted a
-- chain left behind). Not part of the chain: losing a row only ships the chain again (at
-- least once); a place past the log's head is treated as corruption and shipped again.
CREATE TABLE audit_shipping (
    writer_id TEXT NOT NULL,
    sink TEXT NOT NULL,
    -- The chain's place of the last record the receiver is known to have read (0: none).
    records_through BIGINT NOT NULL,
    -- The chain's place of the last checkpoint the receiver is known to have read (0: none).
    checkpoints_through BIGINT NOT NULL,
    updated_us BIGINT NOT NULL,
    -- Who ships this chain to this sink now (a writer id; '' none): the chain's own writer
    -- takes it whenever it runs; another process adopts a chain whose lease ran out (its
    -- writer stopped, or changed its id) so that no chain is left unshipped.
    owner TEXT NOT NULL DEFAULT '',
    lease_until_us BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (writer_id, sink)
);
