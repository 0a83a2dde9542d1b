-- Runs: starting, claiming, suspending, releasing, finishing; this process's heartbeat and leases; what a run is.
-- Used by durable/store/runs.py. (How these files are read: durable/store/statements.py.)

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

-- name: claimable
-- Runs this process may claim now (a lock-free read): due waiting runs per queue, then runs
-- whose holder's lease expired.
SELECT tree_key, run_id FROM durable_claimable(%(queues)s::text[], %(workflows)s::text[], %(owner)s,
                                                %(grace)s::float8, %(limit)s)

-- name: claim
-- Claim up to limit of the given runs, in order (each routed to its tree, a row another
-- transaction holds is skipped and the next candidate taken instead).
SELECT tree_key, id, root_id, parent_id, chain_root_id, workflow, version, queue, input, attempt, depth,
       lease_epoch, cancel_requested, grafted, prev_status, wake_latency_s, last_seq, deadline_in_s
  FROM durable_claim(%(keys)s::bigint[], %(ids)s::uuid[], %(owner)s, %(workflows)s::text[], %(grace)s::float8,
                     %(limit)s)

-- name: claim_each
-- The same, each run claimed in a transaction of its own (one shard each on Citus).
CALL durable_claim_each(%(keys)s::bigint[], %(ids)s::uuid[], %(owner)s, %(workflows)s::text[], %(grace)s::float8,
                        %(limit)s, NULL)

-- name: run_due_in
-- Why a claim found nothing: the run's status and how long until it is due (negative: due
-- already, so another transaction held its row for a moment).
SELECT status, due_in_s FROM durable_due_in(%s, %s)

-- name: load_history
SELECT seq, pos, op, kind, name, data, pg_column_size(data) FROM durable_events
 WHERE tree_key = %s AND run_id = %s ORDER BY seq

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

-- name: watch_run
-- Ask the terminal transaction of the chain to notify 'done|<run>'.
SELECT durable_watch(%s)

-- name: run_chain_state
SELECT id, status, result, error, workflow FROM durable_chain_state(%s)

-- name: run_info
SELECT r.id, r.root_id, r.parent_id, r.chain_root_id, r.continued_to, r.workflow, r.version, r.queue, r.status,
       r.input, r.result, r.error, r.attempt, r.depth, r.lease_owner, r.lease_epoch,
       r.next_wakeup_at, r.cancel_requested, r.created_at, r.started_at, r.finished_at
  FROM durable_runs r WHERE r.tree_key = %(key)s AND r.id = %(id)s

-- name: lease_expiry
-- When the lease of a process's runs expires (its heartbeat row; a statement of its own:
-- on Citus the processes are not co-located with the runs).
SELECT expires_at FROM durable_workers WHERE owner = %s

-- name: finished_among
-- Which of these (parked here) runs have ended meanwhile (cancelled, expired), with their status.
SELECT r.id, r.status FROM unnest(%s::bigint[], %s::uuid[]) AS t(tree_key, id)
  JOIN durable_runs r ON r.tree_key = t.tree_key AND r.id = t.id
 WHERE r.status IN ('completed', 'failed', 'cancelled', 'continued')

-- name: key_of
-- The tree of a run id.
SELECT durable_key_of(%s)
