-- Retention: deleting finished trees in bounded batches.
-- Used by durable/store/retention.py. (How these files are read: durable/store/statements.py.)

-- name: retention_batch
-- One bounded gc batch (durable/store/retention.py): whole trees that finished before the
-- cutoff (the engine's clock), from a keyset cursor over when their roots finished.
SELECT after_ts, after_id, scanned, kept, runs, events, signals
  FROM durable_gc_trees(durable_now() - make_interval(secs => %(age)s::float8), %(after_ts)s::timestamptz,
                        %(after_id)s::uuid, %(batch)s)
