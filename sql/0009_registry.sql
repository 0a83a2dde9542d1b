-- The workflow registry (issue 14): what the processes executing runs have registered, so a
-- pure client that never imported a workflow can start it by name, with its plain-JSON input
-- checked against the registered schema. One row per workflow name: the process that opened
-- last with a different definition (version, queue, schemas, timeout) rewrote it; an
-- unchanged definition is never written again (the engine reads and compares first).
-- On Citus a reference table (durable/store/migrate.py CITUS_REFERENCE): rare writes, read
-- anywhere.
CREATE TABLE durable_workflows (
    name                text PRIMARY KEY,
    version             integer NOT NULL,
    queue               text NOT NULL,
    takes_input         boolean NOT NULL,
    input_schema        jsonb,              -- NULL: the input is not checked (no usable type hint)
    result_schema       jsonb,
    execution_timeout_s double precision,
    registered_by       text NOT NULL,      -- the owner (host:pid:nonce) of the process that wrote it
    updated_at          timestamptz NOT NULL DEFAULT now()
);
