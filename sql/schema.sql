-- The durable schema as its migrations (sql/NNNN_*.sql) leave it: a dump of the catalogs
-- of a freshly migrated schema, schema name left out. Generated; do not edit. After adding a
-- migration: python -m durable.store.schema postgresql://... > sql/schema.sql

CREATE SEQUENCE durable_outcomes_seq_seq;

CREATE SEQUENCE durable_signals_id_seq;

CREATE TABLE durable_deadlines (
    tree_key bigint NOT NULL,
    run_id uuid NOT NULL,
    deadline_at timestamp with time zone NOT NULL,
    CONSTRAINT durable_deadlines_pkey PRIMARY KEY (tree_key, run_id)
) WITH (autovacuum_vacuum_scale_factor=0.02);

CREATE TABLE durable_due (
    tree_key bigint NOT NULL,
    run_id uuid NOT NULL,
    queue text NOT NULL,
    workflow text NOT NULL,
    due_at timestamp with time zone,
    owner text,
    leased boolean NOT NULL DEFAULT false,
    CONSTRAINT durable_due_pkey PRIMARY KEY (tree_key, run_id)
) WITH (fillfactor=70, autovacuum_vacuum_scale_factor=0.01, autovacuum_vacuum_threshold=1000, autovacuum_analyze_scale_factor=0.01);

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
    tree_key bigint NOT NULL,
    CONSTRAINT durable_events_pkey PRIMARY KEY (tree_key, run_id, seq)
);

CREATE TABLE durable_migrations (
    version integer NOT NULL,
    name text NOT NULL,
    applied_at timestamp with time zone NOT NULL DEFAULT now(),
    checksum text,
    CONSTRAINT durable_migrations_pkey PRIMARY KEY (version)
);

CREATE TABLE durable_outcomes (
    tree_key bigint NOT NULL,
    parent_id uuid NOT NULL,
    run_id uuid NOT NULL,
    finished_at timestamp with time zone NOT NULL,
    seq bigint NOT NULL DEFAULT nextval('durable_outcomes_seq_seq'::regclass),
    CONSTRAINT durable_outcomes_pkey PRIMARY KEY (tree_key, parent_id, run_id)
) WITH (autovacuum_vacuum_scale_factor=0.01, autovacuum_vacuum_threshold=1000);

CREATE TABLE durable_run_keys (
    id uuid NOT NULL,
    tree_key bigint NOT NULL,
    CONSTRAINT durable_run_keys_pkey PRIMARY KEY (id)
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
    next_wakeup_at timestamp with time zone,
    created_at timestamp with time zone NOT NULL DEFAULT now(),
    started_at timestamp with time zone,
    finished_at timestamp with time zone,
    tree_key bigint NOT NULL,
    lease_epoch integer NOT NULL DEFAULT 0,
    grafted boolean NOT NULL DEFAULT true,
    origin_id uuid,
    origin_kind text,
    origin_at integer,
    attributes jsonb,
    child_key text,
    CONSTRAINT durable_runs_pkey PRIMARY KEY (tree_key, id),
    CONSTRAINT durable_runs_policy_valid CHECK ((parent_close_policy = ANY (ARRAY['terminate'::text, 'request_cancel'::text, 'abandon'::text]))),
    CONSTRAINT durable_runs_status_valid CHECK ((status = ANY (ARRAY['pending'::text, 'running'::text, 'suspended'::text, 'completed'::text, 'failed'::text, 'cancelled'::text, 'continued'::text])))
) WITH (fillfactor=85, autovacuum_vacuum_scale_factor=0.02, autovacuum_analyze_scale_factor=0.02, autovacuum_vacuum_insert_scale_factor=0.05);

CREATE TABLE durable_schedules (
    id text NOT NULL,
    workflow text NOT NULL,
    version integer NOT NULL DEFAULT 1,
    queue text NOT NULL DEFAULT 'default'::text,
    input jsonb NOT NULL DEFAULT 'null'::jsonb,
    cron text,
    every_s double precision,
    timezone text NOT NULL DEFAULT 'UTC'::text,
    overlap text NOT NULL DEFAULT 'skip'::text,
    catchup_window_s double precision NOT NULL DEFAULT 60,
    paused boolean NOT NULL DEFAULT false,
    declared boolean NOT NULL DEFAULT false,
    next_fire_at timestamp with time zone NOT NULL,
    due_at timestamp with time zone,
    buffered_at timestamp with time zone,
    last_fire_at timestamp with time zone,
    last_run_id uuid,
    last_run_key bigint,
    fired bigint NOT NULL DEFAULT 0,
    skipped bigint NOT NULL DEFAULT 0,
    missed bigint NOT NULL DEFAULT 0,
    note text NOT NULL DEFAULT ''::text,
    created_at timestamp with time zone NOT NULL DEFAULT now(),
    updated_at timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT durable_schedules_one_spec CHECK (((cron IS NULL) <> (every_s IS NULL))),
    CONSTRAINT durable_schedules_overlap_valid CHECK ((overlap = ANY (ARRAY['skip'::text, 'buffer_one'::text, 'allow_all'::text, 'cancel_previous'::text]))),
    CONSTRAINT durable_schedules_paused_not_due CHECK (((NOT paused) OR (due_at IS NULL))),
    CONSTRAINT durable_schedules_pkey PRIMARY KEY (id)
);

CREATE TABLE durable_search_keys (
    key text NOT NULL,
    first_seen timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT durable_search_keys_pkey PRIMARY KEY (key)
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
    tree_key bigint NOT NULL,
    CONSTRAINT durable_signals_pkey PRIMARY KEY (tree_key, id)
);

CREATE TABLE durable_waiters (
    target_id uuid NOT NULL,
    waiter_id uuid NOT NULL,
    tree_key bigint NOT NULL,
    waiter_key bigint NOT NULL,
    CONSTRAINT durable_waiters_pkey PRIMARY KEY (tree_key, target_id, waiter_id)
);

CREATE TABLE durable_workers (
    owner text NOT NULL,
    host text NOT NULL,
    pid integer NOT NULL,
    queues text[] NOT NULL,
    workflows text[] NOT NULL,
    concurrency integer NOT NULL,
    started_at timestamp with time zone NOT NULL DEFAULT now(),
    seen_at timestamp with time zone NOT NULL DEFAULT now(),
    expires_at timestamp with time zone NOT NULL,
    CONSTRAINT durable_workers_pkey PRIMARY KEY (owner)
);

CREATE TABLE durable_workflows (
    name text NOT NULL,
    version integer NOT NULL,
    queue text NOT NULL,
    takes_input boolean NOT NULL,
    input_schema jsonb,
    result_schema jsonb,
    execution_timeout_s double precision,
    registered_by text NOT NULL,
    updated_at timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT durable_workflows_pkey PRIMARY KEY (name)
);

CREATE INDEX durable_deadlines_at_idx ON durable_deadlines USING btree (deadline_at);

CREATE UNIQUE INDEX durable_deadlines_pkey ON durable_deadlines USING btree (tree_key, run_id);

CREATE INDEX durable_due_leased_idx ON durable_due USING btree (owner) WHERE leased;

CREATE UNIQUE INDEX durable_due_pkey ON durable_due USING btree (tree_key, run_id);

CREATE INDEX durable_due_waiting_idx ON durable_due USING btree (queue, due_at) WHERE (NOT leased);

CREATE UNIQUE INDEX durable_events_pkey ON durable_events USING btree (tree_key, run_id, seq);

CREATE UNIQUE INDEX durable_migrations_pkey ON durable_migrations USING btree (version);

CREATE UNIQUE INDEX durable_outcomes_pkey ON durable_outcomes USING btree (tree_key, parent_id, run_id);

CREATE INDEX durable_outcomes_seq_idx ON durable_outcomes USING btree (tree_key, parent_id, seq);

CREATE UNIQUE INDEX durable_run_keys_pkey ON durable_run_keys USING btree (id);

CREATE INDEX durable_run_keys_tree_idx ON durable_run_keys USING btree (tree_key);

CREATE INDEX durable_runs_attributes_idx ON durable_runs USING gin (attributes jsonb_path_ops) WHERE (attributes IS NOT NULL);

CREATE INDEX durable_runs_chain_idx ON durable_runs USING btree (tree_key, chain_root_id);

CREATE INDEX durable_runs_children_idx ON durable_runs USING btree (tree_key, parent_id) WHERE (parent_id IS NOT NULL);

CREATE INDEX durable_runs_created_id_idx ON durable_runs USING btree (created_at, id);

CREATE UNIQUE INDEX durable_runs_idempotency_uniq ON durable_runs USING btree (tree_key, workflow, idempotency_key) WHERE (idempotency_key IS NOT NULL);

CREATE UNIQUE INDEX durable_runs_pkey ON durable_runs USING btree (tree_key, id);

CREATE INDEX durable_runs_queue_idx ON durable_runs USING btree (queue, created_at, id);

CREATE INDEX durable_runs_roots_created_idx ON durable_runs USING btree (created_at, id) WHERE (parent_id IS NULL);

CREATE INDEX durable_runs_workflow_idx ON durable_runs USING btree (workflow text_pattern_ops, created_at, id);

CREATE INDEX durable_schedules_due_idx ON durable_schedules USING btree (due_at) WHERE (due_at IS NOT NULL);

CREATE UNIQUE INDEX durable_schedules_pkey ON durable_schedules USING btree (id);

CREATE UNIQUE INDEX durable_search_keys_pkey ON durable_search_keys USING btree (key);

CREATE UNIQUE INDEX durable_signals_delivery_uniq ON durable_signals USING btree (tree_key, run_id, delivery_id) WHERE (delivery_id IS NOT NULL);

CREATE UNIQUE INDEX durable_signals_pkey ON durable_signals USING btree (tree_key, id);

CREATE INDEX durable_signals_run_idx ON durable_signals USING btree (tree_key, run_id);

CREATE INDEX durable_signals_unconsumed_idx ON durable_signals USING btree (tree_key, run_id, name, id) WHERE (consumed_seq IS NULL);

CREATE UNIQUE INDEX durable_waiters_pkey ON durable_waiters USING btree (tree_key, target_id, waiter_id);

CREATE UNIQUE INDEX durable_workers_pkey ON durable_workers USING btree (owner);

CREATE UNIQUE INDEX durable_workflows_pkey ON durable_workflows USING btree (name);

CREATE OR REPLACE FUNCTION durable_after_terminal(p_key bigint, p_id uuid, p_parent uuid, p_chain uuid, p_notify_done boolean, p_finished timestamp with time zone)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_at timestamptz := durable_clock();
    v_waiter record;
BEGIN
    IF p_parent IS NOT NULL THEN
        INSERT INTO durable_outcomes (tree_key, parent_id, run_id, finished_at)
        VALUES (p_key, p_parent, p_id, p_finished) ON CONFLICT DO NOTHING;
        PERFORM durable_wake(p_key, p_parent, v_at);
    END IF;
    FOR v_waiter IN SELECT w.waiter_key, w.waiter_id FROM durable_waiters w
                     WHERE w.tree_key = p_key AND w.target_id = p_chain ORDER BY w.waiter_id LOOP
        PERFORM durable_wake(v_waiter.waiter_key, v_waiter.waiter_id, v_at);
    END LOOP;
    IF p_notify_done THEN
        PERFORM pg_notify(durable_channel(), 'done|' || p_id::text);
    END IF;
END
$function$;

CREATE OR REPLACE FUNCTION durable_append(p_key bigint, p_id uuid, p_epoch integer, p_seqs integer[], p_pos integer[], p_ops text[], p_kinds text[], p_names text[], p_data jsonb[])
 RETURNS boolean
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_root uuid;
    v_written integer;
BEGIN
    SELECT root_id INTO v_root FROM durable_runs
     WHERE tree_key = p_key AND id = p_id AND lease_epoch = p_epoch AND status = 'running' FOR SHARE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    WITH ins AS (  -- (selected from the run's row: on Citus it runs whole on the tree's shard)
        INSERT INTO durable_events (tree_key, run_id, seq, root_id, pos, op, kind, name, data)
        SELECT r.tree_key, r.id, e.seq, r.root_id, e.pos, e.op, e.kind, e.name, e.data
          FROM durable_runs r
         CROSS JOIN unnest(p_seqs, p_pos, p_ops, p_kinds, p_names, p_data) AS e(seq, pos, op, kind, name, data)
         WHERE r.tree_key = p_key AND r.id = p_id
            ON CONFLICT DO NOTHING
        RETURNING 1)
    SELECT count(*) INTO v_written FROM ins;  -- (Citus's ROW_COUNT counts the rows sent, not those written)
    IF v_written < cardinality(p_seqs) THEN
        -- (raised here, not left to the unique index: Citus reports a worker's unique
        -- violation as an internal error, and this says which write it was)
        RAISE EXCEPTION USING ERRCODE = 'DU005',
            MESSAGE = format('run %s: journal seqs %s..%s are taken in part', p_id, p_seqs[1],
                             p_seqs[cardinality(p_seqs)]);
    END IF;
    RETURN true;
END
$function$;

CREATE OR REPLACE FUNCTION durable_append_timer(p_key bigint, p_id uuid, p_epoch integer, p_seq integer, p_pos integer, p_op text, p_kind text, p_name text, p_data jsonb, p_delay double precision)
 RETURNS double precision
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_fire double precision := extract(epoch FROM durable_now() + make_interval(secs => p_delay))::float8;
BEGIN
    IF NOT durable_append(p_key, p_id, p_epoch, ARRAY[p_seq], ARRAY[p_pos], ARRAY[p_op], ARRAY[p_kind],
                          ARRAY[p_name], ARRAY[p_data || jsonb_build_object('fire_at', v_fire)]) THEN
        RETURN NULL;
    END IF;
    RETURN v_fire;
END
$function$;

CREATE OR REPLACE FUNCTION durable_cancel(p_id uuid, p_graceful boolean, p_reason text, p_max_depth integer, p_wake_parent boolean DEFAULT true)
 RETURNS TABLE(cancelled integer, truncated integer, status_before text, live_id uuid)
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_key bigint := durable_key_of(p_id);
    v_id uuid := p_id;
    v_parent uuid;
    v_status text;
    v_next uuid;
    v_res record;
    v_now timestamptz := durable_now();
BEGIN
    LOOP
        SELECT r.parent_id, r.status, r.continued_to INTO v_parent, v_status, v_next
          FROM durable_runs r WHERE r.tree_key = v_key AND r.id = v_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'DU003', MESSAGE = format('run %s does not exist', p_id);
        END IF;
        IF v_status = 'continued' THEN
            v_id := v_next;
            CONTINUE;
        END IF;
        IF v_parent IS NOT NULL THEN
            PERFORM 1 FROM durable_runs WHERE tree_key = v_key AND id = v_parent FOR KEY SHARE;
        END IF;
        SELECT r.status, r.continued_to INTO v_status, v_next FROM durable_runs r
         WHERE r.tree_key = v_key AND r.id = v_id AND r.parent_id IS NOT DISTINCT FROM v_parent FOR UPDATE;
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
        PERFORM durable_request_cancel(v_key, ARRAY[v_id]);
        RETURN QUERY SELECT 0, 0, v_status, v_id;
        RETURN;
    END IF;
    SELECT * INTO v_res FROM durable_cascade(v_key, ARRAY[v_id], p_reason, 'parent_cancelled', p_max_depth);
    IF v_parent IS NOT NULL THEN
        INSERT INTO durable_outcomes (tree_key, parent_id, run_id, finished_at)
        VALUES (v_key, v_parent, v_id, v_now) ON CONFLICT DO NOTHING;
        IF p_wake_parent THEN
            PERFORM durable_wake(v_key, v_parent, durable_clock());
        END IF;
    END IF;
    RETURN QUERY SELECT v_res.cancelled, v_res.truncated, v_status, v_id;
END
$function$;

CREATE OR REPLACE FUNCTION durable_cancel_child(p_key bigint, p_parent uuid, p_epoch integer, p_child uuid, p_graceful boolean, p_seq integer, p_pos integer, p_op text, p_max_depth integer)
 RETURNS TABLE(ok boolean, cancelled integer, truncated integer, status_before text)
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_root uuid;
    v_res record;
BEGIN
    SELECT r.root_id INTO v_root FROM durable_runs r
     WHERE r.tree_key = p_key AND r.id = p_parent AND r.lease_epoch = p_epoch AND r.status = 'running'
       FOR KEY SHARE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT false, 0, 0, NULL::text;
        RETURN;
    END IF;
    SELECT * INTO v_res FROM durable_cancel(p_child, p_graceful, 'cancelled_by_parent', p_max_depth, false);
    INSERT INTO durable_events (tree_key, run_id, seq, root_id, pos, op, kind, name, data)
    VALUES (p_key, p_parent, p_seq, v_root, p_pos, p_op, 'child_cancel', NULL,
            jsonb_build_object('child_id', p_child, 'graceful', p_graceful, 'cancelled', v_res.cancelled,
                               'truncated', v_res.truncated, 'status_before', v_res.status_before));
    RETURN QUERY SELECT true, v_res.cancelled, v_res.truncated, v_res.status_before;
END
$function$;

CREATE OR REPLACE FUNCTION durable_cascade(p_key bigint, p_ids uuid[], p_reason text, p_child_reason text, p_max_depth integer, p_status text DEFAULT 'cancelled'::text, p_error jsonb DEFAULT NULL::jsonb)
 RETURNS TABLE(cancelled integer, truncated integer, owners text[])
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_now timestamptz := durable_now();
    v_at timestamptz := durable_clock();
    v_gen uuid[];
    v_next uuid[];
    v_ask uuid[];
    v_all uuid[];
    v_owners text[];
    v_more text[];
    v_done uuid[];
    v_depth integer := 0;
    v_truncated integer := 0;
    v_waiter record;
    v_error jsonb := coalesce(p_error, jsonb_build_object('type', 'Cancelled', 'reason', p_reason,
                                                          'message', 'the run was cancelled'));
BEGIN
    SELECT coalesce(array_agg(DISTINCT r.lease_owner) FILTER (WHERE r.lease_owner IS NOT NULL), '{}')
      INTO v_owners FROM durable_runs r
     WHERE r.tree_key = p_key AND r.id = ANY(p_ids) AND r.status IN ('pending', 'running', 'suspended');
    WITH upd AS (
        UPDATE durable_runs
           SET status = p_status,
               error = v_error,
               cancel_requested = true, lease_owner = NULL, next_wakeup_at = NULL, finished_at = v_now
         WHERE tree_key = p_key AND id = ANY(p_ids) AND status IN ('pending', 'running', 'suspended')
        RETURNING id
    )
    SELECT coalesce(array_agg(id), '{}') INTO v_all FROM upd;
    v_gen := v_all;
    WHILE cardinality(v_gen) > 0 LOOP
        IF v_depth >= p_max_depth THEN
            -- the depth bound: count what is still in flight below it
            WITH RECURSIVE rest AS (
                SELECT r.id FROM durable_runs r
                 WHERE r.tree_key = p_key AND r.parent_id = ANY(v_gen)
                   AND r.status IN ('pending', 'running', 'suspended') AND r.parent_close_policy <> 'abandon'
                UNION ALL
                SELECT r.id FROM durable_runs r JOIN rest ON r.tree_key = p_key AND r.parent_id = rest.id
                 WHERE r.status IN ('pending', 'running', 'suspended') AND r.parent_close_policy <> 'abandon'
            )
            SELECT count(*) INTO v_truncated FROM rest;
            EXIT;
        END IF;
        v_depth := v_depth + 1;
        -- lock this generation (its parents are locked already), in a stable order; a child
        -- being started under a parent locked here either committed before (and is seen by
        -- this new statement) or finds its parent's lease gone and writes nothing
        SELECT coalesce(array_agg(g.id) FILTER (WHERE g.parent_close_policy = 'terminate'), '{}'),
               coalesce(array_agg(g.id) FILTER (WHERE g.parent_close_policy = 'request_cancel'), '{}'),
               coalesce(array_agg(DISTINCT g.lease_owner)
                        FILTER (WHERE g.parent_close_policy = 'terminate' AND g.lease_owner IS NOT NULL), '{}')
          INTO v_next, v_ask, v_more
          FROM (SELECT r.id, r.parent_close_policy, r.lease_owner FROM durable_runs r
                 WHERE r.tree_key = p_key AND r.parent_id = ANY(v_gen)
                   AND r.status IN ('pending', 'running', 'suspended') AND r.parent_close_policy <> 'abandon'
                 ORDER BY r.id FOR UPDATE) g;
        PERFORM durable_request_cancel(p_key, v_ask);
        IF cardinality(v_next) > 0 THEN
            UPDATE durable_runs
               SET status = 'cancelled',
                   error = jsonb_build_object('type', 'Cancelled', 'reason', p_child_reason,
                                              'message', 'an ancestor of the run was cancelled or closed'),
                   cancel_requested = true, lease_owner = NULL, next_wakeup_at = NULL, finished_at = v_now
             WHERE tree_key = p_key AND id = ANY(v_next);
        END IF;
        v_owners := v_owners || v_more;
        v_all := v_all || v_next;
        v_gen := v_next;
    END LOOP;
    DELETE FROM durable_due WHERE tree_key = p_key AND run_id = ANY(v_all);
    DELETE FROM durable_deadlines WHERE tree_key = p_key AND run_id = ANY(v_all);
    DELETE FROM durable_outcomes WHERE tree_key = p_key AND parent_id = ANY(v_all);
    -- runs waiting on any ended chain (M:N), then outside callers watching one
    FOR v_waiter IN SELECT DISTINCT w.waiter_key, w.waiter_id FROM durable_waiters w
                     WHERE w.tree_key = p_key
                       AND w.target_id IN (SELECT r.chain_root_id FROM durable_runs r
                                            WHERE r.tree_key = p_key AND r.id = ANY(v_all))
                     ORDER BY w.waiter_id LOOP
        PERFORM durable_wake(v_waiter.waiter_key, v_waiter.waiter_id, v_at);
    END LOOP;
    SELECT coalesce(array_agg(r.id), '{}') INTO v_done FROM durable_runs r
     WHERE r.tree_key = p_key AND r.id = ANY(v_all) AND r.notify_done;
    PERFORM pg_notify(durable_channel(), 'done|' || d::text) FROM unnest(v_done) d;
    SELECT coalesce(array_agg(DISTINCT o), '{}') INTO v_owners FROM unnest(v_owners) o WHERE o IS NOT NULL;
    PERFORM pg_notify(durable_channel(), 'cancel|' || o) FROM unnest(v_owners) o;
    RETURN QUERY SELECT cardinality(v_all), v_truncated, v_owners;
END
$function$;

CREATE OR REPLACE FUNCTION durable_chain_state(p_id uuid)
 RETURNS TABLE(id uuid, status text, result jsonb, error jsonb, workflow text)
 LANGUAGE plpgsql
 STABLE
AS $function$
DECLARE
    v_key bigint := durable_key_of(p_id);
    v_chain uuid;
BEGIN
    SELECT r.chain_root_id INTO v_chain FROM durable_runs r WHERE r.tree_key = v_key AND r.id = p_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
        SELECT r.id, r.status, r.result, r.error, r.workflow FROM durable_runs r
         WHERE r.tree_key = v_key AND r.chain_root_id = v_chain
         ORDER BY (r.status = 'continued'), r.created_at DESC LIMIT 1;
END
$function$;

CREATE OR REPLACE FUNCTION durable_channel()
 RETURNS text
 LANGUAGE sql
 IMMUTABLE
AS $function$SELECT 'durable_wake_<schema>'::text$function$;

CREATE OR REPLACE FUNCTION durable_claim(p_keys bigint[], p_ids uuid[], p_owner text, p_workflows text[], p_grace double precision, p_limit integer)
 RETURNS TABLE(tree_key bigint, id uuid, root_id uuid, parent_id uuid, chain_root_id uuid, workflow text, version integer, queue text, input jsonb, attempt integer, depth integer, lease_epoch integer, cancel_requested boolean, grafted boolean, prev_status text, wake_latency_s double precision, last_seq integer, deadline_in_s double precision)
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_now timestamptz := durable_now();
    v_clock timestamptz := durable_clock();
    v_run durable_runs%ROWTYPE;
    v_due timestamptz;
    v_prev text;
    v_last integer;
    v_claimed integer := 0;
BEGIN
    FOR i IN 1 .. coalesce(cardinality(p_ids), 0) LOOP
        EXIT WHEN v_claimed >= p_limit;  -- the candidates beyond it stand in for those skipped
        SELECT * INTO v_run FROM durable_runs r
         WHERE r.tree_key = p_keys[i] AND r.id = p_ids[i] FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        CONTINUE WHEN NOT (v_run.workflow || ':' || v_run.version) = ANY(p_workflows);
        IF v_run.status IN ('pending', 'suspended') THEN
            CONTINUE WHEN v_run.next_wakeup_at IS NULL OR v_run.next_wakeup_at > v_now;
            CONTINUE WHEN v_run.lease_owner IS NOT NULL AND v_run.lease_owner <> p_owner
                      AND v_run.next_wakeup_at > v_now - make_interval(secs => p_grace)
                      AND EXISTS (SELECT 1 FROM durable_workers w
                                   WHERE w.owner = v_run.lease_owner AND w.expires_at >= clock_timestamp());
            v_due := v_run.next_wakeup_at;
        ELSIF v_run.status = 'running' THEN
            SELECT w.expires_at INTO v_due FROM durable_workers w WHERE w.owner = v_run.lease_owner;
            CONTINUE WHEN FOUND AND v_due >= clock_timestamp();  -- its holder is alive
            v_due := coalesce(v_due, v_now);
        ELSE
            CONTINUE;
        END IF;
        v_prev := v_run.status;
        v_claimed := v_claimed + 1;
        UPDATE durable_runs r
           SET status = 'running', lease_owner = p_owner, lease_epoch = r.lease_epoch + 1, next_wakeup_at = NULL,
               started_at = coalesce(r.started_at, v_now)
         WHERE r.tree_key = p_keys[i] AND r.id = p_ids[i]
        RETURNING r.* INTO v_run;
        PERFORM durable_set_due(v_run.tree_key, v_run.id, v_run.queue, v_run.workflow || ':' || v_run.version,
                                NULL, p_owner, true);
        v_last := 0;
        IF v_prev <> 'pending' THEN
            SELECT coalesce(max(e.seq), 0) INTO v_last FROM durable_events e
             WHERE e.tree_key = v_run.tree_key AND e.run_id = v_run.id;
        END IF;
        RETURN QUERY SELECT v_run.tree_key, v_run.id, v_run.root_id, v_run.parent_id, v_run.chain_root_id,
                            v_run.workflow, v_run.version, v_run.queue, v_run.input, v_run.attempt, v_run.depth,
                            v_run.lease_epoch, v_run.cancel_requested, v_run.grafted, v_prev,
                            extract(epoch FROM v_clock - v_due)::float8, v_last,
                            extract(epoch FROM v_run.deadline_at - v_now)::float8;
    END LOOP;
END
$function$;

CREATE OR REPLACE PROCEDURE durable_claim_each(IN p_keys bigint[], IN p_ids uuid[], IN p_owner text, IN p_workflows text[], IN p_grace double precision, IN p_limit integer, INOUT p_claims jsonb DEFAULT NULL::jsonb)
 LANGUAGE plpgsql
AS $procedure$
DECLARE
    v_claims jsonb := '[]';
    v_row jsonb;
BEGIN
    FOR i IN 1 .. coalesce(cardinality(p_ids), 0) LOOP
        EXIT WHEN jsonb_array_length(v_claims) >= p_limit;
        SELECT to_jsonb(c) INTO v_row
          FROM durable_claim(ARRAY[p_keys[i]], ARRAY[p_ids[i]], p_owner, p_workflows, p_grace, 1) c;
        COMMIT;
        IF v_row IS NOT NULL THEN
            v_claims := v_claims || jsonb_build_array(v_row);
        END IF;
    END LOOP;
    p_claims := v_claims;
END
$procedure$;

CREATE OR REPLACE FUNCTION durable_claimable(p_queues text[], p_workflows text[], p_owner text, p_grace double precision, p_limit integer)
 RETURNS TABLE(tree_key bigint, run_id uuid)
 LANGUAGE plpgsql
 SET enable_sort TO 'off'
 SET "citus.propagate_set_commands" TO 'local'
AS $function$
DECLARE
    v_now timestamptz := durable_now();
    v_sticky timestamptz := v_now - make_interval(secs => p_grace);
    v_queue text;
    v_dead text[];
    v_alive text[];
BEGIN
    SET LOCAL enable_sort = off;
    -- (processes gone for over a week are forgotten: their runs were taken over long since)
    SELECT coalesce(array_agg(w.owner) FILTER (WHERE w.expires_at < clock_timestamp()), '{}'),
           coalesce(array_agg(w.owner) FILTER (WHERE w.expires_at >= clock_timestamp()), '{}')
      INTO v_dead, v_alive FROM durable_workers w WHERE w.expires_at >= v_now - interval '7 days';
    FOREACH v_queue IN ARRAY p_queues LOOP
        RETURN QUERY
            SELECT d.tree_key, d.run_id FROM durable_due d
             WHERE NOT d.leased AND d.queue = v_queue AND d.due_at <= v_now AND d.workflow = ANY(p_workflows)
               AND (d.owner IS NULL OR d.owner = p_owner OR d.due_at <= v_sticky OR NOT d.owner = ANY(v_alive))
             ORDER BY d.due_at LIMIT p_limit;
    END LOOP;
    IF cardinality(v_dead) > 0 THEN
        RETURN QUERY
            SELECT d.tree_key, d.run_id FROM durable_due d
             WHERE d.leased AND d.owner = ANY(v_dead) AND d.queue = ANY(p_queues) AND d.workflow = ANY(p_workflows)
             LIMIT p_limit;
    END IF;
END
$function$;

CREATE OR REPLACE FUNCTION durable_clock()
 RETURNS timestamp with time zone
 LANGUAGE sql
AS $function$ SELECT durable_now() + (clock_timestamp() - now()) $function$;

CREATE OR REPLACE FUNCTION durable_close_children(p_key bigint, p_id uuid, p_max_depth integer)
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
             WHERE r.tree_key = p_key AND r.parent_id = p_id AND r.status IN ('pending', 'running', 'suspended')
               AND r.parent_close_policy <> 'abandon'
             ORDER BY r.id FOR UPDATE) c;
    IF cardinality(v_term) > 0 THEN
        PERFORM durable_cascade(p_key, v_term, 'parent_closed', 'parent_cancelled', greatest(p_max_depth - 1, 0));
    END IF;
    PERFORM durable_request_cancel(p_key, v_ask);
END
$function$;

CREATE OR REPLACE FUNCTION durable_consume_signal(p_key bigint, p_id uuid, p_epoch integer, p_seq integer, p_pos integer, p_op text, p_name text)
 RETURNS TABLE(leased boolean, payload jsonb, signal_id bigint)
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_root uuid;
    v_sig record;
BEGIN
    SELECT root_id INTO v_root FROM durable_runs
     WHERE tree_key = p_key AND id = p_id AND lease_epoch = p_epoch AND status = 'running' FOR SHARE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT false, NULL::jsonb, NULL::bigint;
        RETURN;
    END IF;
    SELECT s.id, s.payload INTO v_sig FROM durable_signals s
     WHERE s.tree_key = p_key AND s.run_id = p_id AND s.name = p_name AND s.consumed_seq IS NULL
     ORDER BY s.id LIMIT 1 FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    UPDATE durable_signals SET consumed_seq = p_seq WHERE tree_key = p_key AND id = v_sig.id;
    INSERT INTO durable_events (tree_key, run_id, seq, root_id, pos, op, kind, name, data)
    VALUES (p_key, p_id, p_seq, v_root, p_pos, p_op, 'signal_received', p_name,
            jsonb_build_object('payload', v_sig.payload, 'signal_id', v_sig.id));
    RETURN QUERY SELECT true, v_sig.payload, v_sig.id;
END
$function$;

CREATE OR REPLACE FUNCTION durable_continue(p_key bigint, p_id uuid, p_epoch integer, p_new uuid, p_workflow text, p_version integer, p_input jsonb)
 RETURNS boolean
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_run durable_runs%ROWTYPE;
BEGIN
    v_run := durable_lock_live(p_key, p_id, p_epoch);
    IF v_run.id IS NULL THEN
        RETURN false;
    END IF;
    PERFORM durable_renew(p_key, p_id, p_new, p_workflow, p_version, p_input, v_run.attempt, 0, NULL,
                          v_run.lease_owner, true, 0);
    RETURN true;
END
$function$;

CREATE OR REPLACE FUNCTION durable_derived_id(p_id uuid, p_label text, p_graft boolean)
 RETURNS uuid
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT CASE WHEN p_graft THEN durable_in_tree(p_id, v.id) ELSE v.id END
      FROM (SELECT overlay(overlay(md5(p_id::text || '|' || p_label) PLACING '3' FROM 13 FOR 1)
                           PLACING '8' FROM 17 FOR 1)::uuid AS id) v
$function$;

CREATE OR REPLACE FUNCTION durable_due_in(p_key bigint, p_id uuid)
 RETURNS TABLE(status text, due_in_s double precision)
 LANGUAGE plpgsql
 STABLE
AS $function$
DECLARE
    v_now timestamptz := durable_now();
BEGIN
    RETURN QUERY SELECT r.status, extract(epoch FROM r.next_wakeup_at - v_now)::float8
                   FROM durable_runs r WHERE r.tree_key = p_key AND r.id = p_id;
END
$function$;

CREATE OR REPLACE FUNCTION durable_expire_runs(p_limit integer, p_max_depth integer)
 RETURNS integer
 LANGUAGE plpgsql
 SET enable_sort TO 'off'
 SET "citus.propagate_set_commands" TO 'local'
AS $function$
DECLARE
    v_now timestamptz := durable_now();
    v_row record;
    v_count integer := 0;
BEGIN
    SET LOCAL enable_sort = off;
    FOR v_row IN
        -- the oldest p_limit deadlines (an ordered index scan), parents before their children
        SELECT r.tree_key, r.id, r.parent_id, r.execution_timeout_s
          FROM (SELECT d.tree_key, d.run_id, d.deadline_at FROM durable_deadlines d
                 WHERE d.deadline_at < v_now ORDER BY d.deadline_at LIMIT p_limit) d
          JOIN durable_runs r ON r.tree_key = d.tree_key AND r.id = d.run_id
         ORDER BY r.depth, d.deadline_at
    LOOP
        IF v_row.parent_id IS NOT NULL THEN
            PERFORM 1 FROM durable_runs WHERE tree_key = v_row.tree_key AND id = v_row.parent_id
               FOR KEY SHARE SKIP LOCKED;
            CONTINUE WHEN NOT FOUND;
        END IF;
        PERFORM 1 FROM durable_runs
         WHERE tree_key = v_row.tree_key AND id = v_row.id AND parent_id IS NOT DISTINCT FROM v_row.parent_id
           AND status IN ('pending', 'running', 'suspended') AND deadline_at < v_now
           FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        PERFORM durable_cascade(v_row.tree_key, ARRAY[v_row.id], 'timeout', 'parent_cancelled', p_max_depth, 'failed',
                                jsonb_build_object('type', 'WorkflowTimeoutError',
                                                   'message', format('the run exceeded its execution timeout of %s s',
                                                                     v_row.execution_timeout_s)));
        IF v_row.parent_id IS NOT NULL THEN
            INSERT INTO durable_outcomes (tree_key, parent_id, run_id, finished_at)
            VALUES (v_row.tree_key, v_row.parent_id, v_row.id, v_now) ON CONFLICT DO NOTHING;
            PERFORM durable_wake(v_row.tree_key, v_row.parent_id, durable_clock());
        END IF;
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$function$;

CREATE OR REPLACE FUNCTION durable_finish(p_key bigint, p_id uuid, p_epoch integer, p_status text, p_result jsonb, p_error jsonb, p_max_depth integer DEFAULT 10)
 RETURNS text
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_now timestamptz := durable_now();
    v_run durable_runs%ROWTYPE;
    v_policy jsonb;
    v_max integer;
    v_delay double precision;
BEGIN
    v_run := durable_lock_live(p_key, p_id, p_epoch);
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
            PERFORM durable_renew(p_key, p_id, durable_derived_id(p_id, 'retry', v_run.grafted), v_run.workflow,
                                  v_run.version, v_run.input, v_run.attempt + 1, v_delay, p_error, NULL, false,
                                  p_max_depth);
            RETURN 'retried';
        END IF;
    END IF;
    UPDATE durable_runs
       SET status = p_status, result = p_result, error = p_error, lease_owner = NULL, next_wakeup_at = NULL,
           finished_at = v_now
     WHERE tree_key = p_key AND id = p_id;
    DELETE FROM durable_due WHERE tree_key = p_key AND run_id = p_id;
    DELETE FROM durable_deadlines WHERE tree_key = p_key AND run_id = p_id;
    DELETE FROM durable_outcomes WHERE tree_key = p_key AND parent_id = p_id;  -- it has read all it will
    PERFORM durable_close_children(p_key, p_id, p_max_depth);
    PERFORM durable_after_terminal(p_key, p_id, v_run.parent_id, v_run.chain_root_id, v_run.notify_done, v_now);
    RETURN 'finished';
END
$function$;

CREATE OR REPLACE FUNCTION durable_finish_with_event(p_key bigint, p_id uuid, p_epoch integer, p_seq integer, p_pos integer, p_op text, p_kind text, p_name text, p_data jsonb, p_status text, p_result jsonb, p_error jsonb, p_max_depth integer)
 RETURNS text
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_run durable_runs%ROWTYPE;
BEGIN
    v_run := durable_lock_live(p_key, p_id, p_epoch);
    IF v_run.id IS NULL THEN
        RETURN 'lost';
    END IF;
    INSERT INTO durable_events (tree_key, run_id, seq, root_id, pos, op, kind, name, data)
    VALUES (p_key, p_id, p_seq, v_run.root_id, p_pos, p_op, p_kind, p_name, p_data);
    RETURN durable_finish(p_key, p_id, p_epoch, p_status, p_result, p_error, p_max_depth);
END
$function$;

CREATE OR REPLACE FUNCTION durable_fork(p_id uuid, p_at integer, p_new uuid, p_kind text)
 RETURNS TABLE(run_id uuid, tree_key bigint, workflow text, queue text, copied integer, history_length integer)
 LANGUAGE plpgsql
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION durable_gc_trees(p_cutoff timestamp with time zone, p_after_ts timestamp with time zone, p_after_id uuid, p_limit integer, p_dry_run boolean DEFAULT false)
 RETURNS TABLE(after_ts timestamp with time zone, after_id uuid, scanned integer, kept integer, runs integer, events integer, signals integer)
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_win record;
    v_last_ts timestamptz;
    v_last_id uuid;
    v_scanned integer := 0;
    v_keys bigint[] := '{}';
    v_kept integer := 0;
    v_runs integer := 0;
    v_events integer := 0;
    v_signals integer := 0;
    v_waiter record;
    v_live boolean;
BEGIN
    FOR v_win IN
        SELECT r.tree_key, r.id, r.created_at, r.finished_at FROM durable_runs r
         WHERE r.parent_id IS NULL AND r.created_at < p_cutoff AND (r.created_at, r.id) > (p_after_ts, p_after_id)
         ORDER BY r.created_at, r.id LIMIT p_limit
    LOOP
        v_scanned := v_scanned + 1;
        v_last_ts := v_win.created_at;
        v_last_id := v_win.id;
        CONTINUE WHEN v_win.finished_at IS NULL OR v_win.finished_at >= p_cutoff;  -- still running, or lately
        CONTINUE WHEN v_win.tree_key = ANY(v_keys);
        -- every run of the tree finished before the cutoff
        IF EXISTS (SELECT 1 FROM durable_runs r WHERE r.tree_key = v_win.tree_key
                     AND (r.finished_at IS NULL OR r.finished_at >= p_cutoff)) THEN
            v_kept := v_kept + 1;
            CONTINUE;
        END IF;
        -- no live run waits on one of its runs
        v_live := false;
        FOR v_waiter IN SELECT w.waiter_key, w.waiter_id FROM durable_waiters w WHERE w.tree_key = v_win.tree_key LOOP
            IF EXISTS (SELECT 1 FROM durable_runs x WHERE x.tree_key = v_waiter.waiter_key AND x.id = v_waiter.waiter_id
                         AND x.status IN ('pending', 'running', 'suspended')) THEN
                v_live := true;
                EXIT;
            END IF;
        END LOOP;
        IF v_live THEN
            v_kept := v_kept + 1;
            CONTINUE;
        END IF;
        -- another collector holds it: the next round takes it
        PERFORM 1 FROM durable_runs r WHERE r.tree_key = v_win.tree_key AND r.id = v_win.id FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        v_keys := v_keys || v_win.tree_key;
    END LOOP;
    IF cardinality(v_keys) > 0 THEN
        WITH d AS (DELETE FROM durable_events WHERE tree_key = ANY(v_keys) RETURNING 1)
        SELECT count(*) INTO v_events FROM d;
        WITH d AS (DELETE FROM durable_signals WHERE tree_key = ANY(v_keys) RETURNING 1)
        SELECT count(*) INTO v_signals FROM d;
        DELETE FROM durable_waiters WHERE tree_key = ANY(v_keys);
        DELETE FROM durable_outcomes WHERE tree_key = ANY(v_keys);
        DELETE FROM durable_due WHERE tree_key = ANY(v_keys);
        DELETE FROM durable_deadlines WHERE tree_key = ANY(v_keys);
        DELETE FROM durable_run_keys WHERE tree_key = ANY(v_keys);
        WITH d AS (DELETE FROM durable_runs WHERE tree_key = ANY(v_keys) RETURNING 1)
        SELECT count(*) INTO v_runs FROM d;
    END IF;
    RETURN QUERY SELECT v_last_ts, v_last_id, v_scanned, v_kept, v_runs, v_events, v_signals;
END
$function$;

CREATE OR REPLACE FUNCTION durable_in_tree(p_root uuid, p_id uuid)
 RETURNS uuid
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$
    SELECT (substr(replace(p_root::text, '-', ''), 1, 16) || substr(replace(p_id::text, '-', ''), 17, 16))::uuid
$function$;

CREATE OR REPLACE FUNCTION durable_key_of(p_id uuid)
 RETURNS bigint
 LANGUAGE plpgsql
 STABLE
AS $function$
DECLARE
    v_key bigint;
BEGIN
    SELECT k.tree_key INTO v_key FROM durable_run_keys k WHERE k.id = p_id;
    RETURN coalesce(v_key, durable_tree_key(p_id));
END
$function$;

CREATE OR REPLACE FUNCTION durable_lock_live(p_key bigint, p_id uuid, p_epoch integer)
 RETURNS durable_runs
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_parent uuid;
    v_run durable_runs%ROWTYPE;
BEGIN
    SELECT parent_id INTO v_parent FROM durable_runs WHERE tree_key = p_key AND id = p_id;
    IF v_parent IS NOT NULL THEN
        PERFORM 1 FROM durable_runs WHERE tree_key = p_key AND id = v_parent FOR KEY SHARE;
    END IF;
    SELECT * INTO v_run FROM durable_runs
     WHERE tree_key = p_key AND id = p_id AND lease_epoch = p_epoch AND status = 'running' FOR UPDATE;
    RETURN v_run;
END
$function$;

CREATE OR REPLACE FUNCTION durable_next_deadline_in()
 RETURNS double precision
 LANGUAGE plpgsql
 STABLE
AS $function$
DECLARE
    v_now timestamptz := durable_now();
    v_next timestamptz;
BEGIN
    SELECT min(d.deadline_at) INTO v_next FROM durable_deadlines d;
    RETURN extract(epoch FROM v_next - v_now)::float8;
END
$function$;

CREATE OR REPLACE FUNCTION durable_now()
 RETURNS timestamp with time zone
 LANGUAGE sql
 STABLE
AS $function$ SELECT now() $function$;

CREATE OR REPLACE FUNCTION durable_queue_depths()
 RETURNS TABLE(queue text, ready bigint, oldest double precision, waiting bigint)
 LANGUAGE plpgsql
 STABLE
AS $function$
DECLARE
    v_now timestamptz := durable_now();
BEGIN
    RETURN QUERY
        SELECT d.queue,
               count(*) FILTER (WHERE NOT d.leased AND d.due_at <= v_now),
               extract(epoch FROM v_now - min(d.due_at) FILTER (WHERE NOT d.leased AND d.due_at <= v_now))::float8,
               count(*) FILTER (WHERE NOT d.leased AND (d.due_at IS NULL OR d.due_at > v_now))
          FROM durable_due d
         GROUP BY d.queue;
END
$function$;

CREATE OR REPLACE FUNCTION durable_read_outcomes(p_key bigint, p_parent uuid, p_after bigint)
 RETURNS TABLE(chain_root_id uuid, id uuid, status text, result jsonb, error jsonb, workflow text, finished_at double precision, seq bigint, db_now double precision)
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_now double precision := extract(epoch FROM durable_clock())::float8;
BEGIN
    PERFORM 1 FROM durable_runs p WHERE p.tree_key = p_key AND p.id = p_parent FOR UPDATE;
    RETURN QUERY
        SELECT r.chain_root_id, r.id, r.status, r.result, r.error, r.workflow,
               extract(epoch FROM o.finished_at)::float8, o.seq, v_now
          FROM durable_outcomes o
          JOIN durable_runs r ON r.tree_key = o.tree_key AND r.id = o.run_id
         WHERE o.tree_key = p_key AND o.parent_id = p_parent AND o.seq > p_after
         ORDER BY o.seq;
END
$function$;

CREATE OR REPLACE FUNCTION durable_release(p_key bigint, p_id uuid, p_epoch integer)
 RETURNS boolean
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_now timestamptz := durable_now();
    v_run record;
BEGIN
    UPDATE durable_runs r
       SET status = CASE WHEN EXISTS (SELECT 1 FROM durable_events e WHERE e.tree_key = p_key AND e.run_id = p_id)
                         THEN 'suspended' ELSE 'pending' END,
           lease_owner = NULL, next_wakeup_at = v_now
     WHERE r.tree_key = p_key AND r.id = p_id AND r.lease_epoch = p_epoch AND r.status = 'running'
    RETURNING r.queue, r.workflow, r.version INTO v_run;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM durable_set_due(p_key, p_id, v_run.queue, v_run.workflow || ':' || v_run.version, v_now, NULL, false);
    PERFORM pg_notify(durable_channel(), 'new|' || v_run.queue);
    RETURN true;
END
$function$;

CREATE OR REPLACE FUNCTION durable_release_orphan(p_key bigint, p_id uuid, p_owner text)
 RETURNS boolean
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_epoch integer;
BEGIN
    SELECT lease_epoch INTO v_epoch FROM durable_runs
     WHERE tree_key = p_key AND id = p_id AND lease_owner = p_owner AND status = 'running' FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    RETURN durable_release(p_key, p_id, v_epoch);
END
$function$;

CREATE OR REPLACE FUNCTION durable_renew(p_key bigint, p_id uuid, p_new uuid, p_workflow text, p_version integer, p_input jsonb, p_attempt integer, p_delay double precision, p_error jsonb, p_owner text, p_move_children boolean, p_max_depth integer)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_now timestamptz := durable_now();
    v_due timestamptz := v_now + make_interval(secs => greatest(p_delay, 0));
    v_run durable_runs%ROWTYPE;
BEGIN
    UPDATE durable_runs
       SET status = 'continued', continued_to = p_new, error = p_error, lease_owner = NULL,
           next_wakeup_at = NULL, finished_at = v_now
     WHERE tree_key = p_key AND id = p_id
    RETURNING * INTO v_run;
    INSERT INTO durable_runs (tree_key, id, root_id, parent_id, parent_pos, chain_root_id, workflow, version, queue,
                              status, input, depth, attempt, retry_policy, parent_close_policy,
                              execution_timeout_s, deadline_at, cancel_requested, notify_done,
                              lease_owner, next_wakeup_at, grafted)
    VALUES (p_key, p_new, v_run.root_id, v_run.parent_id, v_run.parent_pos, v_run.chain_root_id, p_workflow,
            p_version, v_run.queue, 'pending', p_input, v_run.depth, p_attempt, v_run.retry_policy,
            v_run.parent_close_policy, v_run.execution_timeout_s, v_run.deadline_at,
            v_run.cancel_requested, v_run.notify_done, p_owner, v_due, v_run.grafted);
    IF NOT v_run.grafted THEN
        INSERT INTO durable_run_keys (id, tree_key) VALUES (p_new, p_key) ON CONFLICT DO NOTHING;
    END IF;
    DELETE FROM durable_due WHERE tree_key = p_key AND run_id = p_id;
    PERFORM durable_set_due(p_key, p_new, v_run.queue, p_workflow || ':' || p_version, v_due, p_owner, false);
    UPDATE durable_deadlines SET run_id = p_new WHERE tree_key = p_key AND run_id = p_id;
    UPDATE durable_signals SET run_id = p_new WHERE tree_key = p_key AND run_id = p_id AND consumed_seq IS NULL;
    IF p_move_children THEN
        UPDATE durable_runs SET parent_id = p_new
         WHERE tree_key = p_key AND id IN (SELECT r.id FROM durable_runs r
                                            WHERE r.tree_key = p_key AND r.parent_id = p_id
                                              AND r.status IN ('pending', 'running', 'suspended')
                                            ORDER BY r.id FOR UPDATE);
    ELSE
        PERFORM durable_close_children(p_key, p_id, p_max_depth);
    END IF;
    DELETE FROM durable_outcomes WHERE tree_key = p_key AND parent_id = p_id;
    IF v_run.notify_done THEN
        PERFORM pg_notify(durable_channel(), 'done|' || p_id::text);
    END IF;
    IF p_delay <= 0 THEN
        PERFORM pg_notify(durable_channel(), 'new|' || v_run.queue);
    END IF;
END
$function$;

CREATE OR REPLACE FUNCTION durable_request_cancel(p_key bigint, p_ids uuid[])
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_at timestamptz := durable_clock();
BEGIN
    IF cardinality(p_ids) = 0 THEN
        RETURN;
    END IF;
    UPDATE durable_runs SET cancel_requested = true WHERE tree_key = p_key AND id = ANY(p_ids);
    PERFORM durable_wake(p_key, a, v_at) FROM (SELECT a FROM unnest(p_ids) a ORDER BY a) s;
    PERFORM pg_notify(durable_channel(), 'cancel|' || a::text) FROM unnest(p_ids) a;
END
$function$;

CREATE OR REPLACE FUNCTION durable_resume(p_id uuid, p_max_depth integer)
 RETURNS TABLE(run_id uuid, tree_key bigint, workflow text, queue text, previous_status text, superseded_from integer, superseded integer, rerun uuid[], marker_seq integer)
 LANGUAGE plpgsql
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION durable_run_outcomes(p_targets uuid[])
 RETURNS TABLE(target uuid, id uuid, status text, result jsonb, error jsonb, workflow text, finished_at double precision, db_now double precision)
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_now double precision := extract(epoch FROM durable_clock())::float8;
    v_target uuid;
    v_key bigint;
BEGIN
    FOREACH v_target IN ARRAY p_targets LOOP
        v_key := durable_key_of(v_target);
        RETURN QUERY
            SELECT v_target, r.id, r.status, r.result, r.error, r.workflow,
                   extract(epoch FROM r.finished_at)::float8, v_now
              FROM durable_runs r
             WHERE r.tree_key = v_key AND r.chain_root_id = v_target AND r.status IN ('completed', 'failed', 'cancelled');
        IF NOT FOUND AND NOT EXISTS (SELECT 1 FROM durable_runs r WHERE r.tree_key = v_key AND r.chain_root_id = v_target) THEN
            RETURN QUERY SELECT v_target, v_target, 'missing'::text, NULL::jsonb, NULL::jsonb, NULL::text,
                                NULL::float8, v_now;
        END IF;
    END LOOP;
END
$function$;

CREATE OR REPLACE FUNCTION durable_send_signal(p_run uuid, p_name text, p_payload jsonb, p_delivery text)
 RETURNS boolean
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_key bigint := durable_key_of(p_run);
    v_run durable_runs%ROWTYPE;
    v_id uuid := p_run;
BEGIN
    LOOP
        SELECT * INTO v_run FROM durable_runs WHERE tree_key = v_key AND id = v_id;  -- follow the chain unlocked
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'DU003', MESSAGE = format('run %s does not exist', p_run);
        END IF;
        IF v_run.status = 'continued' THEN
            v_id := v_run.continued_to;
            CONTINUE;
        END IF;
        SELECT * INTO v_run FROM durable_runs WHERE tree_key = v_key AND id = v_id FOR NO KEY UPDATE;
        EXIT WHEN v_run.status <> 'continued';
        v_id := v_run.continued_to;  -- it continued meanwhile
    END LOOP;
    IF p_delivery IS NOT NULL AND EXISTS (
        SELECT 1 FROM durable_runs r JOIN durable_signals s ON s.tree_key = r.tree_key AND s.run_id = r.id
         WHERE r.tree_key = v_key AND r.chain_root_id = v_run.chain_root_id AND s.delivery_id = p_delivery) THEN
        RETURN false;
    END IF;
    IF v_run.status IN ('completed', 'failed', 'cancelled') THEN
        RAISE EXCEPTION USING ERRCODE = 'DU004',
            MESSAGE = format('run %s is already %s; signals go to running runs only', v_id, v_run.status);
    END IF;
    INSERT INTO durable_signals (tree_key, run_id, root_id, name, payload, delivery_id)
    VALUES (v_key, v_id, v_run.root_id, p_name, p_payload, p_delivery)
    ON CONFLICT (tree_key, run_id, delivery_id) WHERE delivery_id IS NOT NULL DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM durable_wake(v_key, v_id, durable_clock());
    RETURN true;
END
$function$;

CREATE OR REPLACE FUNCTION durable_set_attributes(p_key bigint, p_id uuid, p_epoch integer, p_seq integer, p_pos integer, p_op text, p_attrs jsonb)
 RETURNS boolean
 LANGUAGE plpgsql
AS $function$
BEGIN
    UPDATE durable_runs SET attributes = coalesce(attributes, '{}'::jsonb) || p_attrs
     WHERE tree_key = p_key AND id = p_id AND lease_epoch = p_epoch AND status = 'running';
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    RETURN durable_append(p_key, p_id, p_epoch, ARRAY[p_seq], ARRAY[p_pos], ARRAY[p_op], ARRAY['attributes'],
                          ARRAY[NULL::text], ARRAY[p_attrs]);
END
$function$;

CREATE OR REPLACE FUNCTION durable_set_due(p_key bigint, p_id uuid, p_queue text, p_workflow text, p_due timestamp with time zone, p_owner text, p_leased boolean)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
BEGIN
    INSERT INTO durable_due (tree_key, run_id, queue, workflow, due_at, owner, leased)
    VALUES (p_key, p_id, p_queue, p_workflow, p_due, p_owner, p_leased)
    ON CONFLICT (tree_key, run_id) DO UPDATE
       SET queue = EXCLUDED.queue, workflow = EXCLUDED.workflow, due_at = EXCLUDED.due_at,
           owner = EXCLUDED.owner, leased = EXCLUDED.leased;
END
$function$;

CREATE OR REPLACE FUNCTION durable_start_children(p_key bigint, p_parent uuid, p_epoch integer, p_children jsonb)
 RETURNS boolean
 LANGUAGE plpgsql
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION durable_start_run(p_id uuid, p_workflow text, p_version integer, p_queue text, p_leased boolean, p_input jsonb, p_key text, p_timeout double precision, p_owner text, p_start_at timestamp with time zone)
 RETURNS TABLE(id uuid, status text, lease_epoch integer, due_in_s double precision)
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_key bigint := durable_tree_key(p_id);
    v_now timestamptz := durable_now();
    v_due timestamptz := coalesce(p_start_at, v_now);
    v_deadline timestamptz := v_now + make_interval(secs => p_timeout);
BEGIN
    IF EXISTS (SELECT 1 FROM durable_run_keys k WHERE k.id = p_id) THEN
        RETURN;  -- the id of a run created before version 7
    END IF;
    INSERT INTO durable_runs AS r (tree_key, id, root_id, chain_root_id, workflow, version, queue, status, input,
                                   idempotency_key, execution_timeout_s, deadline_at, lease_owner, lease_epoch,
                                   next_wakeup_at, started_at)
    VALUES (v_key, p_id, p_id, p_id, p_workflow, p_version, p_queue,
            CASE WHEN p_leased THEN 'running' ELSE 'pending' END, p_input, p_key, p_timeout, v_deadline,
            CASE WHEN p_leased THEN p_owner END, CASE WHEN p_leased THEN 1 ELSE 0 END,
            CASE WHEN p_leased THEN NULL ELSE v_due END, CASE WHEN p_leased THEN v_now END)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    PERFORM durable_set_due(v_key, p_id, p_queue, p_workflow || ':' || p_version,
                            CASE WHEN p_leased THEN NULL ELSE v_due END, CASE WHEN p_leased THEN p_owner END, p_leased);
    IF p_timeout IS NOT NULL THEN
        INSERT INTO durable_deadlines (tree_key, run_id, deadline_at) VALUES (v_key, p_id, v_deadline);
    END IF;
    IF NOT p_leased AND v_due <= v_now THEN
        PERFORM pg_notify(durable_channel(), 'new|' || p_queue);
    END IF;
    RETURN QUERY SELECT p_id, CASE WHEN p_leased THEN 'running' ELSE 'pending' END,
                        CASE WHEN p_leased THEN 1 ELSE 0 END, extract(epoch FROM v_due - v_now)::float8;
END
$function$;

CREATE OR REPLACE FUNCTION durable_suspend(p_key bigint, p_id uuid, p_epoch integer, p_fire_at timestamp with time zone)
 RETURNS TABLE(due_now boolean, db_now double precision)
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_now timestamptz := durable_now();
    v_run record;
BEGIN
    UPDATE durable_runs
       SET status = 'suspended', next_wakeup_at = least(next_wakeup_at, p_fire_at)
     WHERE tree_key = p_key AND id = p_id AND lease_epoch = p_epoch AND status = 'running'
    RETURNING next_wakeup_at, queue, workflow, version, lease_owner INTO v_run;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    PERFORM durable_set_due(p_key, p_id, v_run.queue, v_run.workflow || ':' || v_run.version,
                            v_run.next_wakeup_at, v_run.lease_owner, false);
    RETURN QUERY SELECT coalesce(v_run.next_wakeup_at <= v_now, false), extract(epoch FROM v_now)::float8;
END
$function$;

CREATE OR REPLACE FUNCTION durable_tree_key(p_id uuid)
 RETURNS bigint
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$
    SELECT ('x' || substr(replace(p_id::text, '-', ''), 1, 16))::bit(64)::bigint
$function$;

CREATE OR REPLACE FUNCTION durable_wake(p_key bigint, p_id uuid, p_at timestamp with time zone)
 RETURNS boolean
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_stamp timestamptz := durable_now();
    v_run record;
BEGIN
    UPDATE durable_runs
       SET next_wakeup_at = v_stamp
     WHERE tree_key = p_key AND id = p_id
       AND status IN ('running', 'suspended')
       AND (next_wakeup_at IS NULL OR next_wakeup_at > p_at)
    RETURNING status, queue, workflow, version, lease_owner INTO v_run;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF v_run.status = 'suspended' THEN
        INSERT INTO durable_due AS d (tree_key, run_id, queue, workflow, due_at, owner, leased)
        VALUES (p_key, p_id, v_run.queue, v_run.workflow || ':' || v_run.version, v_stamp, v_run.lease_owner, false)
        ON CONFLICT (tree_key, run_id) DO UPDATE SET due_at = least(d.due_at, EXCLUDED.due_at) WHERE NOT d.leased;
        -- (least ignores NULL: a run waiting for an event becomes due now)
    END IF;
    PERFORM pg_notify(durable_channel(), p_id::text || '|' || coalesce(v_run.lease_owner, ''));
    RETURN true;
END
$function$;

CREATE OR REPLACE FUNCTION durable_watch(p_id uuid)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_key bigint := durable_key_of(p_id);
    v_chain uuid;
BEGIN
    SELECT r.chain_root_id INTO v_chain FROM durable_runs r WHERE r.tree_key = v_key AND r.id = p_id;
    UPDATE durable_runs SET notify_done = true
     WHERE tree_key = v_key AND chain_root_id = v_chain AND NOT notify_done
       AND status NOT IN ('completed', 'failed', 'cancelled', 'continued');
END
$function$;

CREATE OR REPLACE FUNCTION durable_worker_beat(p_owner text, p_host text, p_pid integer, p_queues text[], p_workflows text[], p_concurrency integer, p_ttl double precision)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_now timestamptz := now();
    v_expires timestamptz := clock_timestamp() + make_interval(secs => p_ttl);
    v_stale text[];
BEGIN
    UPDATE durable_workers
       SET seen_at = v_now, expires_at = v_expires, queues = p_queues, workflows = p_workflows,
           concurrency = p_concurrency
     WHERE owner = p_owner;
    IF NOT FOUND THEN
        -- this process's first beat: it also forgets processes gone for a week (claims look
        -- no further back), making the runs they still held claimable as waiting runs
        SELECT coalesce(array_agg(w.owner), '{}') INTO v_stale FROM durable_workers w
         WHERE w.expires_at < v_now - interval '7 days';
        IF cardinality(v_stale) > 0 THEN
            UPDATE durable_due d SET leased = false, due_at = v_now WHERE d.leased AND d.owner = ANY(v_stale);
            DELETE FROM durable_workers w WHERE w.owner = ANY(v_stale);
        END IF;
        INSERT INTO durable_workers (owner, host, pid, queues, workflows, concurrency, started_at, seen_at, expires_at)
        VALUES (p_owner, p_host, p_pid, p_queues, p_workflows, p_concurrency, v_now, v_now, v_expires)
        ON CONFLICT (owner) DO UPDATE SET seen_at = EXCLUDED.seen_at, expires_at = EXCLUDED.expires_at;
    END IF;
END
$function$;

CREATE OR REPLACE FUNCTION durable_worker_gone(p_owner text)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_now timestamptz := clock_timestamp();
BEGIN
    UPDATE durable_workers SET expires_at = v_now, seen_at = v_now WHERE owner = p_owner;
END
$function$;
