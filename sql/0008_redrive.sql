-- durable schema, version 8: re-driving runs (resume, restart, fork).
--
-- resume: a failed or cancelled (or timed-out: failed with WorkflowTimeoutError) top-level
-- run continues under its own id. Its history is kept whole: the resume transaction appends
-- a 'resumed' event (no operation key) whose data names the first superseded seq; every
-- event from that seq up to the marker is superseded, i.e. kept for `durable show` but
-- skipped by replay (durable/runtime/journal.py: replayable). The superseded tail starts at
-- the run's first failure that replay would raise again: a failed step (with its retry
-- waits), a failed or cancelled child's outcome, a failed cross-run wait, an observed cancel
-- request. Children that ended failed or cancelled and whose outcome the kept history does
-- not hold re-run as a new attempt, exactly like a child retried by its retry policy
-- (durable_renew: the child becomes 'continued', its successor has a derived id and
-- attempt + 1; the parent's fan-in follows the chain).
--
-- restart and fork: a new top-level run (its own tree) of the same workflow, version, queue
-- and input; fork copies the first N events of the history (N as `durable show` numbers
-- them), renumbered, without resume markers and superseded events. origin_id / origin_kind /
-- origin_at say where a run came from (immutable, unindexed: run updates stay HOT).
--
-- Lock order as in 0007: the run before its children (by id), a run's row before its rows in
-- durable_due, durable_deadlines, durable_outcomes. Refusals raise (nothing written):
--   DU003 unknown run, DU081 not resumable (its status), DU082 a child run (resume the root),
--   DU083 fork position past the history.

ALTER TABLE durable_runs ADD COLUMN origin_id uuid;      -- restart/fork: the run this one was made from
ALTER TABLE durable_runs ADD COLUMN origin_kind text;    -- 'restart' or 'fork'
ALTER TABLE durable_runs ADD COLUMN origin_at integer;   -- fork: how many events of the origin's history

-- Resume the live link of p_id's chain (see the top of this file). Returns the run resumed,
-- its status before, the first superseded seq (superseded: how many events), the children
-- re-run (their failed links; the new attempts have derived ids) and the resume marker's seq.
CREATE FUNCTION durable_resume(p_id uuid, p_max_depth integer)
    RETURNS TABLE (run_id uuid, tree_key bigint, workflow text, queue text, previous_status text,
                   superseded_from integer, superseded integer, rerun uuid[], marker_seq integer)
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_key bigint := durable_key_of(p_id);
    v_now timestamptz := durable_now();
    v_id uuid := p_id;
    v_run durable_runs%ROWTYPE;
    v_root durable_runs%ROWTYPE;
    v_from integer[];
    v_to integer[];
    v_last integer;
    v_cut integer;
    v_kept text[];
    v_child durable_runs%ROWTYPE;
    v_rerun uuid[] := '{}';
    v_new uuid;
    v_deadline timestamptz;
BEGIN
    LOOP  -- the live link of the chain (continue-as-new), read without a lock
        SELECT * INTO v_run FROM durable_runs r WHERE r.tree_key = v_key AND r.id = v_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'DU003', MESSAGE = format('run %s does not exist', p_id);
        END IF;
        EXIT WHEN v_run.status <> 'continued' OR v_run.continued_to IS NULL;
        v_id := v_run.continued_to;
    END LOOP;
    IF v_run.parent_id IS NOT NULL THEN
        SELECT * INTO v_root FROM durable_runs r WHERE r.tree_key = v_key AND r.id = v_run.root_id;
        RAISE EXCEPTION USING ERRCODE = 'DU082',
            MESSAGE = format('run %s is a child (of run %s); a child is re-run by resuming its tree''s root run %s '
                             '(now %s), which re-runs every failed or cancelled child it still needs as a new '
                             'attempt; if the root has completed, restart or fork the root instead',
                             p_id, v_run.parent_id, v_run.root_id, coalesce(v_root.status, 'deleted'));
    END IF;
    SELECT * INTO v_run FROM durable_runs r WHERE r.tree_key = v_key AND r.id = v_id FOR UPDATE;
    IF v_run.status NOT IN ('failed', 'cancelled') THEN
        RAISE EXCEPTION USING ERRCODE = 'DU081', DETAIL = v_run.status,
            MESSAGE = format('run %s is %s%s', v_id, v_run.status,
                             CASE WHEN p_id <> v_id THEN format(' (the live link of run %s''s chain)', p_id) ELSE '' END);
    END IF;

    -- the ranges earlier resumes superseded: [superseded_from, marker seq)
    SELECT coalesce(array_agg((e.data ->> 'superseded_from')::integer ORDER BY e.seq), '{}'),
           coalesce(array_agg(e.seq ORDER BY e.seq), '{}')
      INTO v_from, v_to
      FROM durable_events e WHERE e.tree_key = v_key AND e.run_id = v_id AND e.kind = 'resumed';
    SELECT coalesce(max(e.seq), 0) INTO v_last FROM durable_events e WHERE e.tree_key = v_key AND e.run_id = v_id;
    -- the first failure replay would raise again (a failed step from its first retry wait on)
    WITH live AS (
        SELECT e.seq, e.pos, e.op, e.kind, e.data FROM durable_events e
         WHERE e.tree_key = v_key AND e.run_id = v_id
           AND e.kind IN ('step_failed', 'step_retry', 'child_failed', 'child_cancelled', 'cancel_observed',
                          'run_outcome')
           AND NOT EXISTS (SELECT 1 FROM unnest(v_from, v_to) s(f, t) WHERE e.seq >= s.f AND e.seq < s.t)
    )
    SELECT min(l.seq) INTO v_cut FROM live l
     WHERE l.kind IN ('child_failed', 'child_cancelled', 'cancel_observed')
        OR (l.kind = 'run_outcome' AND (l.data ->> 'status') IS DISTINCT FROM 'completed')
        OR (l.kind IN ('step_failed', 'step_retry')
            AND EXISTS (SELECT 1 FROM live f WHERE f.kind = 'step_failed' AND f.pos IS NOT DISTINCT FROM l.pos
                                                AND f.op IS NOT DISTINCT FROM l.op));
    v_cut := coalesce(v_cut, v_last + 1);
    -- the children whose outcome the kept history holds (their chain ids)
    SELECT coalesce(array_agg(e.data ->> 'run_id'), '{}') INTO v_kept
      FROM durable_events e
     WHERE e.tree_key = v_key AND e.run_id = v_id AND e.seq < v_cut
       AND e.kind IN ('child_completed', 'child_failed', 'child_cancelled')
       AND NOT EXISTS (SELECT 1 FROM unnest(v_from, v_to) s(f, t) WHERE e.seq >= s.f AND e.seq < s.t);

    -- failed or cancelled children it still needs: a new attempt each (the retry mechanism)
    FOR v_child IN
        SELECT * FROM durable_runs c
         WHERE c.tree_key = v_key AND c.parent_id = v_id AND c.status IN ('failed', 'cancelled')
           AND NOT (c.chain_root_id::text = ANY(v_kept))
         ORDER BY c.id FOR UPDATE
    LOOP
        v_new := durable_derived_id(v_child.id, 'retry', v_child.grafted);
        PERFORM durable_renew(v_key, v_child.id, v_new, v_child.workflow, v_child.version, v_child.input,
                              coalesce(v_child.attempt, 1) + 1, 0, v_child.error, NULL, false, p_max_depth);
        -- a new attempt of a re-driven child: no cancel request, a fresh execution timeout
        v_deadline := CASE WHEN v_child.execution_timeout_s IS NOT NULL
                           THEN v_now + make_interval(secs => v_child.execution_timeout_s) END;
        UPDATE durable_runs SET cancel_requested = false, deadline_at = v_deadline
         WHERE durable_runs.tree_key = v_key AND id = v_new;
        IF v_deadline IS NOT NULL THEN
            INSERT INTO durable_deadlines AS d (tree_key, run_id, deadline_at) VALUES (v_key, v_new, v_deadline)
            ON CONFLICT (tree_key, run_id) DO UPDATE SET deadline_at = EXCLUDED.deadline_at;
        END IF;
        v_rerun := v_rerun || v_child.id;
    END LOOP;

    -- outcomes the run will read again: every ended child whose outcome the kept history lacks
    DELETE FROM durable_outcomes o WHERE o.tree_key = v_key AND o.parent_id = v_id;
    INSERT INTO durable_outcomes (tree_key, parent_id, run_id, finished_at)
    SELECT c.tree_key, c.parent_id, c.id, c.finished_at FROM durable_runs c
     WHERE c.tree_key = v_key AND c.parent_id = v_id AND c.status IN ('completed', 'failed', 'cancelled')
       AND NOT (c.chain_root_id::text = ANY(v_kept))
     ORDER BY c.finished_at, c.id;

    -- the run itself: due now, a new lease epoch (a stale executor's writes are refused);
    -- 'suspended' rather than 'pending', so that its claim reads its history (durable_claim)
    v_deadline := CASE WHEN v_run.execution_timeout_s IS NOT NULL
                       THEN v_now + make_interval(secs => v_run.execution_timeout_s) END;
    UPDATE durable_runs
       SET status = 'suspended', result = NULL, error = NULL, finished_at = NULL, cancel_requested = false,
           lease_owner = NULL, lease_epoch = v_run.lease_epoch + 1, next_wakeup_at = v_now, deadline_at = v_deadline
     WHERE durable_runs.tree_key = v_key AND id = v_id;
    PERFORM durable_set_due(v_key, v_id, v_run.queue, v_run.workflow || ':' || v_run.version, v_now, NULL, false);
    IF v_deadline IS NOT NULL THEN
        INSERT INTO durable_deadlines AS d (tree_key, run_id, deadline_at) VALUES (v_key, v_id, v_deadline)
        ON CONFLICT (tree_key, run_id) DO UPDATE SET deadline_at = EXCLUDED.deadline_at;
    END IF;
    INSERT INTO durable_events (tree_key, run_id, seq, root_id, pos, op, kind, name, data)
    SELECT r.tree_key, r.id, v_last + 1, r.root_id, NULL, NULL, 'resumed', v_run.status,
           jsonb_build_object('previous_status', v_run.status, 'previous_error', v_run.error,
                              'superseded_from', v_cut, 'superseded', v_last + 1 - v_cut,
                              'rerun_children', to_jsonb(v_rerun), 'resume', cardinality(v_to) + 1)
      FROM durable_runs r WHERE r.tree_key = v_key AND r.id = v_id;
    PERFORM pg_notify(durable_channel(), 'new|' || v_run.queue);
    RETURN QUERY SELECT v_id, v_key, v_run.workflow, v_run.queue, v_run.status, v_cut, v_last + 1 - v_cut, v_rerun,
                        v_last + 1;
END
$$;

-- A new top-level run p_new of p_id's workflow, version, queue, input and execution timeout,
-- whose history is the first p_at events of p_id's (p_kind 'restart' with p_at 0, or
-- 'fork'). Superseded events and resume markers are left out; a child whose start is in the
-- prefix but whose outcome is not is left out too (it re-runs as a new child of the fork),
-- as is a cross-run wait without its outcome (registered again). A kept child's start is
-- marked forked_from (replay accepts its id, which derives from the origin run). Returns the
-- new run and how many events it got.
CREATE FUNCTION durable_fork(p_id uuid, p_at integer, p_new uuid, p_kind text)
    RETURNS TABLE (run_id uuid, tree_key bigint, workflow text, queue text, copied integer, history_length integer)
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_key bigint := durable_key_of(p_id);
    v_new_key bigint := durable_tree_key(p_new);
    v_now timestamptz := durable_now();
    v_src durable_runs%ROWTYPE;
    v_from integer[];
    v_to integer[];
    v_last integer;
    v_deadline timestamptz;
    v_copied integer := 0;
BEGIN
    SELECT * INTO v_src FROM durable_runs r WHERE r.tree_key = v_key AND r.id = p_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'DU003', MESSAGE = format('run %s does not exist', p_id);
    END IF;
    SELECT coalesce(max(e.seq), 0) INTO v_last FROM durable_events e WHERE e.tree_key = v_key AND e.run_id = p_id;
    IF p_at > v_last THEN
        RAISE EXCEPTION USING ERRCODE = 'DU083', DETAIL = v_last::text,
            MESSAGE = format('run %s has %s events in its history (positions 1..%s as durable show numbers them); '
                             'cannot fork at %s', p_id, v_last, v_last, p_at);
    END IF;
    v_deadline := CASE WHEN v_src.execution_timeout_s IS NOT NULL
                       THEN v_now + make_interval(secs => v_src.execution_timeout_s) END;
    INSERT INTO durable_runs (tree_key, id, root_id, chain_root_id, workflow, version, queue, status, input,
                              execution_timeout_s, deadline_at, next_wakeup_at, origin_id, origin_kind, origin_at)
    -- (with a history: 'suspended', due now, so that its claim reads the history)
    VALUES (v_new_key, p_new, p_new, p_new, v_src.workflow, v_src.version, v_src.queue,
            CASE WHEN p_at > 0 THEN 'suspended' ELSE 'pending' END, v_src.input,
            v_src.execution_timeout_s, v_deadline, v_now, p_id, p_kind, p_at);
    PERFORM durable_set_due(v_new_key, p_new, v_src.queue, v_src.workflow || ':' || v_src.version, v_now, NULL, false);
    IF v_deadline IS NOT NULL THEN
        INSERT INTO durable_deadlines (tree_key, run_id, deadline_at) VALUES (v_new_key, p_new, v_deadline);
    END IF;
    IF p_at > 0 THEN
        SELECT coalesce(array_agg((e.data ->> 'superseded_from')::integer ORDER BY e.seq), '{}'),
               coalesce(array_agg(e.seq ORDER BY e.seq), '{}')
          INTO v_from, v_to
          FROM durable_events e WHERE e.tree_key = v_key AND e.run_id = p_id AND e.kind = 'resumed';
        WITH src AS (
            SELECT e.seq, e.pos, e.op, e.kind, e.name, e.data FROM durable_events e
             WHERE e.tree_key = v_key AND e.run_id = p_id AND e.seq <= p_at AND e.kind <> 'resumed'
               AND NOT EXISTS (SELECT 1 FROM unnest(v_from, v_to) s(f, t) WHERE e.seq >= s.f AND e.seq < s.t)
        ), ended AS (  -- chains whose outcome the prefix holds
            SELECT o.data ->> 'run_id' AS id FROM src o
             WHERE o.kind IN ('child_completed', 'child_failed', 'child_cancelled', 'run_outcome')
        ), kept AS (
            SELECT f.* FROM src f
             WHERE NOT (f.kind = 'child_started' AND (f.data ->> 'child_id') NOT IN (SELECT id FROM ended))
               AND NOT (f.kind = 'wait_started' AND (f.data ->> 'chain_root_id') NOT IN (SELECT id FROM ended))
        )
        INSERT INTO durable_events (tree_key, run_id, seq, root_id, pos, op, kind, name, data)
        SELECT v_new_key, p_new, (row_number() OVER (ORDER BY k.seq))::integer, p_new, k.pos, k.op, k.kind, k.name,
               CASE WHEN k.kind = 'child_started' THEN k.data || jsonb_build_object('forked_from', p_id::text)
                    ELSE k.data END
          FROM kept k;
        GET DIAGNOSTICS v_copied = ROW_COUNT;
    END IF;
    PERFORM pg_notify(durable_channel(), 'new|' || v_src.queue);
    RETURN QUERY SELECT p_new, v_new_key, v_src.workflow, v_src.queue, v_copied, v_last;
END
$$;
