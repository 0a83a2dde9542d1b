-- Re-driving runs: resume in place, restart and fork as new runs, candidates for the bulk forms.
-- Used by durable/store/redrive.py. (How these files are read: durable/store/statements.py.)

-- name: resume_run
-- Resume a failed/cancelled top-level run under its id (sql/0008_redrive.sql: durable_resume).
SELECT run_id, tree_key, workflow, queue, previous_status, superseded_from, superseded, rerun, marker_seq
  FROM durable_resume(%(id)s, %(max_depth)s)

-- name: fork_run
-- A new top-level run from a run's workflow and input and the first `at` events of its history.
SELECT run_id, tree_key, workflow, queue, copied, history_length
  FROM durable_fork(%(id)s, %(at)s, %(new)s, %(kind)s)

-- name: redrive_candidates
-- Top-level runs by status, workflow pattern (LIKE) and creation time, newest first: an
-- ordered scan of durable_runs_roots_created_idx (created_at, id) WHERE parent_id IS NULL,
-- stopping after `limit` matches (status, a mutable column, is a filter, not an index key).
SELECT id, workflow, status, created_at, error FROM durable_runs
 WHERE parent_id IS NULL AND created_at >= %(since)s
   AND status = ANY(%(statuses)s::text[]) AND workflow LIKE %(pattern)s
 ORDER BY created_at DESC, id DESC
 LIMIT %(limit)s
