"""The engine's SQL statements, loaded by name from ``queries.sql`` (next to this file).

``queries.sql`` is the one place the engine's runtime SQL lives, readable as SQL: each
block starts with ``-- name: NAME``; a line ``-- include: NAME`` inlines another block
(fragments are named with a leading underscore and never run alone). Whole-line comments
document the file and are not sent to the server. The typed functions
that run them and return row objects are the other modules of :mod:`durable.store`.
"""

from __future__ import annotations

import re
from importlib import resources

_NAME = re.compile(r"^-- name: ([a-z_][a-z0-9_]*)\s*$")
_INCLUDE = re.compile(r"^-- include: ([a-z_][a-z0-9_]*)\s*$")


def _parse(text: str) -> dict[str, str]:
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        m = _NAME.match(line)
        if m:
            if m.group(1) in blocks:
                raise RuntimeError(f"queries.sql names {m.group(1)!r} twice")
            current = blocks[m.group(1)] = []
        elif current is not None:
            current.append(line)

    def render(name: str, seen: tuple[str, ...] = ()) -> str:
        if name in seen:
            raise RuntimeError(f"queries.sql: {name!r} includes itself")
        out = []
        for line in blocks[name]:
            inc = _INCLUDE.match(line)
            if inc:
                out.append(render(inc.group(1), (*seen, name)))
            elif not line.lstrip().startswith("--"):  # whole-line comments document the file only
                out.append(line)
        return "\n".join(out).strip()

    return {name: render(name) for name in blocks}


SQL: dict[str, str] = _parse(resources.files(__package__).joinpath("queries.sql").read_text(encoding="utf-8"))


def q(name: str) -> str:
    """The statement called ``name`` in queries.sql."""
    return SQL[name]
