-- The web console's live updates (durable/ui/live.py): while browsers watch, the hub looks
-- once a second for runs created since its last look and at the runs it follows. Both are
-- index lookups (durable_runs_created_id_idx; the primary keys); nothing here runs when no
-- browser is connected, and the engine's own statements are not changed.
-- Used by durable/store/live.py. (How these files are read: durable/store/statements.py.)

-- name: live_clock
-- The database's clock: where the first look for new runs starts.
SELECT now()

-- name: live_runs_since
-- Runs created after %(since)s (oldest first, at most %(limit)s): the created_at index.
SELECT r.id, r.tree_key, r.root_id, r.parent_id, r.status, r.created_at,
       coalesce((SELECT e.seq FROM durable_events e WHERE e.tree_key = r.tree_key AND e.run_id = r.id
                  ORDER BY e.seq DESC LIMIT 1), 0)
  FROM durable_runs r
 WHERE r.created_at > %(since)s
 ORDER BY r.created_at, r.id
 LIMIT %(limit)s

-- name: live_runs_now
-- These runs as they are now, by primary key (tree keys as the hub computed them from the
-- ids); runs made before schema version 7 are found through durable_run_keys (their map).
SELECT r.id, r.tree_key, r.root_id, r.parent_id, r.status, r.created_at,
       coalesce((SELECT e.seq FROM durable_events e WHERE e.tree_key = r.tree_key AND e.run_id = r.id
                  ORDER BY e.seq DESC LIMIT 1), 0)
  FROM unnest(%(keys)s::bigint[], %(ids)s::uuid[]) AS w(tree_key, id)
  JOIN durable_runs r ON r.tree_key = w.tree_key AND r.id = w.id
UNION ALL
SELECT r.id, r.tree_key, r.root_id, r.parent_id, r.status, r.created_at,
       coalesce((SELECT e.seq FROM durable_events e WHERE e.tree_key = r.tree_key AND e.run_id = r.id
                  ORDER BY e.seq DESC LIMIT 1), 0)
  FROM durable_run_keys k
  JOIN durable_runs r ON r.tree_key = k.tree_key AND r.id = k.id
 WHERE k.id = ANY(%(ids)s::uuid[])
