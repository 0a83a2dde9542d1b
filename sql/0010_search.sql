-- durable schema, version 10: listing and searching runs (issue 14).
--
-- Search attributes: a run's `attributes` (a JSON object of scalars or lists of scalars,
-- set at start or by the workflow with ctx.set_attributes) in a GIN index queried with @>;
-- durable_search_keys lists every attribute key ever set (a filter on another key is a
-- typed error naming these). Child keys: the key= a parent gave a child, on the child's row.
-- Lists are newest first by (created_at, id): indexes on that order, alone and after the
-- workflow or the queue. Only columns written once (at insert) or rarely (attributes) are
-- indexed, so the run updates of version 7 stay HOT (status, leases and wake times are
-- still in no index of durable_runs).

ALTER TABLE durable_runs ADD COLUMN attributes jsonb;
ALTER TABLE durable_runs ADD COLUMN child_key text;

-- (created_at, id) serves everything the index on created_at alone did, and keyset paging
CREATE INDEX durable_runs_created_id_idx ON durable_runs (created_at, id);
DROP INDEX durable_runs_created_idx;
-- text_pattern_ops: a workflow glob ('orders.*') is a LIKE prefix whatever the collation
CREATE INDEX durable_runs_workflow_idx ON durable_runs (workflow text_pattern_ops, created_at, id);
CREATE INDEX durable_runs_queue_idx ON durable_runs (queue, created_at, id);
CREATE INDEX durable_runs_attributes_idx ON durable_runs USING gin (attributes jsonb_path_ops)
    WHERE attributes IS NOT NULL;

-- every search attribute key set so far (upserted before the write that first uses it)
CREATE TABLE durable_search_keys (
    key        text PRIMARY KEY,
    first_seen timestamptz NOT NULL DEFAULT now()
);

-- Merge p_attrs into a running run's attributes and journal it (kind 'attributes') at
-- p_seq, fenced by the lease epoch. false: the lease was lost (nothing written).
CREATE FUNCTION durable_set_attributes(p_key bigint, p_id uuid, p_epoch integer, p_seq integer, p_pos integer,
                                       p_op text, p_attrs jsonb)
    RETURNS boolean
    LANGUAGE plpgsql AS $$
BEGIN
    UPDATE durable_runs SET attributes = coalesce(attributes, '{}'::jsonb) || p_attrs
     WHERE tree_key = p_key AND id = p_id AND lease_epoch = p_epoch AND status = 'running';
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    RETURN durable_append(p_key, p_id, p_epoch, ARRAY[p_seq], ARRAY[p_pos], ARRAY[p_op], ARRAY['attributes'],
                          ARRAY[NULL::text], ARRAY[p_attrs]);
END
$$;

-- Children now keep the key their parent gave them (child_key in each element of
-- p_children); otherwise as in version 7.
CREATE OR REPLACE FUNCTION durable_start_children(p_key bigint, p_parent uuid, p_epoch integer, p_children jsonb)
    RETURNS boolean
    LANGUAGE plpgsql AS $$
DECLARE
    v_parent durable_runs%ROWTYPE;
    v_max_depth integer := coalesce((p_children -> 0 ->> 'max_depth')::int, 10);
    v_now timestamptz := durable_now();
    v_conflict record;
    v_queues text[];
    v_ids uuid[];
    v_id uuid;
BEGIN
    SELECT * INTO v_parent FROM durable_runs
     WHERE tree_key = p_key AND id = p_parent AND lease_epoch = p_epoch AND status = 'running' FOR SHARE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF v_parent.depth + 1 > v_max_depth THEN
        RAISE EXCEPTION USING ERRCODE = 'DU002',
            MESSAGE = format('starting a child of run %s would make the tree %s levels deep, over max_child_depth=%s',
                             p_parent, v_parent.depth + 1, v_max_depth);
    END IF;
    FOR v_conflict IN
        SELECT r.id, r.workflow, r.parent_id
          FROM jsonb_to_recordset(p_children) AS c(id uuid, workflow text)
          JOIN durable_runs r ON r.tree_key = p_key AND r.id = c.id
         WHERE r.parent_id IS DISTINCT FROM p_parent OR r.workflow <> c.workflow
    LOOP
        RAISE EXCEPTION USING ERRCODE = 'DU001',
            MESSAGE = format('child id %s is already taken by run of workflow %s (parent %s)',
                             v_conflict.id, v_conflict.workflow, coalesce(v_conflict.parent_id::text, 'none'));
    END LOOP;
    -- (each INSERT selects from the parent's row, so that on Citus it runs whole on the
    -- tree's shard: an INSERT from a function alone goes through the coordinator by COPY,
    -- which commits in two phases)
    WITH ins AS (
        INSERT INTO durable_runs (tree_key, id, root_id, parent_id, parent_pos, chain_root_id, workflow, version,
                                  queue, status, input, depth, retry_policy, parent_close_policy,
                                  execution_timeout_s, deadline_at, next_wakeup_at, grafted, child_key)
        SELECT p.tree_key, c.id, p.root_id, p.id, c.pos, c.id, c.workflow, c.version, c.queue, 'pending',
               coalesce(c.input, 'null'::jsonb), p.depth + 1, c.retry, coalesce(c.policy, 'terminate'),
               c.timeout, v_now + make_interval(secs => c.timeout), v_now, p.grafted, c.child_key
          FROM durable_runs p
         CROSS JOIN jsonb_to_recordset(p_children) AS c(id uuid, workflow text, version int, queue text,
                                                         input jsonb, pos int, retry jsonb, policy text,
                                                         timeout float8, child_key text)
         WHERE p.tree_key = p_key AND p.id = p_parent
         ORDER BY c.id
        ON CONFLICT DO NOTHING
        RETURNING id, queue
    )
    SELECT coalesce(array_agg(ins.id), '{}'), coalesce(array_agg(DISTINCT ins.queue), '{}') INTO v_ids, v_queues
      FROM ins;
    IF cardinality(v_ids) > 0 THEN
        INSERT INTO durable_due (tree_key, run_id, queue, workflow, due_at)
        SELECT r.tree_key, r.id, r.queue, r.workflow || ':' || r.version::text, v_now FROM durable_runs r
         WHERE r.tree_key = p_key AND r.id = ANY(v_ids);
        INSERT INTO durable_deadlines (tree_key, run_id, deadline_at)
        SELECT r.tree_key, r.id, r.deadline_at FROM durable_runs r
         WHERE r.tree_key = p_key AND r.id = ANY(v_ids) AND r.execution_timeout_s IS NOT NULL;
    END IF;
    IF NOT v_parent.grafted THEN  -- a tree created before version 7: its new ids need the map
        FOREACH v_id IN ARRAY v_ids LOOP
            INSERT INTO durable_run_keys (id, tree_key) VALUES (v_id, p_key) ON CONFLICT DO NOTHING;
        END LOOP;
    END IF;
    INSERT INTO durable_events (tree_key, run_id, seq, root_id, pos, op, kind, name, data)
    SELECT p.tree_key, p.id, c.seq, p.root_id, c.pos, c.op, 'child_started', c.workflow,
           jsonb_build_object('child_id', c.id, 'hash', c.hash)
      FROM durable_runs p
     CROSS JOIN jsonb_to_recordset(p_children) AS c(id uuid, workflow text, pos int, op text, seq int, hash text)
     WHERE p.tree_key = p_key AND p.id = p_parent;
    PERFORM pg_notify(durable_channel(), 'new|' || q) FROM unnest(v_queues) q;
    RETURN true;
END
$$;
