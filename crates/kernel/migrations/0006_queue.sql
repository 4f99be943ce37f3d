-- Queue items of the PostgreSQL queue backend. An item is available when
-- `available_at` has passed; taking it sets a lease token and moves
-- `available_at` to the lease's end, so an item whose worker died is
-- available again when the lease runs out. Acking deletes the row; an item
-- out of attempts stays with `dead_at` set (the dead letter list).
CREATE TABLE queue_item (
    id            UUID PRIMARY KEY,
    queue         TEXT NOT NULL,
    payload       JSONB NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts  INTEGER NOT NULL CHECK (max_attempts >= 1),
    last_error    TEXT,
    enqueued      TIMESTAMPTZ NOT NULL DEFAULT now(),
    available_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_token   UUID,
    dead_at       TIMESTAMPTZ
);

-- The claim: the next available item of a queue, oldest first.
CREATE INDEX queue_item_available ON queue_item (queue, available_at, id)
    WHERE dead_at IS NULL;
CREATE INDEX queue_item_dead ON queue_item (queue) WHERE dead_at IS NOT NULL;
