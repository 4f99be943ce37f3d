-- Cron passes: one row per pass that took the cluster lock. `started` and
-- `finished` are read from the clock at the statement (not the
-- transaction's start), so the intervals are the ones the lock covered.
CREATE TABLE cron_run (
    id        UUID PRIMARY KEY,
    holder    TEXT NOT NULL,
    trigger   TEXT NOT NULL CHECK (trigger IN ('cli', 'http')),
    started   TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    finished  TIMESTAMPTZ,
    outcome   TEXT NOT NULL DEFAULT 'running'
              CHECK (outcome IN ('running', 'ok', 'failed', 'cancelled', 'abandoned')),
    steps     JSONB NOT NULL DEFAULT '[]',
    CHECK (finished IS NULL OR finished >= started)
);

CREATE INDEX cron_run_started ON cron_run (started DESC);
