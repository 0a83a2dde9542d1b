-- Every SQL statement the engine runs, by name. Loaded by durable/store/statements.py;
-- each block starts with a `-- name: NAME` line and runs until the next one. A line
-- `-- include: NAME` is replaced by that block (blocks whose name starts with _ are
-- fragments, never run alone). Parameters are psycopg's: named or positional. Whole-line
-- comments document this file and are not sent.
--
-- Statements run on connections whose search_path is durable's schema. Transactions that
-- take several locks live in the migrations (sql/) as PL/pgSQL functions (durable_finish,
-- durable_cascade, ...), one round trip each, and follow THE LOCK ORDER written down in
-- sql/0007_trees.sql (ancestors before descendants, within a level by id; the strongest
-- lock first; a run's row before its queue/deadline/outcome rows; woken runs last;
-- background statements never wait: SKIP LOCKED or a lock-free read first).
--
-- Every table is keyed by tree (tree_key, the first 8 bytes of the tree's root id): the
-- engine's hot paths pass the key of the run they work on, so each statement touches one
-- tree (one shard on Citus); given only a run id, the store first asks key_of (a run made
-- before schema version 7 may not carry its tree's prefix). No statement on a table calls
-- one of the schema's functions (on Citus it would run on a worker): the time, when a
-- statement needs it, comes from a function that reads it first.

-- name: start_run
-- A top-level run (its own tree). leased: inserted already leased to the process that
-- executes it, so no other process claims it in between. Nothing comes back when the id
-- is taken (find_run_for_start says by what).
SELECT id, status, lease_epoch, due_in_s
  FROM durable_start_run(%(id)s, %(workflow)s, %(version)s, %(queue)s, %(leased)s, %(input)s::jsonb, %(key)s,
                         %(timeout)s::float8, %(owner)s, %(start_at)s::timestamptz)

-- name: find_run_for_start
SELECT id, workflow, input FROM durable_runs
 WHERE tree_key = %(tree)s
   AND (id = %(id)s OR (%(key)s::text IS NOT NULL AND workflow = %(workflow)s AND idempotency_key = %(key)s))
 LIMIT 1

-- name: start_children
-- Children and their child_started events, one transaction under the parent's lease.
SELECT durable_start_children(%s, %s, %s, %s::jsonb)

-- name: claimable
-- Runs this process may claim now (a lock-free read): due waiting runs per queue, then runs
-- whose holder's lease expired.
SELECT tree_key, run_id FROM durable_claimable(%(queues)s::text[], %(workflows)s::text[], %(owner)s,
                                                %(grace)s::float8, %(limit)s)

-- name: claim
-- Claim the given runs (each routed to its tree, a row another transaction holds is skipped).
SELECT tree_key, id, root_id, parent_id, chain_root_id, workflow, version, queue, input, attempt, depth,
       lease_epoch, cancel_requested, grafted, prev_status, wake_latency_s, last_seq, deadline_in_s
  FROM durable_claim(%(keys)s::bigint[], %(ids)s::uuid[], %(owner)s, %(workflows)s::text[], %(grace)s::float8)

-- name: run_due_in
-- Why a claim found nothing: the run's status and how long until it is due (negative: due
-- already, so another transaction held its row for a moment).
SELECT status, due_in_s FROM durable_due_in(%s, %s)

-- name: load_history
SELECT seq, pos, op, kind, name, data FROM durable_events WHERE tree_key = %s AND run_id = %s ORDER BY seq

-- name: append_events
-- Append journal events, fenced: written only while this lease epoch holds the run (pos: the
-- main branch's position; op: the operation's key in a concurrent branch).
SELECT durable_append(%s, %s, %s, %s::int[], %s::int[], %s::text[], %s::text[], %s::text[], %s::jsonb[])

-- name: events_since
-- The keys and kinds of a run's events from a seq on (a retried write whose first answer
-- was lost: which of its events are there already).
SELECT seq, pos, op, kind FROM durable_events WHERE tree_key = %s AND run_id = %s AND seq >= %s ORDER BY seq

-- name: append_timer_event
-- A timer or retry wait: the event carries the fire time computed from the database clock.
SELECT durable_append_timer(%(key)s, %(id)s, %(epoch)s, %(seq)s, %(pos)s, %(op)s, %(kind)s, %(name)s,
                            %(data)s::jsonb, %(delay)s::float8)

-- name: db_now
-- The database clock (epoch seconds), a time-control offset included.
SELECT extract(epoch FROM durable_now())::float8

-- name: suspend
-- Release the lease of a run that waits (its owner kept as a sticky hint).
SELECT due_now, db_now FROM durable_suspend(%s, %s, %s, to_timestamp(%s::float8))

-- name: release
-- Give a run back now: due at once for any process.
SELECT durable_release(%s, %s, %s)

-- name: finish_run_outcome
-- The terminal transaction: 'finished', 'retried' (a new attempt of a child with a retry
-- policy replaces it) or 'lost' (lease lost, nothing written).
SELECT durable_finish(%s, %s, %s, %s, %s::jsonb, %s::jsonb, %s)

-- name: finish_with_event
-- The last step's journal event and the terminal state in one transaction.
SELECT durable_finish_with_event(%(key)s, %(id)s, %(epoch)s, %(seq)s, %(pos)s, %(op)s, %(kind)s, %(name)s,
                                 %(data)s::jsonb, %(status)s, %(result)s::jsonb, %(error)s::jsonb, %(depth)s)

-- name: worker_beat
-- This process is alive: its lease on every run it holds lasts another ttl (one row per
-- process, whatever it holds).
SELECT durable_worker_beat(%(owner)s, %(host)s, %(pid)s, %(queues)s::text[], %(workflows)s::text[],
                           %(concurrency)s, %(ttl)s::float8)

-- name: worker_gone
SELECT durable_worker_gone(%s)

-- name: held_leases
-- The runs this process holds the lease of, by the claim queue (a lease not here is lost:
-- the run was cancelled, or claimed by another process after this one's lease expired).
SELECT tree_key, run_id FROM durable_due WHERE leased AND owner = %s

-- name: release_orphan
-- Give back a run this process holds but does not execute.
SELECT durable_release_orphan(%s, %s, %s)

-- name: finished_children
-- A parent's unread child outcomes, first finished first; the rows of outcomes it has
-- journaled since its last look are deleted in the same call.
SELECT chain_root_id, id, status, result, error, workflow, finished_at, db_now
  FROM durable_read_outcomes(%(key)s, %(parent)s, %(read)s::uuid[])

-- name: run_outcomes
-- Any runs (cross-run waits): terminal state, following continue-as-new chains to their
-- newest link; 'missing' for a chain deleted by retention.
SELECT target, id, status, result, error, workflow, finished_at, db_now FROM durable_run_outcomes(%s::uuid[])

-- name: run_labels
-- A run's workflow and queue (for the run.cancelled event).
SELECT id, workflow, queue FROM durable_runs WHERE tree_key = %s AND id = %s

-- name: register_wait
-- Cross-run waits are registered on the target's chain root, in the target's tree.
INSERT INTO durable_waiters (tree_key, target_id, waiter_id, waiter_key)
VALUES (%(target_key)s, %(target)s, %(waiter)s, %(waiter_key)s) ON CONFLICT DO NOTHING

-- name: run_exists
SELECT workflow, chain_root_id FROM durable_runs WHERE tree_key = %(key)s AND id = %(id)s

-- name: taken_child_ids
-- Child ids (of one start_children call) held by a run that is not a child of this parent:
-- starting it failed live with a conflict (durable_start_children).
SELECT id, workflow, parent_id FROM durable_runs
 WHERE tree_key = %(key)s AND id = ANY(%(ids)s) AND parent_id IS DISTINCT FROM %(parent)s
 ORDER BY id LIMIT 1

-- name: peek_signal
SELECT id FROM durable_signals
 WHERE tree_key = %s AND run_id = %s AND name = %s AND consumed_seq IS NULL ORDER BY id LIMIT 1

-- name: consume_signal
-- Consume the oldest unconsumed signal of a name and journal it, fenced.
SELECT leased, payload, signal_id FROM durable_consume_signal(%(key)s, %(id)s, %(epoch)s, %(seq)s, %(pos)s,
                                                               %(op)s, %(name)s)

-- name: send_signal
SELECT durable_send_signal(%s, %s, %s::jsonb, %s)

-- name: watch_run
-- Ask the terminal transaction of the chain to notify 'done|<run>'.
SELECT durable_watch(%s)

-- name: run_chain_state
SELECT id, status, result, error, workflow FROM durable_chain_state(%s)

-- name: run_info
SELECT r.id, r.root_id, r.parent_id, r.chain_root_id, r.continued_to, r.workflow, r.version, r.queue, r.status,
       r.input, r.result, r.error, r.attempt, r.depth, r.lease_owner, r.lease_epoch,
       CASE WHEN r.status = 'running' THEN
            (SELECT w.expires_at FROM durable_workers w WHERE w.owner = r.lease_owner) END AS lease_expires_at,
       r.next_wakeup_at, r.cancel_requested, r.created_at, r.started_at, r.finished_at
  FROM durable_runs r WHERE r.tree_key = %(key)s AND r.id = %(id)s

-- name: cancel
-- Cancel a run and its in-flight descendants (or ask it to cancel itself): durable_cancel.
SELECT cancelled, truncated, status_before, live_id FROM durable_cancel(%s, %s, %s, %s)

-- name: cancel_child
-- ctx.cancel_child: the cancel and the parent's child_cancel event, fenced by its lease.
SELECT ok, cancelled, truncated, status_before FROM durable_cancel_child(%s, %s, %s, %s, %s, %s, %s, %s, %s)

-- name: continue_as_new
-- End the run as 'continued' and create its successor (durable_continue).
SELECT durable_continue(%s, %s, %s, %s, %s, %s, %s::jsonb)

-- name: expire_overdue
-- Expire overdue runs, and say how long until the earliest remaining deadline (read with
-- the statement's snapshot, so right after runs expired it may still name theirs: the loop
-- then simply looks again at once).
SELECT durable_expire_runs(%s, %s), durable_next_deadline_in()

-- name: finished_among
-- Which of these (parked here) runs have ended meanwhile (cancelled, expired).
SELECT r.id FROM unnest(%s::bigint[], %s::uuid[]) AS t(tree_key, id)
  JOIN durable_runs r ON r.tree_key = t.tree_key AND r.id = t.id
 WHERE r.status IN ('completed', 'failed', 'cancelled', 'continued')

-- name: queue_depths
-- Per queue: runs ready now, the age of the oldest ready one, runs in flight that wait (for
-- a time or an event). One pass over the claim queue (every run in flight has one row).
SELECT queue, ready, oldest, waiting FROM durable_queue_depths()

-- name: show_run
-- One run as `durable show` prints it: its row, history size, pending signals, children by status.
SELECT r.id, r.root_id, r.parent_id, r.chain_root_id, r.continued_to, r.workflow, r.version, r.queue, r.status,
       r.input, r.result, r.error, r.attempt, r.depth, r.parent_close_policy, r.idempotency_key, r.lease_owner,
       r.lease_epoch,
       CASE WHEN r.status = 'running' THEN
            (SELECT w.expires_at FROM durable_workers w WHERE w.owner = r.lease_owner) END AS lease_expires_at,
       r.next_wakeup_at, r.deadline_at, r.cancel_requested, r.created_at, r.started_at, r.finished_at,
       now() AS db_now,
       (SELECT count(*) FROM durable_events e WHERE e.tree_key = r.tree_key AND e.run_id = r.id) AS event_count,
       (SELECT count(*) FROM durable_signals s
         WHERE s.tree_key = r.tree_key AND s.run_id = r.id AND s.consumed_seq IS NULL) AS pending_signals,
       (SELECT coalesce(jsonb_object_agg(g.status, g.n), '{}') FROM
          (SELECT c.status, count(*) AS n FROM durable_runs c
            WHERE c.tree_key = r.tree_key AND c.parent_id = r.id GROUP BY c.status) g) AS children
  FROM durable_runs r WHERE r.tree_key = %(key)s AND r.id = %(id)s

-- name: show_events
-- The first events of a run's history, with their time.
SELECT seq, pos, op, kind, name, data, created_at FROM durable_events
 WHERE tree_key = %(key)s AND run_id = %(id)s ORDER BY seq LIMIT %(limit)s

-- name: run_tree
-- A run, its continue-as-new successors and its descendants (with theirs), at most %(limit)s,
-- all in its tree.
WITH RECURSIVE t AS (
    SELECT r.id, r.parent_id, r.continued_to, 0 AS lvl FROM durable_runs r
     WHERE r.tree_key = %(key)s AND r.id = %(id)s
    UNION ALL
    SELECT n.id, n.parent_id, n.continued_to, n.lvl FROM t CROSS JOIN LATERAL (
        SELECT c.id, c.parent_id, c.continued_to, t.lvl + 1 AS lvl FROM durable_runs c
         WHERE c.tree_key = %(key)s AND c.parent_id = t.id
        UNION ALL
        SELECT s.id, s.parent_id, s.continued_to, t.lvl FROM durable_runs s
         WHERE s.tree_key = %(key)s AND s.id = t.continued_to AND t.lvl = 0) n
), picked AS (SELECT * FROM t LIMIT %(limit)s)
SELECT r.id, r.parent_id, r.continued_to, p.lvl, r.workflow, r.status, r.queue, r.created_at, r.started_at,
       r.finished_at, r.error, now() AS db_now
  FROM picked p JOIN durable_runs r ON r.tree_key = %(key)s AND r.id = p.id
 ORDER BY r.created_at, r.id

-- name: key_of
-- The tree of a run id.
SELECT durable_key_of(%s)

-- name: _run_list_columns
-- The columns of `durable runs` (the filters and the order are composed in store/inspect.py).
SELECT id, workflow, version, queue, status, parent_id, root_id, created_at, started_at,
       finished_at, error ->> 'type' AS error_type, now() AS db_now
  FROM durable_runs

-- name: retention_batch
-- One bounded gc batch (durable/store/retention.py): whole trees that finished before the
-- cutoff (the engine's clock), from a keyset cursor over when their roots finished.
SELECT after_ts, after_id, scanned, kept, runs, events, signals
  FROM durable_gc_trees(durable_now() - make_interval(secs => %(age)s::float8), %(after_ts)s::timestamptz,
                        %(after_id)s::uuid, %(batch)s)
