-- durable schema, version 11: schedules (issue 15).
--
-- One row per schedule, created and changed at run time (engine.schedules, `durable
-- schedules ...`, or declared with @durable.workflow(schedule=...)). Dispatchers fire them:
-- each wake locks the rows that are due (FOR UPDATE SKIP LOCKED, so dispatchers never wait
-- for each other and each row is fired by one of them), starts one run per tick through
-- durable_start_run with a run id derived from (schedule id, tick time), and advances the
-- row in the same transaction. A dispatcher that dies mid-transaction leaves nothing behind;
-- one that dies after starting a run but before committing cannot double it either: the tick
-- gets the same run id wherever it is fired again.
--
-- On Citus the table stays on the coordinator (a local table; it is small, and only
-- dispatchers and operators touch it): see durable/store/migrate.py CITUS_COORDINATOR.
--
-- Lock order: a schedule's row before any run (the row is locked first, then runs are started
-- or, with overlap 'cancel_previous', the previous run cancelled through durable_cancel).

CREATE TABLE durable_schedules (
    id               text PRIMARY KEY,
    workflow         text NOT NULL,
    version          integer NOT NULL DEFAULT 1,      -- used when the firing process does not know the workflow
    queue            text NOT NULL DEFAULT 'default',
    input            jsonb NOT NULL DEFAULT 'null',
    cron             text,                            -- a cron expression in timezone, or
    every_s          double precision,                -- a fixed interval (ticks at multiples since the epoch)
    timezone         text NOT NULL DEFAULT 'UTC',
    overlap          text NOT NULL DEFAULT 'skip',
    catchup_window_s double precision NOT NULL DEFAULT 60,
    paused           boolean NOT NULL DEFAULT false,
    declared         boolean NOT NULL DEFAULT false,  -- from @durable.workflow(schedule=...)
    next_fire_at     timestamptz NOT NULL,            -- the next tick not yet handled
    due_at           timestamptz,                     -- when a dispatcher looks at it next (NULL: paused)
    buffered_at      timestamptz,                     -- overlap 'buffer_one': a tick held back until the previous run ends
    last_fire_at     timestamptz,                     -- the last tick that started a run
    last_run_id      uuid,
    last_run_key     bigint,                          -- its tree key (runs are read by tree key and id)
    fired            bigint NOT NULL DEFAULT 0,       -- runs started by ticks
    skipped          bigint NOT NULL DEFAULT 0,       -- ticks not started because of the overlap policy
    missed           bigint NOT NULL DEFAULT 0,       -- ticks older than the catch-up window when first seen
    note             text NOT NULL DEFAULT '',        -- free text (why it is paused, ...)
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT durable_schedules_one_spec CHECK ((cron IS NULL) <> (every_s IS NULL)),
    CONSTRAINT durable_schedules_overlap_valid CHECK (overlap IN ('skip', 'buffer_one', 'allow_all', 'cancel_previous')),
    CONSTRAINT durable_schedules_paused_not_due CHECK (NOT paused OR due_at IS NULL)
);

-- The dispatchers' one query per wake: the earliest due_at (and the due rows themselves).
CREATE INDEX durable_schedules_due_idx ON durable_schedules (due_at) WHERE due_at IS NOT NULL;
