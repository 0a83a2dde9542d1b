-- Schedules: their rows (created, changed, paused, deleted at run time), the dispatchers'
-- probe for the next due one, the firing round (lock the due rows, start their runs,
-- advance them), the runs a schedule started.
-- Used by durable/store/schedules.py. (How these files are read: durable/store/statements.py.)
-- The table is durable_schedules (sql/0011_schedules.sql); on Citus it stays on the
-- coordinator, so its statements may call the schema's functions.

-- name: _schedule_columns
id, workflow, version, queue, input, cron, every_s, timezone, overlap, catchup_window_s, paused, declared,
next_fire_at, due_at, buffered_at, last_fire_at, last_run_id, last_run_key, fired, skipped, missed, note,
created_at, updated_at

-- name: schedules_now
SELECT durable_now()

-- name: schedule_upsert
-- Create a schedule, or change the definition of one of the same workflow (its state —
-- paused, counters, last run — stays; its next tick is recomputed only when its timing
-- changed). Nothing comes back when the id belongs to another workflow.
INSERT INTO durable_schedules AS s (id, workflow, version, queue, input, cron, every_s, timezone, overlap,
                                    catchup_window_s, paused, declared, next_fire_at, due_at)
VALUES (%(id)s, %(workflow)s, %(version)s, %(queue)s, %(input)s::jsonb, %(cron)s, %(every_s)s, %(timezone)s,
        %(overlap)s, %(catchup_window_s)s, %(paused)s, %(declared)s, %(next_fire_at)s,
        CASE WHEN %(paused)s THEN NULL ELSE %(next_fire_at)s::timestamptz END)
ON CONFLICT (id) DO UPDATE
   SET version = EXCLUDED.version, queue = EXCLUDED.queue, input = EXCLUDED.input, cron = EXCLUDED.cron,
       every_s = EXCLUDED.every_s, timezone = EXCLUDED.timezone, overlap = EXCLUDED.overlap,
       catchup_window_s = EXCLUDED.catchup_window_s, declared = EXCLUDED.declared,
       next_fire_at = CASE WHEN (s.cron, s.every_s, s.timezone) IS NOT DISTINCT FROM
                                (EXCLUDED.cron, EXCLUDED.every_s, EXCLUDED.timezone)
                           THEN s.next_fire_at ELSE EXCLUDED.next_fire_at END,
       due_at = CASE WHEN s.paused THEN NULL
                     WHEN (s.cron, s.every_s, s.timezone) IS NOT DISTINCT FROM
                          (EXCLUDED.cron, EXCLUDED.every_s, EXCLUDED.timezone) THEN s.due_at
                     ELSE EXCLUDED.next_fire_at END,
       buffered_at = CASE WHEN EXCLUDED.overlap = 'buffer_one' THEN s.buffered_at END,
       updated_at = now()
 WHERE s.workflow = EXCLUDED.workflow
RETURNING
-- include: _schedule_columns

-- name: schedule_get
SELECT
-- include: _schedule_columns
  FROM durable_schedules WHERE id = %s

-- name: schedule_list
SELECT
-- include: _schedule_columns
  FROM durable_schedules
 WHERE (%(workflow)s::text IS NULL OR workflow = %(workflow)s)
 ORDER BY id LIMIT %(limit)s

-- name: schedule_pause
UPDATE durable_schedules SET paused = true, due_at = NULL, note = %(note)s, updated_at = now()
 WHERE id = %(id)s
RETURNING
-- include: _schedule_columns

-- name: schedule_resume
-- Resume from the next tick after now (ticks that passed while paused are not fired).
UPDATE durable_schedules
   SET paused = false, next_fire_at = %(next)s, due_at = %(next)s, buffered_at = NULL, note = '', updated_at = now()
 WHERE id = %(id)s AND paused
RETURNING
-- include: _schedule_columns

-- name: schedule_delete
DELETE FROM durable_schedules WHERE id = %s RETURNING id

-- name: schedule_started
-- A run started by trigger: it is the schedule's last run (what overlap policies look at).
UPDATE durable_schedules SET last_run_id = %(run)s, last_run_key = %(key)s, updated_at = now()
 WHERE id = %(id)s

-- name: schedules_notify
-- Tell the dispatchers that schedules changed (their loop re-reads the next due time).
SELECT pg_notify(durable_channel(), 'schedules|')

-- name: schedules_next_due
-- The dispatchers' probe (one index read): seconds until the earliest due schedule
-- (negative: overdue; NULL: none is due, all paused or none exists).
SELECT extract(epoch FROM min(due_at) - durable_now())::float8 FROM durable_schedules WHERE due_at IS NOT NULL

-- name: schedules_lock_due
-- The firing round's first statement: the due schedules no other dispatcher holds.
SELECT durable_now() AS db_now,
-- include: _schedule_columns
  FROM durable_schedules
 WHERE due_at <= durable_now()
 ORDER BY due_at
 LIMIT %s
   FOR UPDATE SKIP LOCKED

-- name: schedules_run_states
-- Runs by tree key and id: their status and times (overlap policies; describe). (Arrays of
-- keys and ids rather than a join with unnest: on Citus each key routes to its shard.)
SELECT id, status, created_at, finished_at FROM durable_runs
 WHERE tree_key = ANY(%(keys)s::bigint[]) AND id = ANY(%(ids)s::uuid[])

-- name: schedules_start_runs
-- Start runs the normal way (durable_start_run: pending, due now, 'new|<queue>' notified);
-- a tick started before (a race, a restart) returns nothing, its id being taken. The runs
-- come as one JSON array (one parameter, whatever their number).
SELECT s.id
  FROM jsonb_to_recordset(%s::jsonb) AS t(id uuid, workflow text, version integer, queue text, input jsonb,
                                          timeout float8)
 CROSS JOIN LATERAL durable_start_run(t.id, t.workflow, t.version, t.queue, false, coalesce(t.input, 'null'),
                                      NULL, t.timeout, NULL, NULL) AS s

-- name: schedules_advance
-- The firing round's last statement: each locked row's next tick, due time and counters
-- (one JSON array).
UPDATE durable_schedules AS s
   SET next_fire_at = u.next_fire_at, due_at = u.due_at, buffered_at = u.buffered_at,
       last_fire_at = coalesce(u.last_fire_at, s.last_fire_at),
       last_run_id = coalesce(u.last_run_id, s.last_run_id),
       last_run_key = coalesce(u.last_run_key, s.last_run_key),
       fired = s.fired + u.fired, skipped = s.skipped + u.skipped, missed = s.missed + u.missed
  FROM jsonb_to_recordset(%s::jsonb) AS u(id text, next_fire_at timestamptz, due_at timestamptz,
                                          buffered_at timestamptz, last_fire_at timestamptz, last_run_id uuid,
                                          last_run_key bigint, fired bigint, skipped bigint, missed bigint)
 WHERE s.id = u.id
