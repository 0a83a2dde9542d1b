-- durable schema, version 1: runs, their journal, signals, cross-run waits.
--
-- Every run row and every journal row carries root_id (the root of its run tree) so
-- the tables can later be distributed by root_id (Citus) with whole trees co-located.
-- The migration runner executes this file with search_path set to the target schema.

CREATE SEQUENCE durable_lease_tokens;

CREATE TABLE durable_runs (
    id                  uuid PRIMARY KEY,
    root_id             uuid NOT NULL,
    parent_id           uuid,
    parent_pos          integer,            -- the parent's operation position that started it
    chain_root_id       uuid NOT NULL,      -- first run of a continue-as-new chain
    continued_to        uuid,               -- successor when status = 'continued'
    workflow            text NOT NULL,
    version             integer NOT NULL,
    queue               text NOT NULL DEFAULT 'default',
    status              text NOT NULL,
    input               jsonb NOT NULL,
    result              jsonb,
    error               jsonb,
    idempotency_key     text,
    depth               integer NOT NULL DEFAULT 0,
    attempt             integer NOT NULL DEFAULT 1,
    retry_policy        jsonb,
    parent_close_policy text NOT NULL DEFAULT 'terminate',
    execution_timeout_s double precision,
    deadline_at         timestamptz,
    cancel_requested    boolean NOT NULL DEFAULT false,
    notify_done         boolean NOT NULL DEFAULT false,
    lease_owner         text,               -- holder while running; sticky hint while suspended
    lease_token         bigint,
    lease_expires_at    timestamptz,
    next_wakeup_at      timestamptz,        -- due time while pending/suspended; NULL = waiting for an event
    created_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    finished_at         timestamptz,
    finish_xid          xid8,               -- id of the terminal transaction (fan-in scans)
    CONSTRAINT durable_runs_status_valid CHECK (status IN
        ('pending', 'running', 'suspended', 'completed', 'failed', 'cancelled', 'continued')),
    CONSTRAINT durable_runs_policy_valid CHECK (parent_close_policy IN
        ('terminate', 'request_cancel', 'abandon'))
);

-- Claiming: due runs per queue, oldest due first.
CREATE INDEX durable_runs_due_idx ON durable_runs (queue, next_wakeup_at)
    WHERE status IN ('pending', 'suspended');
-- Rescuing: runs whose executor stopped heartbeating.
CREATE INDEX durable_runs_lease_expiry_idx ON durable_runs (lease_expires_at)
    WHERE status = 'running';
-- Cascades and tree views.
CREATE INDEX durable_runs_children_idx ON durable_runs (parent_id)
    WHERE parent_id IS NOT NULL;
-- Fan-in: children of a parent that ended since a snapshot low-water mark.
CREATE INDEX durable_runs_finished_children_idx ON durable_runs (parent_id, finish_xid)
    WHERE finish_xid IS NOT NULL;
-- Continue-as-new chains: handles and waits follow a chain to its newest link.
CREATE INDEX durable_runs_chain_idx ON durable_runs (chain_root_id);
CREATE INDEX durable_runs_root_idx ON durable_runs (root_id);
-- Idempotent starts: one run per (workflow, key).
CREATE UNIQUE INDEX durable_runs_idempotency_uniq ON durable_runs (workflow, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- Retention: terminal runs by age.
CREATE INDEX durable_runs_retention_idx ON durable_runs (finished_at)
    WHERE finished_at IS NOT NULL;
-- Timeouts: runs with a deadline that are not finished.
CREATE INDEX durable_runs_deadline_idx ON durable_runs (deadline_at)
    WHERE deadline_at IS NOT NULL AND finished_at IS NULL;

-- The journal: append-only, ordered per run by seq. pos is the workflow operation
-- position the event belongs to (replay matches by pos; seq is append order).
CREATE TABLE durable_events (
    run_id     uuid NOT NULL,
    seq        integer NOT NULL,
    root_id    uuid NOT NULL,
    pos        integer,
    kind       text NOT NULL,
    name       text,
    data       jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, seq)
);

-- Signals: a durable mailbox per run.
CREATE TABLE durable_signals (
    id           bigserial PRIMARY KEY,
    run_id       uuid NOT NULL,
    root_id      uuid NOT NULL,
    name         text NOT NULL,
    payload      jsonb,
    delivery_id  text,
    consumed_seq integer,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX durable_signals_delivery_uniq ON durable_signals (run_id, delivery_id)
    WHERE delivery_id IS NOT NULL;
CREATE INDEX durable_signals_unconsumed_idx ON durable_signals (run_id, name, id)
    WHERE consumed_seq IS NULL;

-- Cross-run waits (any run waiting on any other: the M:N case).
CREATE TABLE durable_waiters (
    target_id uuid NOT NULL,
    waiter_id uuid NOT NULL,
    PRIMARY KEY (target_id, waiter_id)
);

-- The engine's notion of "now". Tests shift it by replacing this function in their
-- schema (durable.testing.TimeControl); everything time-based reads it.
CREATE FUNCTION durable_now() RETURNS timestamptz
    LANGUAGE sql STABLE AS $$ SELECT now() $$;

-- The wake channel, named after the schema so installs in different schemas of one
-- database do not wake each other.
DO $$
BEGIN
    EXECUTE format(
        'CREATE FUNCTION durable_channel() RETURNS text LANGUAGE sql IMMUTABLE AS %L',
        format('SELECT %L::text', 'durable_wake_' || current_schema()));
END
$$;

-- Wake a waiting run: make it due now and notify, but only when its wake marker
-- actually changes (it was not already due), so a burst of completions costs one row
-- write and one notification. Payload: '<run id>|<sticky owner>'.
CREATE FUNCTION durable_wake(p_id uuid) RETURNS boolean
    LANGUAGE plpgsql AS $$
DECLARE
    v_owner text;
BEGIN
    -- "Already due" is judged by the clock at this check, not by this transaction's
    -- start (now()): a wake that committed first while this one waited for the row
    -- stamped its own, later start time, which must still count as due. (Comparing with
    -- now() made a burst of N simultaneous completions write and notify ~ln N times.)
    UPDATE durable_runs
       SET next_wakeup_at = durable_now()
     WHERE id = p_id
       AND status IN ('pending', 'running', 'suspended')
       AND (next_wakeup_at IS NULL OR next_wakeup_at > durable_now() + (clock_timestamp() - now()))
    RETURNING coalesce(lease_owner, '') INTO v_owner;
    IF FOUND THEN
        PERFORM pg_notify(durable_channel(), p_id::text || '|' || v_owner);
        RETURN true;
    END IF;
    RETURN false;
END
$$;

-- What follows any terminal transition (finish, cancel, timeout): wake the parent,
-- every cross-run waiter, and outside callers waiting on the result.
CREATE FUNCTION durable_after_terminal(p_id uuid, p_parent uuid, p_notify_done boolean)
    RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    v_waiter uuid;
BEGIN
    IF p_parent IS NOT NULL THEN
        PERFORM durable_wake(p_parent);
    END IF;
    FOR v_waiter IN SELECT waiter_id FROM durable_waiters WHERE target_id = p_id LOOP
        PERFORM durable_wake(v_waiter);
    END LOOP;
    IF p_notify_done THEN
        PERFORM pg_notify(durable_channel(), 'done|' || p_id::text);
    END IF;
END
$$;

-- Start children under the parent's lease, with their child_started events, in one
-- transaction. p_children is a JSON array of
-- {id, workflow, version, queue, input, pos, seq, policy, timeout, retry, hash}.
-- Raises DU001 when a child id is taken by a run that is not this parent's child of
-- that workflow, DU002 past the depth bound. Returns false when the lease was lost.
CREATE FUNCTION durable_start_children(p_parent uuid, p_token bigint, p_children jsonb)
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
           c.input, v_parent.depth + 1, c.retry, coalesce(c.policy, 'terminate'),
           c.timeout, durable_now() + make_interval(secs => c.timeout), durable_now()
      FROM jsonb_to_recordset(p_children) AS c(id uuid, workflow text, version int, queue text,
                                                input jsonb, pos int, retry jsonb, policy text,
                                                timeout float8)
    ON CONFLICT (id) DO NOTHING;
    INSERT INTO durable_events (run_id, seq, root_id, pos, kind, name, data)
    SELECT p_parent, c.seq, v_parent.root_id, c.pos, 'child_started', c.workflow,
           jsonb_build_object('child_id', c.id, 'hash', c.hash)
      FROM jsonb_to_recordset(p_children) AS c(id uuid, workflow text, pos int, seq int, hash text);
    FOR v_queue IN SELECT DISTINCT c.queue FROM jsonb_to_recordset(p_children) AS c(queue text) LOOP
        PERFORM pg_notify(durable_channel(), 'new|' || v_queue);
    END LOOP;
    RETURN true;
END
$$;

-- Deliver a signal to a run (following continue-as-new to the chain's live link) and
-- wake it. Deduplicates by delivery id. Raises DU003 for an unknown run and DU004 for
-- a finished one. Returns false for a duplicate delivery.
CREATE FUNCTION durable_send_signal(p_run uuid, p_name text, p_payload jsonb, p_delivery text)
    RETURNS boolean
    LANGUAGE plpgsql AS $$
DECLARE
    v_run durable_runs%ROWTYPE;
    v_id uuid := p_run;
BEGIN
    LOOP
        SELECT * INTO v_run FROM durable_runs WHERE id = v_id FOR SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'DU003', MESSAGE = format('run %s does not exist', p_run);
        END IF;
        EXIT WHEN v_run.status <> 'continued';
        v_id := v_run.continued_to;
    END LOOP;
    IF v_run.status IN ('completed', 'failed', 'cancelled') THEN
        RAISE EXCEPTION USING ERRCODE = 'DU004',
            MESSAGE = format('run %s is already %s; signals go to running runs only', v_id, v_run.status);
    END IF;
    IF p_delivery IS NOT NULL AND EXISTS (
        SELECT 1 FROM durable_signals s JOIN durable_runs r ON r.id = s.run_id
         WHERE r.chain_root_id = v_run.chain_root_id AND s.delivery_id = p_delivery) THEN
        RETURN false;
    END IF;
    INSERT INTO durable_signals (run_id, root_id, name, payload, delivery_id)
    VALUES (v_id, v_run.root_id, p_name, p_payload, p_delivery);
    PERFORM durable_wake(v_id);
    RETURN true;
END
$$;
