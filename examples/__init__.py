"""Runnable examples of the seed documents' child-workflow patterns.

Each folder is one pattern group, runnable as ``python -m examples.NAME`` from the
repository root (embedded PostgreSQL, or the server in DURABLE_DSN), and each exposes
``async def main(engine) -> dict`` so tests can run it in-process.
"""
