-- Inspection (CLI, metrics): queue depths, a run, its events, its tree, run lists.
-- Used by durable/store/inspect.py. (How these files are read: durable/store/statements.py.)

-- name: queue_depths
-- Per queue: runs ready now, the age of the oldest ready one, runs in flight that wait (for
-- a time or an event). One pass over the claim queue (every run in flight has one row).
SELECT queue, ready, oldest, waiting FROM durable_queue_depths()

-- name: show_run
-- One run as `durable show` prints it: its row, history size, pending signals, children by status.
SELECT r.id, r.root_id, r.parent_id, r.chain_root_id, r.continued_to, r.workflow, r.version, r.queue, r.status,
       r.input, r.result, r.error, r.attempt, r.depth, r.parent_close_policy, r.idempotency_key, r.lease_owner,
       r.lease_epoch,
       r.next_wakeup_at, r.deadline_at, r.cancel_requested, r.created_at, r.started_at, r.finished_at,
       r.child_key, r.attributes, r.origin_id, r.origin_kind, r.origin_at, now() AS db_now,
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
       r.finished_at, r.error, r.child_key, now() AS db_now
  FROM picked p JOIN durable_runs r ON r.tree_key = %(key)s AND r.id = p.id
 ORDER BY r.created_at, r.id

-- name: runs_by_prefix
-- The runs whose id starts with a hex prefix (the CLI takes unique prefixes for run ids), at
-- most %(limit)s, by id. Two index range scans, no scan of every id's text: an id made in a
-- tree since version 7 starts with its tree's key, so the prefix bounds tree_key and id (the
-- primary key (tree_key, id)); the ids of older trees are in durable_run_keys (by id).
-- %(klo)s..%(khi)s and %(lo)s..%(hi)s are the prefix padded with 0s and fs (store/inspect.py).
SELECT m.id FROM (
    SELECT r.id FROM durable_runs r
     WHERE r.tree_key BETWEEN %(klo)s AND %(khi)s AND r.id BETWEEN %(lo)s AND %(hi)s
    UNION
    SELECT k.id FROM durable_run_keys k WHERE k.id BETWEEN %(lo)s AND %(hi)s
) m ORDER BY m.id LIMIT %(limit)s

-- name: queue_depths_async
-- (the web console's workers page; the same as queue_depths)
SELECT queue, ready, oldest, waiting FROM durable_queue_depths()

-- name: tree_shape
-- (the web console's run page) the shape of a tree: every run's id, parent, successor,
-- workflow, status and child key, at most %(limit)s, oldest first. One index range on the
-- tree key (where run_tree walks the tree one lookup per run); ids as text: a 10,000-child
-- fan-out is read and grouped without decoding 30,000 UUIDs. The runs shown one by one get
-- their times and errors from tree_runs_brief.
SELECT r.id::text, r.parent_id::text, r.continued_to::text, r.workflow, r.status, r.child_key
  FROM durable_runs r WHERE r.tree_key = %(key)s
 ORDER BY r.created_at, r.id LIMIT %(limit)s

-- name: tree_runs_brief
-- (the web console's run page) times and the root cause of the runs of a tree it shows one
-- by one (an error document carries a traceback of up to 8 kB: only its root's type and
-- message are read).
SELECT r.id::text, r.queue, r.created_at, r.started_at, r.finished_at,
       CASE WHEN r.error IS NULL THEN NULL
            ELSE jsonb_build_object('type', coalesce(r.error #>> '{root,type}', r.error ->> 'type'),
                                    'message', left(coalesce(r.error #>> '{root,message}', r.error ->> 'message',
                                                             r.error ->> 'reason'), 200)) END AS error
  FROM durable_runs r WHERE r.tree_key = %(key)s AND r.id = ANY(%(ids)s::uuid[])

-- name: pending_signals
-- (the web console's run page) signals sent to a run and not received yet, oldest first,
-- payloads cut to 500 characters of JSON text.
SELECT id, name, left(payload::text, 500) AS payload, delivery_id, created_at FROM durable_signals
 WHERE tree_key = %(key)s AND run_id = %(id)s AND consumed_seq IS NULL ORDER BY id LIMIT %(limit)s

-- name: runs_existing
-- (the web console's search by idempotency key) which of these ids are runs: one statement
-- for the candidate ids of every registered workflow, by the primary key (tree keys pruned
-- to the candidates' trees; an id names its own tree).
SELECT r.id FROM durable_runs r WHERE r.tree_key = ANY(%(keys)s::bigint[]) AND r.id = ANY(%(ids)s::uuid[])
