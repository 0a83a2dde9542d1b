-- durable schema, version 4: correct under concurrency.
--
-- THE LOCK ORDER (every multi-row transaction of the engine follows it):
--   1. tree ancestors before descendants (a run's parent before the run, a run before its
--      children, generation by generation); within one level, by id;
--   2. the first lock a transaction takes on a row is the strongest it will need on that
--      row (no FOR SHARE followed by an UPDATE of the same row: two such transactions
--      each hold the share lock the other one's update waits for);
--   3. runs woken at the end of a transaction (durable_wake: parents, cross-run waiters)
--      come after every lock of the tree being changed, parent first, then waiters by id;
--   4. background statements over many runs (heartbeat, timeout sweep, retention, claims)
--      never wait for a row lock: SKIP LOCKED, and what they skipped is retried next round.
--
-- Concurrent branches inside one workflow: an operation of a branch other than the
-- workflow's main task is identified by `op` (the branch path and its index in the
-- branch, e.g. '0.1:2'); `pos` stays the main branch's position (NULL for branch ops).
ALTER TABLE durable_events ADD COLUMN op text;

-- Cross-run waits are registered on the target's continue-as-new chain (its chain root),
-- so a wait on any link, registered at any moment relative to a hand-over, is woken by the
-- chain's final terminal transaction.
INSERT INTO durable_waiters (target_id, waiter_id)
SELECT DISTINCT r.chain_root_id, w.waiter_id
  FROM durable_waiters w JOIN durable_runs r ON r.id = w.target_id
 WHERE r.chain_root_id <> w.target_id
ON CONFLICT DO NOTHING;
DELETE FROM durable_waiters w USING durable_runs r
 WHERE r.id = w.target_id AND r.chain_root_id <> w.target_id;

-- A wake makes a waiting run due now and notifies, only when its marker changes. Only a
-- run that has started (running or suspended) is woken: a pending run waits for its
-- start time (a delayed start, a retry attempt's backoff); its signals wait in the mailbox.
CREATE OR REPLACE FUNCTION durable_wake(p_id uuid) RETURNS boolean
    LANGUAGE plpgsql AS $$
DECLARE
    v_owner text;
BEGIN
    UPDATE durable_runs
       SET next_wakeup_at = durable_now()
     WHERE id = p_id
       AND status IN ('running', 'suspended')
       AND (next_wakeup_at IS NULL OR next_wakeup_at > durable_now() + (clock_timestamp() - now()))
    RETURNING coalesce(lease_owner, '') INTO v_owner;
    IF FOUND THEN
        PERFORM pg_notify(durable_channel(), p_id::text || '|' || v_owner);
        RETURN true;
    END IF;
    RETURN false;
END
$$;

-- Wake the runs waiting on the chains of p_ids (cross-run waits), in id order.
CREATE FUNCTION durable_wake_waiters(p_ids uuid[]) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM durable_wake(w.waiter_id)
       FROM (SELECT DISTINCT w.waiter_id
               FROM durable_runs r JOIN durable_waiters w ON w.target_id = r.chain_root_id
              WHERE r.id = ANY(p_ids)
              ORDER BY w.waiter_id) w;
END
$$;

-- After any terminal transition: the parent, then cross-run waiters, then outside callers.
CREATE OR REPLACE FUNCTION durable_after_terminal(p_id uuid, p_parent uuid, p_notify_done boolean)
    RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    IF p_parent IS NOT NULL THEN
        PERFORM durable_wake(p_parent);
    END IF;
    PERFORM durable_wake_waiters(ARRAY[p_id]);
    IF p_notify_done THEN
        PERFORM pg_notify(durable_channel(), 'done|' || p_id::text);
    END IF;
END
$$;

-- Ask runs (locked by the caller) to cancel themselves: the flag, a wake, a notification.
CREATE FUNCTION durable_request_cancel(p_ids uuid[]) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    IF cardinality(p_ids) = 0 THEN
        RETURN;
    END IF;
    UPDATE durable_runs SET cancel_requested = true WHERE id = ANY(p_ids);
    PERFORM durable_wake(a) FROM (SELECT a FROM unnest(p_ids) a ORDER BY a) s;
    PERFORM pg_notify(durable_channel(), 'cancel|' || a::text) FROM unnest(p_ids) a;
END
$$;

-- Start children under the parent's lease (now with each child_started event's op).
CREATE OR REPLACE FUNCTION durable_start_children(p_parent uuid, p_token bigint, p_children jsonb)
    RETURNS boolean
    LANGUAGE plpgsql AS $$
DECLARE
    v_parent durable_runs%ROWTYPE;
    v_max_depth integer := coalesce((p_children -> 0 ->> 'max_depth')::int, 10);
    v_conflict record;
    v_queue text;
BEGIN
    SELECT * INTO v_parent FROM durable_runs
     WHERE id = p_parent AND lease_token = p_token AND status = 'running' FOR SHARE;
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
          JOIN durable_runs r ON r.id = c.id
         WHERE r.parent_id IS DISTINCT FROM p_parent OR r.workflow <> c.workflow
    LOOP
        RAISE EXCEPTION USING ERRCODE = 'DU001',
            MESSAGE = format('child id %s is already taken by run of workflow %s (parent %s)',
                             v_conflict.id, v_conflict.workflow, coalesce(v_conflict.parent_id::text, 'none'));
    END LOOP;
    INSERT INTO durable_runs (id, root_id, parent_id, parent_pos, chain_root_id, workflow, version,
                              queue, status, input, depth, retry_policy, parent_close_policy,
                              execution_timeout_s, deadline_at, next_wakeup_at)
    SELECT c.id, v_parent.root_id, p_parent, c.pos, c.id, c.workflow, c.version, c.queue, 'pending',
           coalesce(c.input, 'null'::jsonb), v_parent.depth + 1, c.retry, coalesce(c.policy, 'terminate'),
           c.timeout, durable_now() + make_interval(secs => c.timeout), durable_now()
      FROM jsonb_to_recordset(p_children) AS c(id uuid, workflow text, version int, queue text,
                                                input jsonb, pos int, retry jsonb, policy text,
                                                timeout float8)
     ORDER BY c.id
    ON CONFLICT (id) DO NOTHING;
    INSERT INTO durable_events (run_id, seq, root_id, pos, op, kind, name, data)
    SELECT p_parent, c.seq, v_parent.root_id, c.pos, c.op, 'child_started', c.workflow,
           jsonb_build_object('child_id', c.id, 'hash', c.hash)
      FROM jsonb_to_recordset(p_children) AS c(id uuid, workflow text, pos int, op text, seq int, hash text);
    FOR v_queue IN SELECT DISTINCT c.queue FROM jsonb_to_recordset(p_children) AS c(queue text) LOOP
        PERFORM pg_notify(durable_channel(), 'new|' || v_queue);
    END LOOP;
    RETURN true;
END
$$;

-- Deliver a signal to the live link of a run's chain and wake it. The live link is locked
-- FOR NO KEY UPDATE first (the mode its wake needs), so concurrent senders queue on it
-- instead of deadlocking, and the delivery-id check below is atomic with the insert.
-- "Already delivered" is answered before "finished": a sender re-sending after a crash
-- gets false, not an error. Raises DU003 (unknown run) and DU004 (finished run).
CREATE OR REPLACE FUNCTION durable_send_signal(p_run uuid, p_name text, p_payload jsonb, p_delivery text)
    RETURNS boolean
    LANGUAGE plpgsql AS $$
DECLARE
    v_run durable_runs%ROWTYPE;
    v_id uuid := p_run;
    v_done boolean;
BEGIN
    LOOP
        SELECT * INTO v_run FROM durable_runs WHERE id = v_id;  -- follow the chain unlocked
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'DU003', MESSAGE = format('run %s does not exist', p_run);
        END IF;
        IF v_run.status = 'continued' THEN
            v_id := v_run.continued_to;
            CONTINUE;
        END IF;
        SELECT * INTO v_run FROM durable_runs WHERE id = v_id FOR NO KEY UPDATE;
        EXIT WHEN v_run.status <> 'continued';
        v_id := v_run.continued_to;  -- it continued meanwhile
    END LOOP;
    IF p_delivery IS NOT NULL AND EXISTS (
        SELECT 1 FROM durable_runs r JOIN durable_signals s ON s.run_id = r.id
         WHERE r.chain_root_id = v_run.chain_root_id AND s.delivery_id = p_delivery) THEN
        RETURN false;
    END IF;
    IF v_run.status IN ('completed', 'failed', 'cancelled') THEN
        RAISE EXCEPTION USING ERRCODE = 'DU004',
            MESSAGE = format('run %s is already %s; signals go to running runs only', v_id, v_run.status);
    END IF;
    INSERT INTO durable_signals (run_id, root_id, name, payload, delivery_id)
    VALUES (v_id, v_run.root_id, p_name, p_payload, p_delivery)
    ON CONFLICT (run_id, delivery_id) WHERE delivery_id IS NOT NULL DO NOTHING
    RETURNING false INTO v_done;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM durable_wake(v_id);
    RETURN true;
END
$$;

-- The cascade (see version 2), waking waiters by chain and request-cancelling in id order.
CREATE OR REPLACE FUNCTION durable_cascade(p_ids uuid[], p_reason text, p_child_reason text, p_max_depth integer,
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
        SELECT coalesce(array_agg(g.id) FILTER (WHERE g.parent_close_policy = 'terminate'), '{}'),
               coalesce(array_agg(g.id) FILTER (WHERE g.parent_close_policy = 'request_cancel'), '{}'),
               coalesce(array_agg(DISTINCT g.lease_owner)
                        FILTER (WHERE g.parent_close_policy = 'terminate' AND g.lease_owner IS NOT NULL), '{}')
          INTO v_next, v_ask, v_more
          FROM (SELECT r.id, r.parent_close_policy, r.lease_owner FROM durable_runs r
                 WHERE r.parent_id = ANY(v_gen) AND r.status IN ('pending', 'running', 'suspended')
                   AND r.parent_close_policy <> 'abandon'
                 ORDER BY r.id FOR UPDATE) g;
        PERFORM durable_request_cancel(v_ask);
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
    PERFORM durable_wake_waiters(v_all);
    PERFORM pg_notify(durable_channel(), 'done|' || r.id::text)
       FROM durable_runs r WHERE r.id = ANY(v_all) AND r.notify_done;
    SELECT coalesce(array_agg(DISTINCT o), '{}') INTO v_owners FROM unnest(v_owners) o;
    PERFORM pg_notify(durable_channel(), 'cancel|' || o) FROM unnest(v_owners) o;
    RETURN QUERY SELECT cardinality(v_all), v_truncated, v_owners;
END
$$;

-- Graceful cancel requests through the one request-cancel block.
CREATE OR REPLACE FUNCTION durable_cancel(p_id uuid, p_graceful boolean, p_reason text, p_max_depth integer,
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
            v_id := v_next;
        END IF;
    END LOOP;
    IF v_status NOT IN ('pending', 'running', 'suspended') THEN
        RETURN QUERY SELECT 0, 0, v_status, v_id;
        RETURN;
    END IF;
    IF p_graceful THEN
        PERFORM durable_request_cancel(ARRAY[v_id]);
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

-- ctx.cancel_child, with the event's op (a cancel from a concurrent branch).
DROP FUNCTION durable_cancel_child(uuid, bigint, uuid, boolean, integer, integer, integer);
CREATE FUNCTION durable_cancel_child(p_parent uuid, p_token bigint, p_child uuid, p_graceful boolean,
                                     p_seq integer, p_pos integer, p_op text, p_max_depth integer)
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
    INSERT INTO durable_events (run_id, seq, root_id, pos, op, kind, name, data)
    VALUES (p_parent, p_seq, v_root, p_pos, p_op, 'child_cancel', NULL,
            jsonb_build_object('child_id', p_child, 'graceful', p_graceful, 'cancelled', v_res.cancelled,
                               'truncated', v_res.truncated, 'status_before', v_res.status_before));
    RETURN QUERY SELECT true, v_res.cancelled, v_res.truncated, v_res.status_before;
END
$$;

-- Parent-close policies for a closed (locked) run's in-flight children.
CREATE OR REPLACE FUNCTION durable_close_children(p_id uuid, p_max_depth integer)
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
    PERFORM durable_request_cancel(v_ask);
END
$$;

-- Renew (continue-as-new, retry): waiters stay on the chain root, nothing to move.
CREATE OR REPLACE FUNCTION durable_renew(p_id uuid, p_new uuid, p_workflow text, p_version integer, p_input jsonb,
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
         WHERE id IN (SELECT id FROM durable_runs
                       WHERE parent_id = p_id AND status IN ('pending', 'running', 'suspended')
                       ORDER BY id FOR UPDATE);
    ELSE
        PERFORM durable_close_children(p_id, p_max_depth);
    END IF;
    IF v_run.notify_done THEN
        PERFORM pg_notify(durable_channel(), 'done|' || p_id::text);
    END IF;
    IF p_delay <= 0 THEN
        PERFORM pg_notify(durable_channel(), 'new|' || v_run.queue);
    END IF;
END
$$;

-- The last outcome's event (with its op) and the terminal state in one transaction.
DROP FUNCTION durable_finish_with_event(uuid, bigint, integer, integer, text, text, jsonb, text, jsonb, jsonb, integer);
CREATE FUNCTION durable_finish_with_event(p_id uuid, p_token bigint, p_seq integer, p_pos integer, p_op text,
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
    INSERT INTO durable_events (run_id, seq, root_id, pos, op, kind, name, data)
    VALUES (p_id, p_seq, v_run.root_id, p_pos, p_op, p_kind, p_name, p_data);
    RETURN durable_finish(p_id, p_token, p_status, p_result, p_error, p_max_depth);
END
$$;
