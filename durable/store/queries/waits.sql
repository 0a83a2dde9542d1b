-- Waiting: a parent's unread child outcomes (fan-in), outcomes of runs waited on across trees, wait registrations.
-- Used by durable/store/waits.py. (How these files are read: durable/store/statements.py.)

-- name: finished_children
-- A parent's child outcomes added after the last one it journaled (in the order added).
SELECT chain_root_id, id, status, result, error, workflow, finished_at, seq, db_now
  FROM durable_read_outcomes(%(key)s, %(parent)s, %(after)s)

-- name: run_outcomes
-- Any runs (cross-run waits): terminal state, following continue-as-new chains to their
-- newest link; 'missing' for a chain deleted by retention.
SELECT target, id, status, result, error, workflow, finished_at, db_now FROM durable_run_outcomes(%s::uuid[])

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
