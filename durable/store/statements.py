"""The engine's SQL statements, loaded by name from the files of ``queries/`` (next to this
file): one file per module of :mod:`durable.store` (``queries/runs.sql`` for ``runs.py``, ...).

Those files are the one place the engine's runtime SQL lives, readable as SQL. Each block
starts with a ``-- name: NAME`` line and runs until the next one; names are unique across
the files. A line ``-- include: NAME`` inlines another block (fragments are named with a
leading underscore and never run alone). Parameters are psycopg's, named or positional.
Whole-line comments document the files and are not sent to the server.

Statements run on connections whose search_path is durable's schema. Transactions that take
several locks live in the migrations (``sql/``) as PL/pgSQL functions (``durable_finish``,
``durable_cascade``, ...), one round trip each, and follow THE LOCK ORDER written down at the
top of ``sql/0007_trees.sql`` (ancestors before descendants, within a level by id; the
strongest lock first; a run's row before its queue/deadline/outcome rows; woken runs last;
background statements never wait: SKIP LOCKED or a lock-free read first).

Every table is keyed by tree (``tree_key``, the first 8 bytes of the tree's root id): the hot
paths pass the key of the run they work on, so each statement touches one tree (one shard on
Citus); given only a run id, the store first asks ``key_of`` (a run made before schema
version 7 may not carry its tree's prefix). No statement on a table calls one of the
schema's functions (on Citus it would run on a worker): the time, when a statement needs it,
comes from a function that reads it first. The typed functions that run these statements
and return row objects are the other modules of :mod:`durable.store`.
"""

from __future__ import annotations

import re
from importlib import resources

_NAME = re.compile(r"^-- name: ([a-z_][a-z0-9_]*)\s*$")
_INCLUDE = re.compile(r"^-- include: ([a-z_][a-z0-9_]*)\s*$")


def _parse(files: dict[str, str]) -> dict[str, str]:
    blocks: dict[str, list[str]] = {}
    where: dict[str, str] = {}
    for fname, text in files.items():
        current: list[str] | None = None
        for line in text.splitlines():
            m = _NAME.match(line)
            if m:
                if m.group(1) in blocks:
                    raise RuntimeError(f"queries/{fname} and queries/{where[m.group(1)]} both name {m.group(1)!r}")
                current = blocks[m.group(1)] = []
                where[m.group(1)] = fname
            elif current is not None:
                current.append(line)

    def render(name: str, seen: tuple[str, ...] = ()) -> str:
        if name in seen:
            raise RuntimeError(f"queries/{where[name]}: {name!r} includes itself")
        out = []
        for line in blocks[name]:
            inc = _INCLUDE.match(line)
            if inc:
                out.append(render(inc.group(1), (*seen, name)))
            elif not line.lstrip().startswith("--"):  # whole-line comments document the file only
                out.append(line)
        return "\n".join(out).strip()

    return {name: render(name) for name in blocks}


def _files() -> dict[str, str]:
    folder = resources.files(__package__).joinpath("queries")
    return {f.name: f.read_text(encoding="utf-8")
            for f in sorted(folder.iterdir(), key=lambda f: f.name) if f.name.endswith(".sql")}


SQL: dict[str, str] = _parse(_files())


def q(name: str) -> str:
    """The statement called ``name`` in the files of queries/."""
    return SQL[name]
