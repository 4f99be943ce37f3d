-- Batches: an operation applied to a set of targets in chunks, each chunk
-- one queue job. The batch row holds the definition and the final result
-- (live progress is in Redis, rebuilt from here when Redis lost it); the
-- chunk rows make chunks idempotent: a chunk is done once, in the same
-- transaction as its effects, and a redelivered job finds it done.
CREATE TABLE batch (
    id         UUID PRIMARY KEY,
    operation  TEXT NOT NULL,
    params     JSONB NOT NULL DEFAULT '{}',
    owner_id   UUID REFERENCES users (id) ON DELETE SET NULL,
    state      TEXT NOT NULL DEFAULT 'queued'
               CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    total      INTEGER NOT NULL CHECK (total >= 0),
    processed  INTEGER NOT NULL DEFAULT 0,
    failed     INTEGER NOT NULL DEFAULT 0,
    chunks     INTEGER NOT NULL CHECK (chunks >= 0),
    -- Chunks settled (done or failed); the batch is done when all are.
    done_chunks INTEGER NOT NULL DEFAULT 0,
    message    TEXT NOT NULL DEFAULT '',
    -- The last errors, newest last, at most 20: [{"target", "error"}].
    errors     JSONB NOT NULL DEFAULT '[]',
    created    TIMESTAMPTZ NOT NULL DEFAULT now(),
    started    TIMESTAMPTZ,
    finished   TIMESTAMPTZ
);

CREATE INDEX batch_created ON batch (created DESC);
CREATE INDEX batch_owner ON batch (owner_id, created DESC);

CREATE TABLE batch_chunk (
    batch_id   UUID NOT NULL REFERENCES batch (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    -- The chunk's targets: a JSON array of strings.
    targets    JSONB NOT NULL,
    state      TEXT NOT NULL DEFAULT 'pending'
               CHECK (state IN ('pending', 'done', 'failed', 'skipped')),
    processed  INTEGER NOT NULL DEFAULT 0,
    failed     INTEGER NOT NULL DEFAULT 0,
    done_at    TIMESTAMPTZ,
    PRIMARY KEY (batch_id, seq)
);

CREATE INDEX batch_chunk_pending ON batch_chunk (batch_id) WHERE state = 'pending';
