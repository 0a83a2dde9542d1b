-- Every SQL statement the engine runs, by name. Loaded by durable/store/statements.py;
-- each block starts with a `-- name: NAME` line and runs until the next one. A line
-- `-- include: NAME` is replaced by that block (blocks whose name starts with _ are
-- fragments, never run alone). Parameters are psycopg's: %(name)s or positional %s.
--
-- Statements run on connections whose search_path is durable's schema. Multi-step
-- transactions that must take locks in a fixed order live in the migrations (sql/) as
-- PL/pgSQL functions (durable_finish, durable_cascade, ...), one round trip each.
--
-- THE LOCK ORDER (sql/0004_concurrency.sql; every multi-row transaction follows it):
--   1. tree ancestors before descendants (a run's parent before the run, a run before its
--      children, generation by generation); within one level, by id;
--   2. the first lock a transaction takes on a row is the strongest it will need on it;
--   3. runs woken at the end of a transaction (parents, cross-run waiters) come after every
--      lock of the tree being changed, parent first, then waiters by id;
--   4. background statements over many runs (heartbeat, timeout sweep, retention, claims)
--      never wait for a row lock: SKIP LOCKED, and what they skipped is retried next round.


-- name: start_run
-- A top-level run. $leased: insert it already leased by the process that will execute
-- it, so no other process can claim it in between. A pending run notifies claimers.
WITH ins AS (
    INSERT INTO durable_runs (id, root_id, chain_root_id, workflow, version, queue, status, input,
                              idempotency_key, execution_timeout_s, deadline_at,
                              lease_owner, lease_token, lease_expires_at, next_wakeup_at, started_at)
    VALUES (%(id)s, %(id)s, %(id)s, %(workflow)s, %(version)s, %(queue)s,
            CASE WHEN %(leased)s THEN 'running' ELSE 'pending' END,
            %(input)s::jsonb, %(key)s, %(timeout)s::float8,
            durable_now() + make_interval(secs => %(timeout)s::float8),
            CASE WHEN %(leased)s THEN %(owner)s END,
            CASE WHEN %(leased)s THEN nextval('durable_lease_tokens') END,
            CASE WHEN %(leased)s THEN now() + make_interval(secs => %(ttl)s::float8) END,
            CASE WHEN %(leased)s THEN NULL ELSE coalesce(%(start_at)s::timestamptz, durable_now()) END,
            CASE WHEN %(leased)s THEN now() END)
    ON CONFLICT DO NOTHING
    RETURNING id, status, lease_token, queue, next_wakeup_at
)
SELECT id, status, lease_token,
       CASE WHEN status = 'pending' THEN pg_notify(durable_channel(), 'new|' || queue) END,
       extract(epoch FROM next_wakeup_at - durable_now())::float8 AS due_in_s
FROM ins

-- name: find_run_for_start
SELECT id, workflow, input FROM durable_runs
WHERE id = %(id)s OR (%(key)s::text IS NOT NULL AND workflow = %(workflow)s AND idempotency_key = %(key)s)
LIMIT 1

-- name: start_children
-- Children and their child_started events, one transaction under the parent's lease.
SELECT durable_start_children(%s, %s, %s::jsonb)

-- name: _claimed
UPDATE durable_runs r
   SET status = 'running', lease_owner = %(owner)s,
       lease_token = nextval('durable_lease_tokens'),
       lease_expires_at = now() + make_interval(secs => %(ttl)s::float8),
       next_wakeup_at = NULL, started_at = coalesce(r.started_at, now())
  FROM c
 WHERE r.id = c.id
RETURNING r.id, r.root_id, r.parent_id, r.chain_root_id, r.workflow, r.version, r.queue, r.input,
          r.attempt, r.depth, r.lease_token, r.cancel_requested, c.prev_status,
          extract(epoch FROM clock_timestamp() - c.due)::float8 AS wake_latency_s,
          CASE WHEN c.prev_status = 'pending' THEN 0
               ELSE (SELECT coalesce(max(seq), 0) FROM durable_events e WHERE e.run_id = r.id) END AS last_seq,
          extract(epoch FROM r.deadline_at - durable_now())::float8 AS deadline_in_s

-- name: claim_due
-- Batch claim: due pending/suspended runs of the queues and workflow versions this
-- process serves, plus runs whose executor stopped heartbeating. A woken run that
-- another process parked (lease_owner is its sticky hint) is left to that process
-- for sticky_grace seconds. The scans filter by workflow and owner themselves, so runs
-- no process here can take (unknown workflow versions) never crowd out the ones it can.
WITH cand AS MATERIALIZED (
    -- per queue, an ordered scan of the due index that stops after %(scan)s rows: the cost
    -- is O(batch) whatever the backlog (queue = ANY(...) would read and sort every due row)
    SELECT d.id FROM unnest(%(queues)s::text[]) AS q(name)
      CROSS JOIN LATERAL (
        SELECT r.id FROM durable_runs r
         WHERE r.queue = q.name AND r.status IN ('pending', 'suspended')
           AND r.next_wakeup_at <= durable_now()
           AND (r.workflow || ':' || r.version) = ANY(%(workflows)s)
           AND (r.lease_owner IS NULL OR r.lease_owner = %(owner)s
                OR r.next_wakeup_at <= durable_now() - make_interval(secs => %(grace)s::float8))
         ORDER BY r.next_wakeup_at LIMIT %(scan)s) d
    UNION ALL
    (SELECT id FROM durable_runs
      WHERE status = 'running' AND lease_expires_at < now()
        AND queue = ANY(%(queues)s) AND (workflow || ':' || version) = ANY(%(workflows)s)
      ORDER BY lease_expires_at LIMIT %(scan)s)
), c AS (
    SELECT id, status AS prev_status,
           CASE WHEN status = 'running' THEN lease_expires_at ELSE next_wakeup_at END AS due
      FROM durable_runs
     WHERE id = ANY(ARRAY(SELECT id FROM cand))  -- primary-key probes, never a join plan
       AND ((status IN ('pending', 'suspended') AND next_wakeup_at <= durable_now()
             AND (lease_owner IS NULL OR lease_owner = %(owner)s
                  OR next_wakeup_at <= durable_now() - make_interval(secs => %(grace)s::float8)))
            OR (status = 'running' AND lease_expires_at < now()))
     ORDER BY due
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
)

-- include: _claimed

-- name: run_due_in
-- Why CLAIM_ONE found nothing: the run's status and how long until it is due (negative:
-- due already, so another transaction held its row for a moment).
SELECT status, extract(epoch FROM next_wakeup_at - durable_now())::float8 FROM durable_runs WHERE id = %s

-- name: claim_one
-- Claim one known run (woken by notification or a local timer), if it is due.
WITH c AS (
    SELECT id, status AS prev_status, next_wakeup_at AS due
      FROM durable_runs
     WHERE id = %(id)s AND status IN ('pending', 'suspended')
       AND next_wakeup_at <= durable_now()
       AND (workflow || ':' || version) = ANY(%(workflows)s)
       FOR UPDATE SKIP LOCKED
)

-- include: _claimed

-- name: load_history
SELECT seq, pos, op, kind, name, data FROM durable_events WHERE run_id = %s ORDER BY seq

-- name: append_events
-- Append journal events, fenced: written only while this token holds the lease
-- (FOR SHARE makes a concurrent cancel or re-claim wait for this commit, or makes this
-- statement see it and write nothing). pos: the main branch's position; op: the
-- operation's key in a concurrent branch (one of the two, or neither for run-level events).
INSERT INTO durable_events (run_id, seq, root_id, pos, op, kind, name, data)
SELECT r.id, e.seq, r.root_id, e.pos, e.op, e.kind, e.name, e.data
  FROM (SELECT id, root_id FROM durable_runs
         WHERE id = %s AND lease_token = %s AND status = 'running' FOR SHARE) r,
       unnest(%s::int[], %s::int[], %s::text[], %s::text[], %s::text[], %s::jsonb[])
           AS e(seq, pos, op, kind, name, data)

-- name: events_since
-- The keys and kinds of a run's events from a seq on (a retried write whose first answer
-- was lost: which of its events are there already).
SELECT seq, pos, op, kind FROM durable_events WHERE run_id = %s AND seq >= %s ORDER BY seq

-- name: append_event
INSERT INTO durable_events (run_id, seq, root_id, pos, op, kind, name, data)
SELECT id, %s, root_id, %s, %s, %s, %s, %s::jsonb
  FROM durable_runs WHERE id = %s AND lease_token = %s AND status = 'running' FOR SHARE

-- name: append_timer_event
-- A timer or retry wait: the event carries the fire time computed from the database clock.
INSERT INTO durable_events (run_id, seq, root_id, pos, op, kind, name, data)
SELECT id, %(seq)s, root_id, %(pos)s, %(op)s, %(kind)s, %(name)s,
       %(data)s::jsonb || jsonb_build_object(
           'fire_at', extract(epoch FROM durable_now() + make_interval(secs => %(delay)s::float8)))
  FROM durable_runs WHERE id = %(id)s AND lease_token = %(token)s AND status = 'running' FOR SHARE
RETURNING (data ->> 'fire_at')::float8

-- name: db_now
-- The database clock (epoch seconds), a time-control offset included.
SELECT extract(epoch FROM durable_now())::float8

-- name: suspend
-- Suspend: release the lease, keep the owner as a sticky hint, keep any wake that
-- arrived while running (LEAST ignores NULL), add the earliest timer.
UPDATE durable_runs
   SET status = 'suspended', lease_token = NULL, lease_expires_at = NULL,
       next_wakeup_at = LEAST(next_wakeup_at, to_timestamp(%s::float8))
 WHERE id = %s AND lease_token = %s AND status = 'running'
RETURNING coalesce(next_wakeup_at <= durable_now(), false) AS due_now,
          extract(epoch FROM durable_now())::float8 AS db_now

-- name: release
-- Give a run back without waiting for its lease to expire (graceful shutdown, eviction,
-- database errors) and wake claimers so another process resumes it at once.
UPDATE durable_runs
   SET status = CASE WHEN EXISTS (SELECT 1 FROM durable_events WHERE run_id = %(id)s)
                     THEN 'suspended' ELSE 'pending' END,
       lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
       next_wakeup_at = durable_now()
 WHERE id = %(id)s AND lease_token = %(token)s AND status = 'running'
RETURNING pg_notify(durable_channel(), 'new|' || queue)

-- name: finish_run
SELECT durable_finish_run(%s, %s, %s, %s::jsonb, %s::jsonb, %s)

-- name: finish_run_outcome
-- The same, saying how it ended: 'finished', 'retried' (a new attempt of a child with a
-- retry policy replaces it) or 'lost' (lease lost, nothing written).
SELECT durable_finish(%s, %s, %s, %s::jsonb, %s::jsonb, %s)

-- name: finish_with_event
-- The last step's journal event and the terminal state in one transaction (parent locked
-- before the run, like every terminal transaction).
SELECT durable_finish_with_event(%(id)s, %(token)s, %(seq)s, %(pos)s, %(op)s, %(kind)s, %(name)s, %(data)s::jsonb,
                                 %(status)s, %(result)s::jsonb, %(error)s::jsonb, %(depth)s)

-- name: heartbeat
-- Batched heartbeat: one statement renews every lease this process holds. It never
-- waits for a row lock (a cascade, a big start_children, a signal sender holding a run):
-- a run whose row is locked right now comes back renewed = false while its lease is still
-- valid by the statement's snapshot, and is retried shortly; a run not returned at all is
-- lost (cancelled, or claimed by another process after expiry).
WITH h AS (
    SELECT * FROM unnest(%(ids)s::uuid[], %(tokens)s::bigint[]) AS h(id, token)
), locked AS (
    SELECT r.id FROM durable_runs r JOIN h ON r.id = h.id AND r.lease_token = h.token
     WHERE r.status = 'running'
     ORDER BY r.id
       FOR NO KEY UPDATE OF r SKIP LOCKED
), renewed AS (
    UPDATE durable_runs r SET lease_expires_at = now() + make_interval(secs => %(ttl)s::float8)
      FROM locked WHERE r.id = locked.id
    RETURNING r.id
)
SELECT id, true AS renewed FROM renewed
UNION ALL
SELECT r.id, false FROM durable_runs r JOIN h ON r.id = h.id AND r.lease_token = h.token
 WHERE r.status = 'running' AND r.id NOT IN (SELECT id FROM renewed)


-- name: finished_children
-- The children of a parent whose outcome it has not read (flagged by their terminal
-- update, migration 6), first finished first; in the same statement the flags of the
-- outcomes it has journaled since are cleared (those rows are terminal: nothing else waits
-- on them, and SKIP LOCKED keeps even that from waiting; a skipped one is cleared later).
-- Both also return each run's finished_at and the database clock now (epoch seconds,
-- durable_now()'s time-control offset applied to clock_timestamp()), so the executor can
-- report wake latency (child terminal commit -> parent sees it) per outcome.
WITH cleared AS (
    UPDATE durable_runs SET outcome_unread = false
     WHERE id IN (SELECT id FROM durable_runs WHERE id = ANY(%(read)s::uuid[]) AND outcome_unread
                   ORDER BY id FOR UPDATE SKIP LOCKED)
    RETURNING id
)
SELECT (SELECT count(*) FROM cleared) AS cleared,
       (SELECT json_agg(json_build_object('chain_root_id', chain_root_id, 'id', id, 'status', status,
                                          'result', result, 'error', error, 'workflow', workflow,
                                          'finished_at', extract(epoch FROM finished_at)::float8)
                         ORDER BY finish_xid)  -- first finished first (as_completed)
          FROM durable_runs
         WHERE parent_id = %(parent)s AND outcome_unread AND id <> ALL(%(read)s::uuid[])
           AND status IN ('completed', 'failed', 'cancelled')) AS rows,
       extract(epoch FROM clock_timestamp() + (durable_now() - now()))::float8 AS db_now

-- name: run_outcomes
-- Any runs (cross-run waits and outside callers): terminal state, following
-- continue-as-new chains to their newest link.
SELECT t.id, r.id, coalesce(r.status, 'missing'), r.result, r.error, r.workflow,
       extract(epoch FROM r.finished_at)::float8 AS finished_at, extract(epoch FROM clock_timestamp() + (durable_now() - now()))::float8 AS db_now
  FROM unnest(%s::uuid[]) AS t(id)
  LEFT JOIN durable_runs r ON r.chain_root_id = t.id AND r.status IN ('completed', 'failed', 'cancelled')
 WHERE r.id IS NOT NULL
    OR NOT EXISTS (SELECT 1 FROM durable_runs x WHERE x.chain_root_id = t.id)  -- deleted (retention)

-- name: cancelled_run_labels
-- The run a hard cancel ended (the live link of the chain holding %s), for run.cancelled.
SELECT id, workflow, queue FROM durable_runs
 WHERE chain_root_id = (SELECT chain_root_id FROM durable_runs WHERE id = %s) AND status = 'cancelled'
 ORDER BY created_at DESC LIMIT 1

-- name: register_wait
-- Cross-run waits are registered on the target's chain root (any link may be named).
INSERT INTO durable_waiters (target_id, waiter_id) VALUES (%s, %s) ON CONFLICT DO NOTHING

-- name: run_exists
SELECT workflow, chain_root_id FROM durable_runs WHERE id = %s

-- name: taken_child_ids
-- Child ids (of one start_children call) held by a run that is not a child of this
-- parent: starting it failed live with a conflict (durable_start_children). A clash with
-- the parent's own children is caught before the database as "used twice".
SELECT id, workflow, parent_id FROM durable_runs
 WHERE id = ANY(%s) AND parent_id IS DISTINCT FROM %s
 ORDER BY id LIMIT 1

-- name: peek_signal
SELECT id FROM durable_signals
 WHERE run_id = %s AND name = %s AND consumed_seq IS NULL ORDER BY id LIMIT 1

-- name: consume_signal
-- Consume the oldest unconsumed signal of a name and journal it, fenced.
WITH lease AS (
    SELECT id, root_id FROM durable_runs
     WHERE id = %(id)s AND lease_token = %(token)s AND status = 'running' FOR SHARE
), sig AS (
    UPDATE durable_signals s SET consumed_seq = %(seq)s
     WHERE s.id = (SELECT id FROM durable_signals
                    WHERE run_id = %(id)s AND name = %(name)s AND consumed_seq IS NULL
                      AND EXISTS (SELECT 1 FROM lease)
                    ORDER BY id LIMIT 1 FOR UPDATE)
    RETURNING s.id, s.payload
), ev AS (
    INSERT INTO durable_events (run_id, seq, root_id, pos, op, kind, name, data)
    SELECT lease.id, %(seq)s, lease.root_id, %(pos)s, %(op)s, 'signal_received', %(name)s,
           jsonb_build_object('payload', sig.payload, 'signal_id', sig.id)
      FROM lease, sig
    RETURNING 1
)
SELECT (SELECT count(*) FROM lease) AS leased, sig.payload, sig.id FROM sig

-- name: send_signal
SELECT durable_send_signal(%s, %s, %s::jsonb, %s)

-- name: watch_run
-- Ask the terminal transaction to notify; returns the chain's current state.
WITH w AS (
    UPDATE durable_runs SET notify_done = true
     WHERE chain_root_id = (SELECT chain_root_id FROM durable_runs WHERE id = %s)
       AND status NOT IN ('completed', 'failed', 'cancelled', 'continued')
    RETURNING id
)
SELECT (SELECT count(*) FROM w)

-- name: run_chain_state
SELECT id, status, result, error, workflow FROM durable_runs
 WHERE chain_root_id = (SELECT chain_root_id FROM durable_runs WHERE id = %s)
 ORDER BY (status = 'continued'), created_at DESC
 LIMIT 1

-- name: run_info
SELECT id, root_id, parent_id, chain_root_id, continued_to, workflow, version, queue, status,
       input, result, error, attempt, depth, lease_owner, lease_token, lease_expires_at,
       next_wakeup_at, cancel_requested, created_at, started_at, finished_at
  FROM durable_runs WHERE id = %s

-- name: retention_batch
-- One bounded gc batch (durable/retention.py). Scans at most %(batch)s runs that finished
-- before the cutoff (engine clock), after the keyset cursor (finished_at, id), and deletes
-- with their journal and signals those that are safe to forget:
-- - leaves first: a run with any child row left goes in a later batch or pass, so a
--   subtree goes only when all of it is finished and old;
-- - a continue-as-new chain goes only when every link is finished and old;
-- - never a run that a live run waits on (M:N), nor one with a non-terminal ancestor.
-- Returns the cursor to continue from (NULL when the window was empty), how many runs
-- the window held, how many were kept because they still had children, and what was
-- deleted.
WITH p AS (
    SELECT durable_now() - make_interval(secs => %(age)s::float8) AS cutoff
), win AS (
    SELECT r.id, r.finished_at FROM durable_runs r, p
     WHERE r.finished_at < p.cutoff
       AND (r.finished_at, r.id) > (%(after_ts)s::timestamptz, %(after_id)s::uuid)
     ORDER BY r.finished_at, r.id
     LIMIT %(batch)s
), cand AS (
    SELECT r.id FROM durable_runs r JOIN win ON win.id = r.id, p
     WHERE r.status IN ('completed', 'failed', 'cancelled', 'continued')
       AND NOT EXISTS (SELECT 1 FROM durable_runs c WHERE c.parent_id = r.id)
       AND NOT EXISTS (SELECT 1 FROM durable_runs l
                        WHERE l.chain_root_id = r.chain_root_id
                          AND (l.finished_at IS NULL OR l.finished_at >= p.cutoff))
       AND NOT EXISTS (SELECT 1 FROM durable_waiters w JOIN durable_runs x ON x.id = w.waiter_id
                        WHERE w.target_id = r.chain_root_id AND x.status IN ('pending', 'running', 'suspended'))
       AND NOT EXISTS (
            WITH RECURSIVE up(id, parent_id, status, n) AS (
                SELECT a.id, a.parent_id, a.status, 1 FROM durable_runs a WHERE a.id = r.parent_id
                UNION ALL
                SELECT a.id, a.parent_id, a.status, up.n + 1
                  FROM durable_runs a JOIN up ON a.id = up.parent_id
                 WHERE up.n < 10000)
            SELECT 1 FROM up WHERE up.status IN ('pending', 'running', 'suspended'))
       FOR UPDATE OF r SKIP LOCKED
), ev AS (
    DELETE FROM durable_events e USING cand WHERE e.run_id = cand.id RETURNING 1
), sig AS (
    DELETE FROM durable_signals s USING cand WHERE s.run_id = cand.id RETURNING 1
), wt AS (
    DELETE FROM durable_waiters w USING cand WHERE w.target_id = cand.id RETURNING 1
), runs AS (
    DELETE FROM durable_runs r USING cand WHERE r.id = cand.id RETURNING 1
), last AS (
    SELECT finished_at, id FROM win ORDER BY finished_at DESC, id DESC LIMIT 1
)
SELECT (SELECT finished_at FROM last) AS after_ts, (SELECT id FROM last) AS after_id,
       (SELECT count(*) FROM win) AS scanned,
       (SELECT count(*) FROM win WHERE EXISTS (SELECT 1 FROM durable_runs c WHERE c.parent_id = win.id))
           AS with_children,
       (SELECT count(*) FROM runs) AS runs, (SELECT count(*) FROM ev) AS events,
       (SELECT count(*) FROM sig) AS signals

-- name: clear_sticky_hints
-- An engine closing: its suspended runs' sticky owner hint is dropped, so any process
-- claims them at once when they are woken.
UPDATE durable_runs SET lease_owner = NULL WHERE lease_owner = %s AND status = 'suspended'

-- name: cancel
-- Cancel a run and its in-flight descendants (or ask it to cancel itself): durable_cancel.
SELECT cancelled, truncated, status_before, live_id FROM durable_cancel(%s, %s, %s, %s)

-- name: cancel_child
-- ctx.cancel_child: the cancel and the parent's child_cancel event, fenced by its lease.
SELECT ok, cancelled, truncated, status_before FROM durable_cancel_child(%s, %s, %s, %s, %s, %s, %s, %s)

-- name: continue_as_new
-- End the run as 'continued' and create its successor (durable_continue).
SELECT durable_continue(%s, %s, %s, %s, %s, %s::jsonb)

-- name: expire_overdue
-- Expire overdue runs, and say how long until the earliest remaining deadline (a probe of
-- the partial deadline index; read with the statement's snapshot, so right after runs
-- expired it may still name theirs: the loop then simply looks again at once).
SELECT durable_expire_runs(%s, %s),
       (SELECT extract(epoch FROM min(deadline_at) - durable_now())::float8 FROM durable_runs
         WHERE deadline_at IS NOT NULL AND finished_at IS NULL)

-- name: finished_among
-- Which of these (parked here) runs have ended meanwhile (cancelled, expired).
SELECT id FROM durable_runs WHERE id = ANY(%s) AND status IN ('completed', 'failed', 'cancelled', 'continued')

-- name: queue_depths
-- Per queue: runs ready now, the age of the oldest ready one, runs waiting. One
-- index-only pass over the partial index durable_runs_due_idx (queue, next_wakeup_at)
-- WHERE status IN ('pending', 'suspended'): no heap column is read.
SELECT r.queue,
       count(*) FILTER (WHERE r.next_wakeup_at <= t.now_)                        AS ready,
       extract(epoch FROM t.now_ - min(r.next_wakeup_at)
                              FILTER (WHERE r.next_wakeup_at <= t.now_))::float8  AS oldest,
       count(*) FILTER (WHERE r.next_wakeup_at IS NULL OR r.next_wakeup_at > t.now_) AS waiting
  FROM durable_runs r, (SELECT durable_now() AS now_) t
 WHERE r.status IN ('pending', 'suspended')
 GROUP BY r.queue, t.now_

-- name: show_run
-- One run as `durable show` prints it: its row, history size, pending signals, children by status.
SELECT id, root_id, parent_id, chain_root_id, continued_to, workflow, version, queue, status, input,
       result, error, attempt, depth, parent_close_policy, idempotency_key, lease_owner, lease_token,
       lease_expires_at, next_wakeup_at, deadline_at, cancel_requested, created_at, started_at, finished_at,
       now() AS db_now,
       (SELECT count(*) FROM durable_events e WHERE e.run_id = r.id) AS event_count,
       (SELECT count(*) FROM durable_signals s WHERE s.run_id = r.id AND s.consumed_seq IS NULL) AS pending_signals,
       (SELECT coalesce(jsonb_object_agg(status, n), '{}') FROM
          (SELECT status, count(*) AS n FROM durable_runs c WHERE c.parent_id = r.id GROUP BY status) g) AS children
  FROM durable_runs r WHERE id = %s

-- name: show_events
-- The first events of a run's history, with their time.
SELECT seq, pos, op, kind, name, data, created_at FROM durable_events WHERE run_id = %s ORDER BY seq LIMIT %s

-- name: run_tree
-- A run, its continue-as-new successors and its descendants (with theirs), at most %(limit)s.
WITH RECURSIVE t AS (
    SELECT r.id, r.parent_id, r.continued_to, 0 AS lvl FROM durable_runs r WHERE r.id = %(id)s
    UNION ALL
    SELECT n.id, n.parent_id, n.continued_to, n.lvl FROM t CROSS JOIN LATERAL (
        SELECT c.id, c.parent_id, c.continued_to, t.lvl + 1 AS lvl FROM durable_runs c WHERE c.parent_id = t.id
        UNION ALL
        SELECT s.id, s.parent_id, s.continued_to, t.lvl FROM durable_runs s
         WHERE s.id = t.continued_to AND t.lvl = 0) n
), picked AS (SELECT * FROM t LIMIT %(limit)s)
SELECT r.id, r.parent_id, r.continued_to, p.lvl, r.workflow, r.status, r.queue, r.created_at, r.started_at,
       r.finished_at, r.error, now() AS db_now
  FROM picked p JOIN durable_runs r ON r.id = p.id
 ORDER BY r.created_at, r.id

-- name: _run_list_columns
-- The columns of `durable runs` (the filters and the order are composed in store/inspect.py).
SELECT id, workflow, version, queue, status, parent_id, root_id, created_at, started_at,
       finished_at, error ->> 'type' AS error_type, now() AS db_now
  FROM durable_runs

