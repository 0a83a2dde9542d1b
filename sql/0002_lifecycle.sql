-- durable schema, version 2: cancellation cascade, parent-close policies, graceful
-- cancel requests, continue-as-new and execution timeouts.
--
-- Lock order everywhere: a run's parent before the run, a run before its children,
-- generation by generation. Terminal transactions take the parent FOR KEY SHARE;
-- cascades take each generation FOR UPDATE, so a child cannot be started under a
-- parent being cancelled (durable_start_children holds the parent FOR SHARE).

-- A run id derived from another (a child's retry attempt): a name-based (version 3
-- style) uuid of the old id and a label, so the same failure always names the same
-- successor.
CREATE FUNCTION durable_derived_id(p_id uuid, p_label text) RETURNS uuid
    LANGUAGE sql IMMUTABLE AS $$
    SELECT overlay(overlay(md5(p_id::text || '|' || p_label) PLACING '3' FROM 13 FOR 1)
                   PLACING '8' FROM 17 FOR 1)::uuid
$$;

-- Cancel the (already locked) runs p_ids and, generation by generation, their
-- in-flight descendants, honouring each child's parent-close policy: 'terminate'
-- cancels it (and its subtree), 'request_cancel' asks it to cancel itself, 'abandon'
-- leaves it running (not even locked). Stops after p_max_depth generations below
-- p_ids; what is in flight below that is counted (truncated), not touched.
-- Each cancelled run's lease is cleared, so its executor's next fenced write fails;
-- the owners of cancelled runs are told with one 'cancel|<owner>' notification each.
-- Returns (cancelled, truncated, owners told).
CREATE FUNCTION durable_cascade(p_ids uuid[], p_reason text, p_child_reason text, p_max_depth integer,
                                p_status text DEFAULT 'cancelled', p_error jsonb DEFAULT NULL)
    RETURNS TABLE (cancelled integer, truncated integer, owners text[])
    LANGUAGE plpgsql AS $$
DECLARE
    v_gen uuid[];
    v_next uuid[];
    v_ask uuid[];
    v_all uuid[];
    v_owners text[];
    v_more text[];
    v_depth integer := 0;
    v_truncated integer := 0;
BEGIN
    -- the runs themselves
    SELECT coalesce(array_agg(DISTINCT r.lease_owner) FILTER (WHERE r.lease_owner IS NOT NULL), '{}')
      INTO v_owners FROM durable_runs r
     WHERE r.id = ANY(p_ids) AND r.status IN ('pending', 'running', 'suspended');
    WITH upd AS (
        UPDATE durable_runs
           SET status = p_status,
               error = coalesce(p_error, jsonb_build_object('type', 'Cancelled', 'reason', p_reason,
                                                            'message', 'the run was cancelled')),
               cancel_requested = true, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
               next_wakeup_at = NULL, finished_at = durable_now(), finish_xid = pg_current_xact_id()
         WHERE id = ANY(p_ids) AND status IN ('pending', 'running', 'suspended')
        RETURNING id
    )
    SELECT coalesce(array_agg(id), '{}') INTO v_all FROM upd;
    v_gen := v_all;
    WHILE cardinality(v_gen) > 0 LOOP
        IF v_depth >= p_max_depth THEN
            -- the depth bound: report everything still in flight below it
            WITH RECURSIVE rest AS (
                SELECT r.id FROM durable_runs r
                 WHERE r.parent_id = ANY(v_gen) AND r.status IN ('pending', 'running', 'suspended')
                   AND r.parent_close_policy <> 'abandon'
                UNION ALL
                SELECT r.id FROM durable_runs r JOIN rest ON r.parent_id = rest.id
                 WHERE r.status IN ('pending', 'running', 'suspended') AND r.parent_close_policy <> 'abandon'
            )
            SELECT count(*) INTO v_truncated FROM rest;
            EXIT;
        END IF;
        v_depth := v_depth + 1;
        -- lock this generation (its parents are locked already), in a stable order; a
        -- child being started under a parent locked here either committed before (and is
        -- seen by this new statement) or finds its parent's lease gone and writes nothing
        SELECT coalesce(array_agg(g.id) FILTER (WHERE g.parent_close_policy = 'terminate'), '{}'),
               coalesce(array_agg(g.id) FILTER (WHERE g.parent_close_policy = 'request_cancel'), '{}'),
               coalesce(array_agg(DISTINCT g.lease_owner)
                        FILTER (WHERE g.parent_close_policy = 'terminate' AND g.lease_owner IS NOT NULL), '{}')
          INTO v_next, v_ask, v_more
          FROM (SELECT r.id, r.parent_close_policy, r.lease_owner FROM durable_runs r
                 WHERE r.parent_id = ANY(v_gen) AND r.status IN ('pending', 'running', 'suspended')
                   AND r.parent_close_policy <> 'abandon'
                 ORDER BY r.id FOR UPDATE) g;
        IF cardinality(v_ask) > 0 THEN
            UPDATE durable_runs SET cancel_requested = true WHERE id = ANY(v_ask);
            PERFORM durable_wake(a) FROM unnest(v_ask) a;
            PERFORM pg_notify(durable_channel(), 'cancel|' || a::text) FROM unnest(v_ask) a;
        END IF;
        IF cardinality(v_next) > 0 THEN
            UPDATE durable_runs
               SET status = 'cancelled',
                   error = jsonb_build_object('type', 'Cancelled', 'reason', p_child_reason,
                                              'message', 'an ancestor of the run was cancelled or closed'),
                   cancel_requested = true, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
                   next_wakeup_at = NULL, finished_at = durable_now(), finish_xid = pg_current_xact_id()
             WHERE id = ANY(v_next);
        END IF;
        v_owners := v_owners || v_more;
        v_all := v_all || v_next;
        v_gen := v_next;
    END LOOP;
    -- runs waiting on any cancelled run (M:N), and outside callers waiting for results
    PERFORM durable_wake(w.waiter_id)
       FROM (SELECT DISTINCT waiter_id FROM durable_waiters WHERE target_id = ANY(v_all)) w;
    PERFORM pg_notify(durable_channel(), 'done|' || r.id::text)
       FROM durable_runs r WHERE r.id = ANY(v_all) AND r.notify_done;
    SELECT coalesce(array_agg(DISTINCT o), '{}') INTO v_owners FROM unnest(v_owners) o;
    PERFORM pg_notify(durable_channel(), 'cancel|' || o) FROM unnest(v_owners) o;
    RETURN QUERY SELECT cardinality(v_all), v_truncated, v_owners;
END
$$;

-- Cancel a run (following continue-as-new to the chain's live link): lock its parent,
-- then the run, then cascade; wake the parent so it journals child_cancelled.
-- Graceful: only ask (cancel_requested + wake + 'cancel|<run>'). Raises DU003 for an
-- unknown run. A finished run is left alone (status_before says how it ended).
-- Returns (cancelled, truncated, status_before, live_id).
CREATE FUNCTION durable_cancel(p_id uuid, p_graceful boolean, p_reason text, p_max_depth integer,
                               p_wake_parent boolean DEFAULT true)
    RETURNS TABLE (cancelled integer, truncated integer, status_before text, live_id uuid)
    LANGUAGE plpgsql AS $$
DECLARE
    v_id uuid := p_id;
    v_parent uuid;
    v_status text;
    v_next uuid;
    v_res record;
BEGIN
    LOOP
        SELECT r.parent_id, r.status, r.continued_to INTO v_parent, v_status, v_next
          FROM durable_runs r WHERE r.id = v_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'DU003', MESSAGE = format('run %s does not exist', p_id);
        END IF;
        IF v_status = 'continued' THEN
            v_id := v_next;
            CONTINUE;
        END IF;
        IF v_parent IS NOT NULL THEN
            PERFORM 1 FROM durable_runs WHERE id = v_parent FOR KEY SHARE;
        END IF;
        SELECT r.status, r.continued_to INTO v_status, v_next FROM durable_runs r
         WHERE r.id = v_id AND r.parent_id IS NOT DISTINCT FROM v_parent FOR UPDATE;
        EXIT WHEN FOUND AND v_status <> 'continued';
        IF FOUND THEN
            v_id := v_next;  -- it continued as new meanwhile: follow the chain
        END IF;               -- not found: its parent changed meanwhile; lock the new one first
    END LOOP;
    IF v_status NOT IN ('pending', 'running', 'suspended') THEN
        RETURN QUERY SELECT 0, 0, v_status, v_id;
        RETURN;
    END IF;
    IF p_graceful THEN
        UPDATE durable_runs SET cancel_requested = true WHERE id = v_id;
        PERFORM durable_wake(v_id);
        PERFORM pg_notify(durable_channel(), 'cancel|' || v_id::text);
        RETURN QUERY SELECT 0, 0, v_status, v_id;
        RETURN;
    END IF;
    SELECT * INTO v_res FROM durable_cascade(ARRAY[v_id], p_reason, 'parent_cancelled', p_max_depth);
    IF v_parent IS NOT NULL AND p_wake_parent THEN
        PERFORM durable_wake(v_parent);
    END IF;
    RETURN QUERY SELECT v_res.cancelled, v_res.truncated, v_status, v_id;
END
$$;

-- A workflow cancels one of its children (ctx.cancel_child): fenced by the parent's
-- lease (FOR KEY SHARE: the parent's own appends and its children's wakes go on), the
-- cancel and the parent's 'child_cancel' event in one transaction, so a replay reads
-- the event and never cancels twice. Returns ok=false when the lease was lost.
CREATE FUNCTION durable_cancel_child(p_parent uuid, p_token bigint, p_child uuid, p_graceful boolean,
                                     p_seq integer, p_pos integer, p_max_depth integer)
    RETURNS TABLE (ok boolean, cancelled integer, truncated integer, status_before text)
    LANGUAGE plpgsql AS $$
DECLARE
    v_root uuid;
    v_res record;
BEGIN
    SELECT r.root_id INTO v_root FROM durable_runs r
     WHERE r.id = p_parent AND r.lease_token = p_token AND r.status = 'running' FOR KEY SHARE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT false, 0, 0, NULL::text;
        RETURN;
    END IF;
    SELECT * INTO v_res FROM durable_cancel(p_child, p_graceful, 'cancelled_by_parent', p_max_depth, false);
    INSERT INTO durable_events (run_id, seq, root_id, pos, kind, name, data)
    VALUES (p_parent, p_seq, v_root, p_pos, 'child_cancel', NULL,
            jsonb_build_object('child_id', p_child, 'graceful', p_graceful, 'cancelled', v_res.cancelled,
                               'truncated', v_res.truncated, 'status_before', v_res.status_before));
    RETURN QUERY SELECT true, v_res.cancelled, v_res.truncated, v_res.status_before;
END
$$;

-- Apply parent-close policies to a closed run's in-flight children (the closed run is
-- locked by the caller).
CREATE FUNCTION durable_close_children(p_id uuid, p_max_depth integer)
    RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    v_term uuid[];
    v_ask uuid[];
BEGIN
    SELECT coalesce(array_agg(c.id) FILTER (WHERE c.parent_close_policy = 'terminate'), '{}'),
           coalesce(array_agg(c.id) FILTER (WHERE c.parent_close_policy = 'request_cancel'), '{}')
      INTO v_term, v_ask
      FROM (SELECT r.id, r.parent_close_policy FROM durable_runs r
             WHERE r.parent_id = p_id AND r.status IN ('pending', 'running', 'suspended')
               AND r.parent_close_policy <> 'abandon'
             ORDER BY r.id FOR UPDATE) c;
    IF cardinality(v_term) > 0 THEN
        PERFORM durable_cascade(v_term, 'parent_closed', 'parent_cancelled', greatest(p_max_depth - 1, 0));
    END IF;
    IF cardinality(v_ask) > 0 THEN
        UPDATE durable_runs SET cancel_requested = true WHERE id = ANY(v_ask);
        PERFORM durable_wake(a) FROM unnest(v_ask) a;
        PERFORM pg_notify(durable_channel(), 'cancel|' || a::text) FROM unnest(v_ask) a;
    END IF;
END
$$;

-- Replace the (locked, running) run p_id by a successor p_new in the same chain: the
-- run becomes 'continued', the successor (same tree, parent link, chain root, queue,
-- policies, deadline and pending cancel request) is due after p_delay seconds;
-- undelivered signals and cross-run waiters move to it. Continue-as-new also moves the
-- unawaited in-flight children; a retry closes them by their policies instead.
CREATE FUNCTION durable_renew(p_id uuid, p_new uuid, p_workflow text, p_version integer, p_input jsonb,
                              p_attempt integer, p_delay double precision, p_error jsonb, p_owner text,
                              p_move_children boolean, p_max_depth integer)
    RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    v_run durable_runs%ROWTYPE;
BEGIN
    UPDATE durable_runs
       SET status = 'continued', continued_to = p_new, error = p_error, lease_owner = NULL,
           lease_token = NULL, lease_expires_at = NULL, next_wakeup_at = NULL, finished_at = durable_now()
     WHERE id = p_id
    RETURNING * INTO v_run;
    INSERT INTO durable_runs (id, root_id, parent_id, parent_pos, chain_root_id, workflow, version, queue,
                              status, input, depth, attempt, retry_policy, parent_close_policy,
                              execution_timeout_s, deadline_at, cancel_requested, notify_done,
                              lease_owner, next_wakeup_at)
    VALUES (p_new, v_run.root_id, v_run.parent_id, v_run.parent_pos, v_run.chain_root_id, p_workflow,
            p_version, v_run.queue, 'pending', p_input, v_run.depth, p_attempt, v_run.retry_policy,
            v_run.parent_close_policy, v_run.execution_timeout_s, v_run.deadline_at,
            v_run.cancel_requested, v_run.notify_done, p_owner,
            durable_now() + make_interval(secs => greatest(p_delay, 0)));
    UPDATE durable_signals SET run_id = p_new WHERE run_id = p_id AND consumed_seq IS NULL;
    IF p_move_children THEN
        UPDATE durable_runs SET parent_id = p_new
         WHERE parent_id = p_id AND status IN ('pending', 'running', 'suspended');
    ELSE
        PERFORM durable_close_children(p_id, p_max_depth);
    END IF;
    UPDATE durable_waiters SET target_id = p_new WHERE target_id = p_id;
    IF v_run.notify_done THEN
        PERFORM pg_notify(durable_channel(), 'done|' || p_id::text);
    END IF;
    IF p_delay <= 0 THEN
        PERFORM pg_notify(durable_channel(), 'new|' || v_run.queue);
    END IF;
END
$$;

-- The terminal transaction, with parent-close policies and child retries (replaces
-- version 1). Locks the parent (FOR KEY SHARE, so sibling completions do not queue
-- behind each other), then the run FOR UPDATE, so a child of this run finishing at the
-- same time either completes first or waits at its own first lock: the two never hold
-- each other's rows. A failure of a run with a retry policy and attempts left (and a
-- retryable error) re-runs it as a new attempt: the run becomes 'continued' and its
-- successor, id derived from this one, attempt + 1, is due after the retry delay; the
-- parent keeps waiting (its fan-in follows the chain root). p_status 'cancelled' ends a
-- run that observed a graceful cancel request.
-- Returns 'finished', 'retried' or 'lost' (lease lost: nothing written).
-- The lock order of every transaction that ends or renews a run: its parent FOR KEY
-- SHARE (siblings finishing at once do not queue behind each other), then the run FOR
-- UPDATE, fenced by the lease token. Returns the run's row; id IS NULL when the lease
-- was lost (nothing may be written then).
CREATE FUNCTION durable_lock_live(p_id uuid, p_token bigint) RETURNS durable_runs
    LANGUAGE plpgsql AS $$
DECLARE
    v_parent uuid;
    v_run durable_runs%ROWTYPE;
BEGIN
    SELECT parent_id INTO v_parent FROM durable_runs WHERE id = p_id;
    IF v_parent IS NOT NULL THEN
        PERFORM 1 FROM durable_runs WHERE id = v_parent FOR KEY SHARE;
    END IF;
    SELECT * INTO v_run FROM durable_runs
     WHERE id = p_id AND lease_token = p_token AND status = 'running' FOR UPDATE;
    RETURN v_run;
END
$$;

CREATE FUNCTION durable_finish(p_id uuid, p_token bigint, p_status text,
                               p_result jsonb, p_error jsonb, p_max_depth integer DEFAULT 10)
    RETURNS text
    LANGUAGE plpgsql AS $$
DECLARE
    v_run durable_runs%ROWTYPE;
    v_policy jsonb;
    v_max integer;
    v_delay double precision;
BEGIN
    v_run := durable_lock_live(p_id, p_token);
    IF v_run.id IS NULL THEN
        RETURN 'lost';
    END IF;
    v_policy := v_run.retry_policy;
    IF p_status = 'failed' AND jsonb_typeof(v_policy) = 'object' AND NOT v_run.cancel_requested
       AND NOT coalesce((p_error ->> 'non_retryable')::boolean, false)
       AND coalesce(p_error ->> 'type', '') NOT IN ('NonDeterminismError', 'WorkflowTimeoutError')
       AND NOT (coalesce(v_policy -> 'non_retryable', '[]'::jsonb) ? coalesce(p_error ->> 'type', '')) THEN
        v_max := coalesce((v_policy ->> 'max_attempts')::integer, 3);
        IF v_max = 0 OR v_run.attempt < v_max THEN
            v_delay := least(coalesce((v_policy ->> 'max_interval')::float8, 100.0),
                             coalesce((v_policy ->> 'initial_interval')::float8, 1.0)
                             * power(coalesce((v_policy ->> 'backoff')::float8, 2.0), v_run.attempt - 1));
            PERFORM durable_renew(p_id, durable_derived_id(p_id, 'retry'), v_run.workflow, v_run.version,
                                  v_run.input, v_run.attempt + 1, v_delay, p_error, NULL, false, p_max_depth);
            RETURN 'retried';
        END IF;
    END IF;
    UPDATE durable_runs
       SET status = p_status, result = p_result, error = p_error,
           lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
           next_wakeup_at = NULL, finished_at = durable_now(),
           finish_xid = pg_current_xact_id()
     WHERE id = p_id;
    PERFORM durable_close_children(p_id, p_max_depth);
    PERFORM durable_after_terminal(p_id, v_run.parent_id, v_run.notify_done);
    RETURN 'finished';
END
$$;

-- The boolean form (false = lease lost, nothing written).
CREATE FUNCTION durable_finish_run(p_id uuid, p_token bigint, p_status text,
                                   p_result jsonb, p_error jsonb, p_max_depth integer DEFAULT 10)
    RETURNS boolean
    LANGUAGE sql AS $$
    SELECT durable_finish(p_id, p_token, p_status, p_result, p_error, p_max_depth) <> 'lost'
$$;

-- continue-as-new: mark this run 'continued' and create its successor (deterministic
-- id from the caller, same parent link, chain root and tree), moving undelivered
-- signals, unawaited children, cross-run waiters and a pending cancel request, in one
-- transaction under the lease. The run is locked FOR UPDATE after its parent, like a
-- terminal transaction, so a child finishing meanwhile never deadlocks with the move.
CREATE FUNCTION durable_continue(p_id uuid, p_token bigint, p_new uuid, p_workflow text,
                                 p_version integer, p_input jsonb)
    RETURNS boolean
    LANGUAGE plpgsql AS $$
DECLARE
    v_run durable_runs%ROWTYPE;
BEGIN
    v_run := durable_lock_live(p_id, p_token);
    IF v_run.id IS NULL THEN
        RETURN false;
    END IF;
    PERFORM durable_renew(p_id, p_new, p_workflow, p_version, p_input, v_run.attempt, 0, NULL,
                          v_run.lease_owner, true, 0);
    RETURN true;
END
$$;

-- Execution timeouts: fail overdue runs with WorkflowTimeoutError (their children follow
-- their parent-close policies) and wake their parents. Parents before children (by
-- depth); a run or parent another transaction holds is skipped, never waited for, and
-- taken by the next round.
CREATE FUNCTION durable_expire_runs(p_limit integer, p_max_depth integer)
    RETURNS integer
    LANGUAGE plpgsql AS $$
DECLARE
    v_row record;
    v_count integer := 0;
BEGIN
    FOR v_row IN
        SELECT id, parent_id, execution_timeout_s FROM durable_runs
         WHERE deadline_at < durable_now() AND finished_at IS NULL
           AND status IN ('pending', 'running', 'suspended')
         ORDER BY depth, deadline_at LIMIT p_limit
    LOOP
        IF v_row.parent_id IS NOT NULL THEN
            PERFORM 1 FROM durable_runs WHERE id = v_row.parent_id FOR KEY SHARE SKIP LOCKED;
            CONTINUE WHEN NOT FOUND;
        END IF;
        PERFORM 1 FROM durable_runs WHERE id = v_row.id AND parent_id IS NOT DISTINCT FROM v_row.parent_id
           AND status IN ('pending', 'running', 'suspended') AND deadline_at < durable_now()
           FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        PERFORM durable_cascade(ARRAY[v_row.id], 'timeout', 'parent_cancelled', p_max_depth, 'failed',
                                jsonb_build_object('type', 'WorkflowTimeoutError',
                                                   'message', format('the run exceeded its execution timeout of %s s',
                                                                     v_row.execution_timeout_s)));
        IF v_row.parent_id IS NOT NULL THEN
            PERFORM durable_wake(v_row.parent_id);
        END IF;
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$$;

-- The last step's journal event and the terminal state in one transaction (saves a
-- commit per short run). Same lock order as durable_finish: the parent, then the run.
CREATE FUNCTION durable_finish_with_event(p_id uuid, p_token bigint, p_seq integer, p_pos integer,
                                          p_kind text, p_name text, p_data jsonb, p_status text,
                                          p_result jsonb, p_error jsonb, p_max_depth integer)
    RETURNS text
    LANGUAGE plpgsql AS $$
DECLARE
    v_run durable_runs%ROWTYPE;
BEGIN
    v_run := durable_lock_live(p_id, p_token);
    IF v_run.id IS NULL THEN
        RETURN 'lost';
    END IF;
    INSERT INTO durable_events (run_id, seq, root_id, pos, kind, name, data)
    VALUES (p_id, p_seq, v_run.root_id, p_pos, p_kind, p_name, p_data);
    RETURN durable_finish(p_id, p_token, p_status, p_result, p_error, p_max_depth);
END
$$;
