-- durable schema, version 6: fan-in reads O(new outcomes), whatever other transactions do.
--
-- Version 1 found a parent's newly finished children by finish_xid >= the snapshot xmin
-- of its previous look: one long transaction anywhere on the server pins that xmin, and
-- every wake re-read every child finished since (55x the rows at 50k children). Now a
-- child's terminal update flags its outcome as unread by the parent; the parent reads the
-- flagged children of its own (a partial index holds only those) and clears the flags of
-- the outcomes it has journaled on its next look. Nothing here depends on xids, so it
-- also holds on a distributed PostgreSQL where xids are per node.
ALTER TABLE durable_runs ADD COLUMN outcome_unread boolean NOT NULL DEFAULT false;

-- A terminal child (completed, failed, cancelled: the statuses a parent's fan-in reads)
-- is flagged in the same update that ends it, whichever function ends it.
CREATE FUNCTION durable_flag_unread() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    NEW.outcome_unread := true;
    RETURN NEW;
END
$$;
CREATE TRIGGER durable_runs_flag_unread BEFORE UPDATE OF status ON durable_runs
    FOR EACH ROW
    WHEN (NEW.parent_id IS NOT NULL AND NEW.status IN ('completed', 'failed', 'cancelled')
          AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION durable_flag_unread();

-- A parent that ends has read all it will read: its children's flags are cleared in its
-- terminal transaction (the children are terminal or being closed after it, in the lock
-- order: the parent, then its children), so the partial index holds live parents' only.
CREATE FUNCTION durable_clear_unread() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    UPDATE durable_runs SET outcome_unread = false WHERE parent_id = NEW.id AND outcome_unread;
    RETURN NULL;
END
$$;
CREATE TRIGGER durable_runs_clear_unread AFTER UPDATE OF status ON durable_runs
    FOR EACH ROW
    WHEN (NEW.status IN ('completed', 'failed', 'cancelled', 'continued')
          AND OLD.status IN ('pending', 'running', 'suspended'))
    EXECUTE FUNCTION durable_clear_unread();

-- Children finished while their parent is still live: unread as far as we know (a parent
-- ignores an outcome it has journaled already, and clears its flag).
UPDATE durable_runs c SET outcome_unread = true
 WHERE c.parent_id IS NOT NULL AND c.status IN ('completed', 'failed', 'cancelled')
   AND EXISTS (SELECT 1 FROM durable_runs p
                WHERE p.id = c.parent_id AND p.status IN ('pending', 'running', 'suspended'));

CREATE INDEX durable_runs_unread_children_idx ON durable_runs (parent_id, finish_xid)
    WHERE outcome_unread;
DROP INDEX durable_runs_finished_children_idx;
