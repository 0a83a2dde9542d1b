-- Listing and searching runs (engine.list_runs / count_runs, `durable runs`, `durable count`),
-- search attributes and their known keys. Used by durable/store/search.py, which composes
-- a list from these fixed fragments (the filters given, AND'd) and passes every value as a
-- parameter. Newest first by (created_at, id): durable_runs_created_id_idx, or the
-- workflow/queue indexes that end with that order; attributes through the GIN index (@>).
-- (How these files are read: durable/store/statements.py.)

-- name: _search_list
-- error_type / error_message: the root cause (the innermost link of the error's cause chain,
-- repeated as `root` at the top of the document: durable/failures.py), else the error's own.
SELECT id, workflow, version, queue, status, parent_id, root_id, child_key, coalesce(attributes, '{}') AS attributes,
       created_at, started_at, finished_at, coalesce(error #>> '{root,type}', error ->> 'type') AS error_type,
       now() AS db_now,
       left(coalesce(error #>> '{root,message}', error ->> 'message', error ->> 'reason'), 200) AS error_message,
       attempt
  FROM durable_runs

-- name: _search_order
 ORDER BY created_at DESC, id DESC LIMIT %s

-- name: _search_count
SELECT count(*) FROM durable_runs

-- name: _where_status
status = ANY(%s::text[])

-- name: _where_workflow
workflow = %s

-- name: _where_workflow_glob
-- a glob as a LIKE pattern (text_pattern_ops: a fixed prefix is an index range)
workflow LIKE %s

-- name: _where_queue
queue = %s

-- name: _where_parent
tree_key = %s AND parent_id = %s

-- name: _where_root
tree_key = %s AND root_id = %s

-- name: _where_top_level
parent_id IS NULL

-- name: _where_created_after
created_at >= %s

-- name: _where_created_before
created_at < %s

-- name: _where_finished_after
finished_at >= %s

-- name: _where_finished_before
-- (a run finished before t was created before t: the created_at bound lets an index serve it)
finished_at < %s AND created_at < %s

-- name: _where_older_than
created_at < now() - make_interval(secs => %s)

-- name: _where_newer_than
created_at >= now() - make_interval(secs => %s)

-- name: _where_before_cursor
(created_at, id) < (%s, %s)

-- name: _where_attribute
-- one key: any of these containment documents (a scalar: equal to it, or a list holding it)
attributes IS NOT NULL AND attributes @> ANY(%s::jsonb[])

-- name: search_now
SELECT now()

-- name: search_known_keys
SELECT key FROM durable_search_keys ORDER BY key

-- name: search_add_keys
-- keys seen for the first time (before the write that uses them; a reference table on Citus)
INSERT INTO durable_search_keys (key) SELECT k FROM unnest(%s::text[]) AS k ORDER BY k ON CONFLICT DO NOTHING

-- name: search_start_attributes
-- the attributes given to engine.start, in the start's transaction
UPDATE durable_runs SET attributes = %(attrs)s::jsonb WHERE tree_key = %(key)s AND id = %(id)s

-- name: search_run_attributes
-- a run's attributes (a restart or fork carries them over to the new run)
SELECT attributes FROM durable_runs WHERE tree_key = %(key)s AND id = %(id)s

-- name: search_set_attributes
-- ctx.set_attributes: merged into the run's attributes and journaled, fenced by the lease
SELECT durable_set_attributes(%(key)s, %(id)s, %(epoch)s, %(seq)s, %(pos)s, %(op)s, %(attrs)s::jsonb)

-- name: _explain_json
-- prefixes of a list's plan (tests and bench.search check the lists are served by indexes)
EXPLAIN (FORMAT JSON)

-- name: _explain_analyze_json
EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)

-- name: _explain_analyze
EXPLAIN (ANALYZE, BUFFERS)

-- name: _search_status_sample
-- (the web console's counts by status: durable/ui) the statuses of the newest matching runs,
-- at most %s of them (an index range newest first, never a count over every run)
SELECT status, count(*) AS n, sum(count(*)) OVER () AS sampled FROM (SELECT status FROM durable_runs

-- name: _search_status_sample_tail
 ORDER BY created_at DESC, id DESC LIMIT %s) s GROUP BY status
