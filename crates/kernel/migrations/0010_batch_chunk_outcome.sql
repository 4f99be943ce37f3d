-- Each chunk keeps its own outcome (its message and its newest errors);
-- a batch's counts and errors are those of its chunks, so concurrent
-- chunks never update one shared row. The batch row keeps the definition,
-- the state and the times.
ALTER TABLE batch_chunk
    ADD COLUMN message TEXT,
    -- The chunk's failures, at most 20: [{"target", "error"}].
    ADD COLUMN errors JSONB NOT NULL DEFAULT '[]';

ALTER TABLE batch
    DROP COLUMN processed,
    DROP COLUMN failed,
    DROP COLUMN done_chunks,
    DROP COLUMN errors;
