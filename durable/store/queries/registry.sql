-- The workflow registry (durable_workflows) and the process list (durable_workers): who
-- registered which workflow, and which processes serve which queues.
-- Used by durable/store/registry.py. (How these files are read: durable/store/statements.py.)

-- name: registered_workflows
-- The stored definitions of these workflows (to compare before writing).
SELECT name, version, queue, takes_input, input_schema, result_schema, execution_timeout_s, registered_by,
       updated_at
  FROM durable_workflows WHERE name = ANY(%s::text[])

-- name: register_workflows
-- Write changed definitions (a JSON array of rows), one statement for all of them.
INSERT INTO durable_workflows AS w (name, version, queue, takes_input, input_schema, result_schema,
                                    execution_timeout_s, registered_by, updated_at)
SELECT t.name, t.version, t.queue, t.takes_input, t.input_schema, t.result_schema, t.execution_timeout_s,
       %(owner)s, now()
  FROM jsonb_to_recordset(%(rows)s::jsonb) AS t(name text, version integer, queue text, takes_input boolean,
                                                 input_schema jsonb, result_schema jsonb,
                                                 execution_timeout_s double precision)
ON CONFLICT (name) DO UPDATE
   SET version = EXCLUDED.version, queue = EXCLUDED.queue, takes_input = EXCLUDED.takes_input,
       input_schema = EXCLUDED.input_schema, result_schema = EXCLUDED.result_schema,
       execution_timeout_s = EXCLUDED.execution_timeout_s, registered_by = EXCLUDED.registered_by,
       updated_at = EXCLUDED.updated_at

-- name: registered_workflow
SELECT name, version, queue, takes_input, input_schema, result_schema, execution_timeout_s, registered_by,
       updated_at
  FROM durable_workflows WHERE name = %s

-- name: registered_names
SELECT name FROM durable_workflows ORDER BY name

-- name: list_workers
-- Every process row (a process gone for a week is deleted by the next process's first beat).
SELECT owner, host, pid, queues, workflows, concurrency, started_at, seen_at, expires_at, expires_at > now()
  FROM durable_workers ORDER BY expires_at > now() DESC, host, pid, owner

-- name: live_workers_serving
-- How many live processes serve this queue and this workflow version.
SELECT count(*) FROM durable_workers
 WHERE expires_at > now() AND %(queue)s = ANY(queues) AND %(workflow)s = ANY(workflows)

-- name: registered_all
SELECT name, version, queue, takes_input, input_schema, result_schema, execution_timeout_s, registered_by,
       updated_at
  FROM durable_workflows ORDER BY name
