"""Shared fixtures. Database plumbing lives in dbharness.py; engine fixtures go below."""

from __future__ import annotations

try:  # tests/ as a package or as a plain rootdir folder
    from .dbharness import TestDB, db, fresh_schema, pg_dsn  # noqa: F401
except ImportError:
    from dbharness import TestDB, db, fresh_schema, pg_dsn  # noqa: F401
