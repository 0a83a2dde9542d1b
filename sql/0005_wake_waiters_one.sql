-- durable schema, version 5: the terminal transaction's waiter wake-up costs an index probe.
--
-- Version 4 woke cross-run waiters through durable_wake_waiters(ARRAY[p_id]) from every
-- terminal transaction. A query on an array parameter (`id = ANY($1)`) is re-planned on
-- every call inside plpgsql (the custom plan for a one-element array always looks cheaper
-- than the generic one), which cost ~110 us of each finish (measured with
-- track_functions: durable_after_terminal 8 us self, durable_wake_waiters 110 us per call,
-- flat in the table's size). One run's waiters are found by its chain root instead: a
-- primary-key lookup, then the waiters' primary-key range in waiter order (lock order
-- rule 3 of version 4: parent first, then waiters by id).
CREATE OR REPLACE FUNCTION durable_after_terminal(p_id uuid, p_parent uuid, p_notify_done boolean)
    RETURNS void
    LANGUAGE plpgsql AS $$
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
$$;
