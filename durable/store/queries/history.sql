-- A run's history as a document: what `durable export` writes and durable.testing.Replayer
-- replays. Used by durable/store/history.py. (How these files are read: durable/store/statements.py.)

-- name: history_run
-- The run a history belongs to (its events: load_history in runs.sql).
SELECT r.id, r.root_id, r.parent_id, r.workflow, r.version, r.status, r.input, r.attempt, r.grafted
  FROM durable_runs r WHERE r.tree_key = %(key)s AND r.id = %(id)s
