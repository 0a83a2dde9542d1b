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

-- name: expire_overdue
-- Expire overdue runs, and say how long until the earliest remaining deadline (read with
-- the statement's snapshot, so right after runs expired it may still name theirs: the loop
-- then simply looks again at once). With the same snapshot (so as they were before the
-- sweep): the earliest deadlines, [tree_key, run_id] pairs (the runs it expires are among
-- them), and the statement's clock (their finished_at), to name them (`expired_among`).
SELECT durable_expire_runs(%s, %s), durable_next_deadline_in(), durable_now(),
       (SELECT jsonb_agg(jsonb_build_array(c.tree_key, c.run_id))
          FROM (SELECT d.tree_key, d.run_id FROM durable_deadlines d ORDER BY d.deadline_at LIMIT %s) c)

-- name: expired_among
-- Of the candidates `expire_overdue` read, the runs it failed with WorkflowTimeoutError
-- (finished at its clock).
SELECT id, workflow, attempt FROM durable_runs
 WHERE tree_key = ANY(%s) AND id = ANY(%s) AND status = 'failed' AND finished_at = %s
   AND error ->> 'type' = 'WorkflowTimeoutError'
 ORDER BY id
