-- The durable schema as its migrations (sql/NNNN_*.sql) leave it: a dump of the catalogs
-- of a freshly migrated schema, schema name left out. Generated; do not edit. After adding a
-- migration: python -m durable.store.schema postgresql://... > sql/schema.sql

CREATE SEQUENCE durable_lease_tokens;

CREATE SEQUENCE durable_signals_id_seq;

CREATE TABLE durable_events (
    run_id uuid NOT NULL,
    seq integer NOT NULL,
    root_id uuid NOT NULL,
    pos integer,
    kind text NOT NULL,
    name text,
    data jsonb,
    created_at timestamp with time zone NOT NULL DEFAULT now(),
    op text,
    CONSTRAINT durable_events_pkey PRIMARY KEY (run_id, seq)
);

CREATE TABLE durable_migrations (
    version integer NOT NULL,
    name text NOT NULL,
    applied_at timestamp with time zone NOT NULL DEFAULT now(),
    checksum text,
    CONSTRAINT durable_migrations_pkey PRIMARY KEY (version)
);

CREATE TABLE durable_runs (
    id uuid NOT NULL,
    root_id uuid NOT NULL,
    parent_id uuid,
    parent_pos integer,
    chain_root_id uuid NOT NULL,
    continued_to uuid,
    workflow text NOT NULL,
    version integer NOT NULL,
    queue text NOT NULL DEFAULT 'default'::text,
    status text NOT NULL,
    input jsonb NOT NULL,
    result jsonb,
    error jsonb,
    idempotency_key text,
    depth integer NOT NULL DEFAULT 0,
    attempt integer NOT NULL DEFAULT 1,
    retry_policy jsonb,
    parent_close_policy text NOT NULL DEFAULT 'terminate'::text,
    execution_timeout_s double precision,
    deadline_at timestamp with time zone,
    cancel_requested boolean NOT NULL DEFAULT false,
    notify_done boolean NOT NULL DEFAULT false,
    lease_owner text,
    lease_token bigint,
    lease_expires_at timestamp with time zone,
    next_wakeup_at timestamp with time zone,
    created_at timestamp with time zone NOT NULL DEFAULT now(),
    started_at timestamp with time zone,
    finished_at timestamp with time zone,
    finish_xid xid8,
    outcome_unread boolean NOT NULL DEFAULT false,
    CONSTRAINT durable_runs_pkey PRIMARY KEY (id),
    CONSTRAINT durable_runs_policy_valid CHECK ((parent_close_policy = ANY (ARRAY['terminate'::text, 'request_cancel'::text, 'abandon'::text]))),
    CONSTRAINT durable_runs_status_valid CHECK ((status = ANY (ARRAY['pending'::text, 'running'::text, 'suspended'::text, 'completed'::text, 'failed'::text, 'cancelled'::text, 'continued'::text])))
);

CREATE TABLE durable_signals (
    id bigint NOT NULL DEFAULT nextval('durable_signals_id_seq'::regclass),
    run_id uuid NOT NULL,
    root_id uuid NOT NULL,
    name text NOT NULL,
    payload jsonb,
    delivery_id text,
    consumed_seq integer,
    created_at timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT durable_signals_pkey PRIMARY KEY (id)
);

CREATE TABLE durable_waiters (
    target_id uuid NOT NULL,
    waiter_id uuid NOT NULL,
    CONSTRAINT durable_waiters_pkey PRIMARY KEY (target_id, waiter_id)
);

CREATE UNIQUE INDEX durable_events_pkey ON durable_events USING btree (run_id, seq);

CREATE UNIQUE INDEX durable_migrations_pkey ON durable_migrations USING btree (version);

CREATE INDEX durable_runs_chain_idx ON durable_runs USING btree (chain_root_id);

CREATE INDEX durable_runs_children_idx ON durable_runs USING btree (parent_id) WHERE (parent_id IS NOT NULL);

CREATE INDEX durable_runs_deadline_idx ON durable_runs USING btree (deadline_at) WHERE ((deadline_at IS NOT NULL) AND (finished_at IS NULL));

CREATE INDEX durable_runs_due_idx ON durable_runs USING btree (queue, next_wakeup_at) WHERE (status = ANY (ARRAY['pending'::text, 'suspended'::text]));

CREATE UNIQUE INDEX durable_runs_idempotency_uniq ON durable_runs USING btree (workflow, idempotency_key) WHERE (idempotency_key IS NOT NULL);

CREATE INDEX durable_runs_lease_expiry_idx ON durable_runs USING btree (lease_expires_at) WHERE (status = 'running'::text);

CREATE UNIQUE INDEX durable_runs_pkey ON durable_runs USING btree (id);

CREATE INDEX durable_runs_retention_idx ON durable_runs USING btree (finished_at) WHERE (finished_at IS NOT NULL);

CREATE INDEX durable_runs_root_idx ON durable_runs USING btree (root_id);

CREATE INDEX durable_runs_unread_children_idx ON durable_runs USING btree (parent_id, finish_xid) WHERE outcome_unread;

CREATE UNIQUE INDEX durable_signals_delivery_uniq ON durable_signals USING btree (run_id, delivery_id) WHERE (delivery_id IS NOT NULL);

CREATE UNIQUE INDEX durable_signals_pkey ON durable_signals USING btree (id);

CREATE INDEX durable_signals_run_idx ON durable_signals USING btree (run_id);

CREATE INDEX durable_signals_unconsumed_idx ON durable_signals USING btree (run_id, name, id) WHERE (consumed_seq IS NULL);

CREATE UNIQUE INDEX durable_waiters_pkey ON durable_waiters USING btree (target_id, waiter_id);

CREATE OR REPLACE FUNCTION durable_after_terminal(p_id uuid, p_parent uuid, p_notify_done boolean)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_root uuid;
BEGIN
    IF p_parent IS NOT NULL THEN
        PERFORM durable_wake(p_parent);
    END IF;
    SELECT chain_root_id INTO v_root FROM durable_runs WHERE id = p_id;
    PERFORM durable_wake(w.waiter_id)
       FROM (SELECT waiter_id FROM durable_waiters WHERE target_id = v_root ORDER BY waiter_id) w;
    IF p_notify_done THEN
        PERFORM pg_notify(durable_channel(), 'done|' || p_id::text);
    END IF;
END
$function$;

CREATE OR REPLACE FUNCTION durable_cancel(p_id uuid, p_graceful boolean, p_reason text, p_max_depth integer, p_wake_parent boolean DEFAULT true)
 RETURNS TABLE(cancelled integer, truncated integer, status_before text, live_id uuid)
 LANGUAGE plpgsql
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION durable_cancel_child(p_parent uuid, p_token bigint, p_child uuid, p_graceful boolean, p_seq integer, p_pos integer, p_op text, p_max_depth integer)
 RETURNS TABLE(ok boolean, cancelled integer, truncated integer, status_before text)
 LANGUAGE plpgsql
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION durable_cascade(p_ids uuid[], p_reason text, p_child_reason text, p_max_depth integer, p_status text DEFAULT 'cancelled'::text, p_error jsonb DEFAULT NULL::jsonb)
 RETURNS TABLE(cancelled integer, truncated integer, owners text[])
 LANGUAGE plpgsql
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION durable_channel()
 RETURNS text
 LANGUAGE sql
 IMMUTABLE
AS $function$SELECT 'durable_wake_<schema>'::text$function$;

CREATE OR REPLACE FUNCTION durable_clear_unread()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    UPDATE durable_runs SET outcome_unread = false WHERE parent_id = NEW.id AND outcome_unread;
    RETURN NULL;
END
$function$;

CREATE OR REPLACE FUNCTION durable_close_children(p_id uuid, p_max_depth integer)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION durable_continue(p_id uuid, p_token bigint, p_new uuid, p_workflow text, p_version integer, p_input jsonb)
 RETURNS boolean
 LANGUAGE plpgsql
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION durable_derived_id(p_id uuid, p_label text)
 RETURNS uuid
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT overlay(overlay(md5(p_id::text || '|' || p_label) PLACING '3' FROM 13 FOR 1)
                   PLACING '8' FROM 17 FOR 1)::uuid
$function$;

CREATE OR REPLACE FUNCTION durable_expire_runs(p_limit integer, p_max_depth integer)
 RETURNS integer
 LANGUAGE plpgsql
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION durable_finish(p_id uuid, p_token bigint, p_status text, p_result jsonb, p_error jsonb, p_max_depth integer DEFAULT 10)
 RETURNS text
 LANGUAGE plpgsql
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION durable_finish_run(p_id uuid, p_token bigint, p_status text, p_result jsonb, p_error jsonb, p_max_depth integer DEFAULT 10)
 RETURNS boolean
 LANGUAGE sql
AS $function$
    SELECT durable_finish(p_id, p_token, p_status, p_result, p_error, p_max_depth) <> 'lost'
$function$;

CREATE OR REPLACE FUNCTION durable_finish_with_event(p_id uuid, p_token bigint, p_seq integer, p_pos integer, p_op text, p_kind text, p_name text, p_data jsonb, p_status text, p_result jsonb, p_error jsonb, p_max_depth integer)
 RETURNS text
 LANGUAGE plpgsql
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION durable_flag_unread()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    NEW.outcome_unread := true;
    RETURN NEW;
END
$function$;

CREATE OR REPLACE FUNCTION durable_lock_live(p_id uuid, p_token bigint)
 RETURNS durable_runs
 LANGUAGE plpgsql
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION durable_now()
 RETURNS timestamp with time zone
 LANGUAGE sql
 STABLE
AS $function$ SELECT now() $function$;

CREATE OR REPLACE FUNCTION durable_renew(p_id uuid, p_new uuid, p_workflow text, p_version integer, p_input jsonb, p_attempt integer, p_delay double precision, p_error jsonb, p_owner text, p_move_children boolean, p_max_depth integer)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION durable_request_cancel(p_ids uuid[])
 RETURNS void
 LANGUAGE plpgsql
AS $function$
BEGIN
    IF cardinality(p_ids) = 0 THEN
        RETURN;
    END IF;
    UPDATE durable_runs SET cancel_requested = true WHERE id = ANY(p_ids);
    PERFORM durable_wake(a) FROM (SELECT a FROM unnest(p_ids) a ORDER BY a) s;
    PERFORM pg_notify(durable_channel(), 'cancel|' || a::text) FROM unnest(p_ids) a;
END
$function$;

CREATE OR REPLACE FUNCTION durable_send_signal(p_run uuid, p_name text, p_payload jsonb, p_delivery text)
 RETURNS boolean
 LANGUAGE plpgsql
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION durable_start_children(p_parent uuid, p_token bigint, p_children jsonb)
 RETURNS boolean
 LANGUAGE plpgsql
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION durable_wake(p_id uuid)
 RETURNS boolean
 LANGUAGE plpgsql
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION durable_wake_waiters(p_ids uuid[])
 RETURNS void
 LANGUAGE plpgsql
AS $function$
BEGIN
    PERFORM durable_wake(w.waiter_id)
       FROM (SELECT DISTINCT w.waiter_id
               FROM durable_runs r JOIN durable_waiters w ON w.target_id = r.chain_root_id
              WHERE r.id = ANY(p_ids)
              ORDER BY w.waiter_id) w;
END
$function$;

CREATE TRIGGER durable_runs_clear_unread AFTER UPDATE OF status ON durable_runs FOR EACH ROW WHEN (((new.status = ANY (ARRAY['completed'::text, 'failed'::text, 'cancelled'::text, 'continued'::text])) AND (old.status = ANY (ARRAY['pending'::text, 'running'::text, 'suspended'::text])))) EXECUTE FUNCTION durable_clear_unread();

CREATE TRIGGER durable_runs_flag_unread BEFORE UPDATE OF status ON durable_runs FOR EACH ROW WHEN (((new.parent_id IS NOT NULL) AND (new.status = ANY (ARRAY['completed'::text, 'failed'::text, 'cancelled'::text])) AND (old.status IS DISTINCT FROM new.status))) EXECUTE FUNCTION durable_flag_unread();
