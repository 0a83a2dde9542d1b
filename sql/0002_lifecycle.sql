-- durable schema, version 2: cancellation cascade, parent-close policies, graceful
-- cancel requests, continue-as-new and execution timeouts.
--
-- Lock order everywhere: a run's parent before the run, a run before its children,
-- generation by generation. Terminal transactions take the parent FOR KEY SHARE;
-- cascades take each generation FOR UPDATE, so a child cannot be started under a
-- parent being cancelled (durable_start_children holds the parent FOR SHARE).

-- Cancel the (already locked) runs p_ids and, generation by generation, their
-- in-flight descendants, honouring each child's parent-close policy: 'terminate'
-- cancels it (and its subtree), 'request_cancel' asks it to cancel itself, 'abandon'
-- leaves it running. Stops after p_max_depth generations below p_ids.
-- Returns (cancelled, truncated, owners to tell).
CREATE FUNCTION durable_cascade(p_ids uuid[], p_reason text, p_child_reason text, p_max_depth integer,
                                p_status text DEFAULT 'cancelled', p_error jsonb DEFAULT NULL)
    RETURNS TABLE (cancelled integer, truncated integer, owners text[])
    LANGUAGE plpgsql AS $$
DECLARE
    v_gen uuid[] := p_ids;
    v_next uuid[];
    v_ask uuid[];
    v_all uuid[] := '{}';
    v_owners text[] := '{}';
    v_depth integer := 0;
    v_truncated integer := 0;
    v_id uuid;
BEGIN
    -- the runs themselves
    WITH upd AS (
        UPDATE durable_runs
           SET status = p_status,
               error = coalesce(p_error, jsonb_build_object('type', 'Cancelled', 'reason', p_reason,
                                                            'message', 'run was cancelled')),
               cancel_requested = true, lease_token = NULL, lease_expires_at = NULL,
               next_wakeup_at = NULL, finished_at = durable_now(), finish_xid = pg_current_xact_id()
         WHERE id = ANY(p_ids) AND status IN ('pending', 'running', 'suspended')
        RETURNING id, lease_owner
    )
    SELECT coalesce(array_agg(id), '{}'), coalesce(array_agg(DISTINCT lease_owner)
                                                   FILTER (WHERE lease_owner IS NOT NULL), '{}')
      INTO v_all, v_owners FROM upd;
    v_gen := v_all;
    WHILE cardinality(v_gen) > 0 LOOP
        IF v_depth >= p_max_depth THEN
            SELECT count(*) INTO v_truncated FROM durable_runs
             WHERE parent_id = ANY(v_gen) AND status IN ('pending', 'running', 'suspended');
            EXIT;
        END IF;
        v_depth := v_depth + 1;
        -- lock this generation (parents are locked already), in a stable order
        SELECT coalesce(array_agg(id) FILTER (WHERE parent_close_policy = 'terminate'), '{}'),
               coalesce(array_agg(id) FILTER (WHERE parent_close_policy = 'request_cancel'), '{}')
          INTO v_next, v_ask
          FROM (SELECT id, parent_close_policy FROM durable_runs
                 WHERE parent_id = ANY(v_gen) AND status IN ('pending', 'running', 'suspended')
                 ORDER BY id FOR UPDATE) g;
        IF cardinality(v_ask) > 0 THEN
            UPDATE durable_runs SET cancel_requested = true WHERE id = ANY(v_ask);
            FOREACH v_id IN ARRAY v_ask LOOP
                PERFORM durable_wake(v_id);
                PERFORM pg_notify(durable_channel(), 'cancel|' || v_id::text);
            END LOOP;
        END IF;
        WITH upd AS (
            UPDATE durable_runs
               SET status = 'cancelled',
                   error = jsonb_build_object('type', 'Cancelled', 'reason', p_child_reason,
                                              'message', 'an ancestor was closed'),
                   cancel_requested = true, lease_token = NULL, lease_expires_at = NULL,
                   next_wakeup_at = NULL, finished_at = durable_now(), finish_xid = pg_current_xact_id()
             WHERE id = ANY(v_next)
            RETURNING id, lease_owner
        )
        SELECT coalesce(array_agg(id), '{}'),
               v_owners || coalesce(array_agg(DISTINCT lease_owner) FILTER (WHERE lease_owner IS NOT NULL), '{}')
          INTO v_gen, v_owners FROM upd;
        v_all := v_all || v_gen;
    END LOOP;
    -- waiters on any cancelled run (M:N), and outside callers waiting for results
    FOR v_id IN SELECT DISTINCT w.waiter_id FROM durable_waiters w WHERE w.target_id = ANY(v_all) LOOP
        PERFORM durable_wake(v_id);
    END LOOP;
    PERFORM pg_notify(durable_channel(), 'done|' || r.id::text)
       FROM durable_runs r WHERE r.id = ANY(v_all) AND r.notify_done;
    SELECT array_agg(DISTINCT o) INTO v_owners FROM unnest(v_owners) o;
    FOR v_id IN SELECT 1 LIMIT 0 LOOP END LOOP;
    PERFORM pg_notify(durable_channel(), 'cancel|' || o) FROM unnest(coalesce(v_owners, '{}')) o;
    RETURN QUERY SELECT cardinality(v_all), v_truncated, coalesce(v_owners, '{}');
END
$$;

-- Cancel a run from outside (or from its parent): lock its parent, then the run, then
-- cascade; wake the parent so it journals child_cancelled. Graceful: only ask.
-- Raises DU003 for an unknown run. Returns (cancelled, truncated, status_before).
CREATE FUNCTION durable_cancel(p_id uuid, p_graceful boolean, p_reason text, p_max_depth integer)
    RETURNS TABLE (cancelled integer, truncated integer, status_before text)
    LANGUAGE plpgsql AS $$
DECLARE
    v_parent uuid;
    v_status text;
    v_res record;
BEGIN
    -- follow continue-as-new to the live link of the chain
    SELECT r.id, r.parent_id INTO p_id, v_parent FROM durable_runs r
     WHERE r.chain_root_id = (SELECT chain_root_id FROM durable_runs WHERE id = p_id)
     ORDER BY (r.status = 'continued'), r.created_at DESC LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'DU003', MESSAGE = format('run %s does not exist', p_id);
    END IF;
    IF v_parent IS NOT NULL THEN
        PERFORM 1 FROM durable_runs WHERE id = v_parent FOR KEY SHARE;
    END IF;
    SELECT status INTO v_status FROM durable_runs WHERE id = p_id FOR UPDATE;
    IF v_status NOT IN ('pending', 'running', 'suspended') THEN
        RETURN QUERY SELECT 0, 0, v_status;
        RETURN;
    END IF;
    IF p_graceful THEN
        UPDATE durable_runs SET cancel_requested = true WHERE id = p_id;
        PERFORM durable_wake(p_id);
        PERFORM pg_notify(durable_channel(), 'cancel|' || p_id::text);
        RETURN QUERY SELECT 0, 0, v_status;
        RETURN;
    END IF;
    SELECT * INTO v_res FROM durable_cascade(ARRAY[p_id], p_reason, 'parent_cancelled', p_max_depth);
    IF v_parent IS NOT NULL THEN
        PERFORM durable_wake(v_parent);
    END IF;
    RETURN QUERY SELECT v_res.cancelled, v_res.truncated, v_status;
END
$$;

-- The terminal transaction, now with parent-close policies applied to the run's
-- in-flight children (replaces version 1). p_status 'cancelled' ends a run that
-- observed a graceful cancel request.
DROP FUNCTION durable_finish_run(uuid, bigint, text, jsonb, jsonb);
CREATE FUNCTION durable_finish_run(p_id uuid, p_token bigint, p_status text,
                                   p_result jsonb, p_error jsonb, p_max_depth integer DEFAULT 10)
    RETURNS boolean
    LANGUAGE plpgsql AS $$
DECLARE
    v_parent uuid;
    v_notify boolean;
    v_children uuid[];
BEGIN
    SELECT parent_id INTO v_parent FROM durable_runs WHERE id = p_id;
    IF v_parent IS NOT NULL THEN
        PERFORM 1 FROM durable_runs WHERE id = v_parent FOR KEY SHARE;
    END IF;
    UPDATE durable_runs
       SET status = p_status, result = p_result, error = p_error,
           lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
           next_wakeup_at = NULL, finished_at = durable_now(),
           finish_xid = pg_current_xact_id()
     WHERE id = p_id AND lease_token = p_token AND status = 'running'
    RETURNING notify_done INTO v_notify;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM durable_close_children(p_id, p_max_depth);
    PERFORM durable_after_terminal(p_id, v_parent, v_notify);
    RETURN true;
END
$$;

-- Apply parent-close policies to a closed run's in-flight children.
CREATE FUNCTION durable_close_children(p_id uuid, p_max_depth integer)
    RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    v_term uuid[];
    v_ask uuid[];
    v_id uuid;
BEGIN
    SELECT coalesce(array_agg(id) FILTER (WHERE parent_close_policy = 'terminate'), '{}'),
           coalesce(array_agg(id) FILTER (WHERE parent_close_policy = 'request_cancel'), '{}')
      INTO v_term, v_ask
      FROM (SELECT id, parent_close_policy FROM durable_runs
             WHERE parent_id = p_id AND status IN ('pending', 'running', 'suspended')
             ORDER BY id FOR UPDATE) c;
    IF cardinality(v_term) > 0 THEN
        PERFORM durable_cascade(v_term, 'parent_closed', 'parent_cancelled', p_max_depth - 1);
    END IF;
    IF cardinality(v_ask) > 0 THEN
        UPDATE durable_runs SET cancel_requested = true WHERE id = ANY(v_ask);
        FOREACH v_id IN ARRAY v_ask LOOP
            PERFORM durable_wake(v_id);
            PERFORM pg_notify(durable_channel(), 'cancel|' || v_id::text);
        END LOOP;
    END IF;
END
$$;

-- continue-as-new: mark this run 'continued' and create its successor (same parent
-- link, chain root and tree), moving undelivered signals, unawaited children, cross-run
-- waiters and a pending cancel request, in one transaction under the lease.
CREATE FUNCTION durable_continue(p_id uuid, p_token bigint, p_new uuid, p_workflow text,
                                 p_version integer, p_input jsonb)
    RETURNS boolean
    LANGUAGE plpgsql AS $$
DECLARE
    v_run durable_runs%ROWTYPE;
BEGIN
    SELECT * INTO v_run FROM durable_runs WHERE id = p_id;
    IF v_run.parent_id IS NOT NULL THEN
        PERFORM 1 FROM durable_runs WHERE id = v_run.parent_id FOR KEY SHARE;
    END IF;
    UPDATE durable_runs
       SET status = 'continued', continued_to = p_new, lease_token = NULL, lease_expires_at = NULL,
           next_wakeup_at = NULL, finished_at = durable_now()
     WHERE id = p_id AND lease_token = p_token AND status = 'running'
    RETURNING * INTO v_run;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO durable_runs (id, root_id, parent_id, parent_pos, chain_root_id, workflow, version, queue,
                              status, input, depth, attempt, retry_policy, parent_close_policy,
                              execution_timeout_s, deadline_at, cancel_requested, notify_done,
                              lease_owner, next_wakeup_at)
    VALUES (p_new, v_run.root_id, v_run.parent_id, v_run.parent_pos, v_run.chain_root_id, p_workflow,
            p_version, v_run.queue, 'pending', p_input, v_run.depth, v_run.attempt, v_run.retry_policy,
            v_run.parent_close_policy, v_run.execution_timeout_s, v_run.deadline_at,
            v_run.cancel_requested, v_run.notify_done, v_run.lease_owner, durable_now());
    UPDATE durable_signals SET run_id = p_new WHERE run_id = p_id AND consumed_seq IS NULL;
    UPDATE durable_runs SET parent_id = p_new
     WHERE parent_id = p_id AND status IN ('pending', 'running', 'suspended');
    UPDATE durable_waiters SET target_id = p_new WHERE target_id = p_id;
    IF v_run.notify_done THEN
        PERFORM pg_notify(durable_channel(), 'done|' || p_id::text);
    END IF;
    PERFORM pg_notify(durable_channel(), 'new|' || v_run.queue);
    RETURN true;
END
$$;

-- Execution timeouts: fail overdue runs (their children follow their policies).
CREATE FUNCTION durable_expire_runs(p_limit integer, p_max_depth integer)
    RETURNS integer
    LANGUAGE plpgsql AS $$
DECLARE
    v_row record;
    v_count integer := 0;
BEGIN
    FOR v_row IN
        SELECT id, parent_id FROM durable_runs
         WHERE deadline_at < durable_now() AND finished_at IS NULL
           AND status IN ('pending', 'running', 'suspended')
         ORDER BY deadline_at LIMIT p_limit
    LOOP
        IF v_row.parent_id IS NOT NULL THEN
            PERFORM 1 FROM durable_runs WHERE id = v_row.parent_id FOR KEY SHARE;
        END IF;
        PERFORM 1 FROM durable_runs WHERE id = v_row.id
           AND status IN ('pending', 'running', 'suspended') FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        PERFORM durable_cascade(ARRAY[v_row.id], 'timeout', 'parent_cancelled', p_max_depth, 'failed',
                                jsonb_build_object('type', 'WorkflowTimeoutError',
                                                   'message', 'the run exceeded its execution timeout'));
        PERFORM durable_close_children(v_row.id, p_max_depth);
        IF v_row.parent_id IS NOT NULL THEN
            PERFORM durable_wake(v_row.parent_id);
        END IF;
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$$;
