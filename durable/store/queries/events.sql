-- The journal: appending events (fenced by the lease epoch), timers, signals consumed, children started.
-- Used by durable/store/events.py. (How these files are read: durable/store/statements.py.)

-- name: start_children
-- Children and their child_started events, one transaction under the parent's lease.
SELECT durable_start_children(%s, %s, %s, %s::jsonb)

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

-- name: peek_signal
SELECT id FROM durable_signals
 WHERE tree_key = %s AND run_id = %s AND name = %s AND consumed_seq IS NULL ORDER BY id LIMIT 1

-- name: consume_signal
-- Consume the oldest unconsumed signal of a name and journal it, fenced.
SELECT leased, payload, signal_id FROM durable_consume_signal(%(key)s, %(id)s, %(epoch)s, %(seq)s, %(pos)s,
                                                               %(op)s, %(name)s)
