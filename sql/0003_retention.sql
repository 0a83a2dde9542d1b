-- durable schema, version 3: retention (durable gc / EngineSettings.retention_s).
--
-- Retention deletes a finished run's signals with the run. The other signal indexes
-- are partial (unconsumed, or with a delivery id), so without this one every gc batch
-- would scan the whole signals table.
CREATE INDEX durable_signals_run_idx ON durable_signals (run_id);
