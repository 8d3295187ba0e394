-- Schema 13 (issue 22): which node runs each scheduled pull. A node claims a source's tick (the
-- instant the cron schedule named) before pulling; one claim per (source, tick), so of several
-- nodes running the same schedule exactly one pulls each time. Old claims are pruned as new
-- ones are made.
CREATE TABLE pull_runs (
    source  TEXT NOT NULL,     -- "<kind>:<facility>"
    tick    INTEGER NOT NULL,  -- the scheduled instant, seconds since the epoch
    node    TEXT NOT NULL,     -- who claimed it (host and process)
    claimed INTEGER NOT NULL,  -- when, microseconds since the epoch
    PRIMARY KEY (source, tick)
);
