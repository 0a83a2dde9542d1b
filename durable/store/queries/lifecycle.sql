-- Lifecycle: signals sent, cancels, continue-as-new, the execution-timeout sweep.
-- Used by durable/store/lifecycle.py. (How these files are read: durable/store/statements.py.)

-- name: run_labels
-- A run's workflow and queue (for the run.cancelled event).
SELECT id, workflow, queue FROM durable_runs WHERE tree_key = %s AND id = %s

-- name: send_signal
SELECT durable_send_signal(%s, %s, %s::jsonb, %s)

-- name: cancel
-- Cancel a run and its in-flight descendants (or ask it to cancel itself): durable_cancel.
SELECT cancelled, truncated, status_before, live_id FROM durable_cancel(%s, %s, %s, %s)

-- name: cancel_child
-- ctx.cancel_child: the cancel and the parent's child_cancel event, fenced by its lease.
SELECT ok, cancelled, truncated, status_before FROM durable_cancel_child(%s, %s, %s, %s, %s, %s, %s, %s, %s)

-- name: continue_as_new
-- End the run as 'continued' and create its successor (durable_continue).
SELECT durable_continue(%s, %s, %s, %s, %s, %s, %s::jsonb)

-- name: expire_now
-- The sweep's clock (its transaction's durable_now(): the finished_at of the runs it expires).
SELECT durable_now()

-- name: expire_candidates
-- The earliest deadlines (the runs the sweep below may expire are among them), to name the
-- runs it expired in their log lines.
SELECT tree_key, run_id FROM durable_deadlines ORDER BY deadline_at LIMIT %s

-- name: expired_among
-- Of those candidates, the runs this transaction failed with WorkflowTimeoutError.
SELECT id, workflow, attempt FROM durable_runs
 WHERE tree_key = ANY(%s) AND id = ANY(%s) AND status = 'failed' AND finished_at = %s
   AND error ->> 'type' = 'WorkflowTimeoutError'
 ORDER BY id

-- name: expire_overdue
-- Expire overdue runs, and say how long until the earliest remaining deadline (read with
-- the statement's snapshot, so right after runs expired it may still name theirs: the loop
-- then simply looks again at once).
SELECT durable_expire_runs(%s, %s), durable_next_deadline_in()
