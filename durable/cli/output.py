"""Output helpers of the ``durable`` CLI: JSON encoding, colours, tables, trees, and
human formats for times and durations. Only the CLI (and the demo) print."""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TextIO

from ..durations import ago, duration, took
from ..failures import root_line

_STYLES = {
    "bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "blue": "34",
    "magenta": "35", "cyan": "36",
}
STATUS_STYLE = {
    "completed": "green", "failed": "red", "cancelled": "yellow", "running": "cyan",
    "suspended": "blue", "pending": "magenta", "continued": "dim",
}


def jsonable(value: Any) -> Any:
    """``json.dumps(default=...)`` for what the database hands back."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: Any, *, indent: int | None = 2) -> str:
    return json.dumps(value, default=jsonable, indent=indent, ensure_ascii=False)


def compact(value: Any, width: int = 80) -> str:
    """One-line JSON, cut to ``width`` characters."""
    text = json.dumps(value, default=jsonable, separators=(",", ":"), ensure_ascii=False)
    return text if len(text) <= width else text[: max(1, width - 1)] + "…"


def is_tty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):
        return False


def use_color(stream: TextIO) -> bool:
    """Colours only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    return os.environ.get("NO_COLOR") is None and is_tty(stream)


def fit(widths: list[int], headers: list[str], shrink: Iterable[int], width: int | None) -> list[int]:
    """Column widths that fit ``width`` characters (two spaces between columns), taken from
    the ``shrink`` columns (free text), the widest first, down to their header's width
    (at least 6); the others keep theirs. ``width`` None: no limit."""
    widths = list(widths)
    if width is None:
        return widths
    floor = {i: max(len(headers[i]), 6) for i in shrink if i < len(widths)}
    excess = _total(widths) - width
    while excess > 0:
        cands = [i for i in floor if widths[i] > floor[i]]
        if not cands:
            break
        i = max(cands, key=lambda c: (widths[c], c))
        second = max([widths[c] for c in cands if c != i] + [floor[i]])
        cut = min(excess, widths[i] - max(second, floor[i]) or 1)
        widths[i] -= cut
        excess -= cut
    return widths


def cut(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters: cut with an ellipsis, never wrapped."""
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


class Out:
    """Where the CLI writes: stdout for results, stderr for messages."""

    def __init__(self, stdout: TextIO | None = None, stderr: TextIO | None = None, *,
                 json_mode: bool = False, color: bool | None = None) -> None:
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.json_mode = json_mode
        self.color = (not json_mode and use_color(self.stdout)) if color is None else color
        self.err_color = use_color(self.stderr) if color is None else color
        # tables are fitted to a terminal (COLUMNS, else its size); piped output is never cut
        self.width = shutil.get_terminal_size().columns if is_tty(self.stdout) else None

    def print(self, text: str = "") -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def err(self, text: str) -> None:
        self.stderr.write(text + "\n")
        self.stderr.flush()

    def json(self, value: Any) -> None:
        self.print(dumps(value))

    def c(self, text: str, style: str | None) -> str:
        if not self.color or not style:
            return text
        codes = ";".join(_STYLES[s] for s in style.split("+") if s in _STYLES)
        return f"\x1b[{codes}m{text}\x1b[0m" if codes else text

    def status(self, status: str) -> str:
        return self.c(status, STATUS_STYLE.get(status))

    def table(self, headers: list[str], rows: Iterable[list[str]], styles: dict[int, Any] | None = None,
              shrink: Iterable[int] = (), ids: int | None = None) -> None:
        """Aligned columns; ``styles`` maps a column index to a function(cell) -> style.

        On a terminal too narrow for the table, the run ids of column ``ids`` are shortened
        to the shortest prefix that tells the rows apart (the CLI takes unique prefixes),
        then the ``shrink`` columns (free text) are cut with an ellipsis, the widest first,
        and whatever still overflows is cut at the edge: lines are never wrapped. Piped
        output and --json are never cut."""
        rows = [[str(c) for c in r] for r in rows]
        widths = _measure(headers, rows)
        if self.width is not None and _total(widths) > self.width:
            if ids is not None and rows:
                n = unique_prefix_len([r[ids] for r in rows])
                rows = [[c[:n] if i == ids else c for i, c in enumerate(r)] for r in rows]
                widths = _measure(headers, rows)
            widths = fit(widths, headers, shrink, self.width)
            rows = [[cut(cell, widths[i]) for i, cell in enumerate(r)] for r in rows]
        self._line([(h, "bold") for h in headers], widths)
        for r in rows:
            self._line([(cell, (lambda st: st(cell) if callable(st) else st)((styles or {}).get(i)))
                        for i, cell in enumerate(r)], widths)

    def _line(self, cells: list[tuple[str, Any]], widths: list[int]) -> None:
        """One table line, styled cell by cell, cut at the terminal's edge."""
        parts: list[str] = []
        used = 0
        for i, (cell, style) in enumerate(cells):
            text = cell if i == len(cells) - 1 else cell.ljust(widths[i])
            room = None if self.width is None else self.width - used
            if room is not None and len(text.rstrip()) > room:
                if room > 0:
                    parts.append(self.c(cut(text.rstrip(), room), style))
                break
            parts.append(self.c(text, style))
            used += len(text) + 2
        self.print("  ".join(parts).rstrip())


def _measure(headers: list[str], rows: list[list[str]]) -> list[int]:
    widths = [len(h) for h in headers]
    for r in rows:
        for i, cell in enumerate(r):
            widths[i] = max(widths[i], len(cell))
    return widths


def _total(widths: list[int]) -> int:
    return sum(widths) + 2 * (len(widths) - 1)


def unique_prefix_len(ids: list[str], least: int = 8) -> int:
    """The shortest length (at least ``least``) at which the prefixes of ``ids`` are as
    distinct as the ids (a tree's run ids share their first 16 hex digits)."""
    distinct = len(set(ids))
    longest = max((len(i) for i in ids), default=least)
    n = least
    while n < longest and len({i[:n] for i in ids}) < distinct:
        n += 1
    return min(n, longest)


# --- human formats ----------------------------------------------------------------------


def error_line(error: Any) -> str:
    """``Type: message`` of an error document's root cause, else the value as JSON."""
    return root_line(error) if isinstance(error, dict) else compact(error)


def event_detail(kind: str, data: Any, width: int = 70) -> str:
    """A one-line summary of a journal event's data."""
    d = data if isinstance(data, dict) else {}
    if kind == "step_completed":
        return f"attempt {d.get('attempt', '?')} → {compact(d.get('result'), width - 14)}"
    if kind in ("step_retry", "step_failed"):
        return f"attempt {d.get('attempt', '?')}: {error_line(d.get('error'))}"[:width]
    if kind == "child_started":
        return f"child {d.get('child_id')}"
    if kind in ("child_completed", "run_outcome") and d.get("status") == "completed":
        return f"{d.get('run_id')} → {compact(d.get('result'), max(10, width - 40))}"
    if kind in ("child_failed", "child_cancelled", "run_outcome"):
        return f"{d.get('run_id')} {d.get('status')}: {error_line(d.get('error'))}"[:width]
    if kind == "signal_received":
        return compact(d.get("payload"), width)
    if kind == "timer_started":
        return f"sleep {duration(d.get('seconds'))}"
    if kind == "wait_started":
        return f"wait for run {d.get('run_id')}"
    if kind == "resumed":  # re-driving runs: what the resume superseded
        lo, n = int(d.get("superseded_from") or 0), int(d.get("superseded") or 0)
        tail = f"events {lo}..{lo + n - 1} superseded" if n else "nothing superseded"
        kids = len(d.get("rerun_children") or [])
        return (tail + (f", {kids} child(ren) re-run" if kids else "")
                + f"; was {d.get('previous_status')}: {error_line(d.get('previous_error'))}")[:width]
    return compact(d, width) if d else ""


def clip(value: Any, width: int | None) -> str:
    """A payload as JSON, cut to ``width`` characters unless None."""
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if width is None or len(text) <= width else text[: width - 1] + "…  (--full shows all)"


def render_tree(out: Out, tree: dict[str, Any], now: datetime) -> None:
    """Draw a run tree (``durable tree --json``'s shape): children nested under their
    parent, continue-as-new successors as ``↪`` lines after their predecessor."""

    def label(n: dict[str, Any], cont: bool) -> str:
        if "group" in n:  # a large fan-out's group (durable/trees.py)
            g = n["group"]
            key = f" key {g['key_prefix']}" if g["key_prefix"] else ""
            counts = ", ".join(f"{k} {out.status(s)}" for s, k in g["by_status"].items())
            eg = ", ".join(f"{e['key'] or e['id']} {out.status(e['status'])}" for e in g["examples"])
            head = f"[{g['count']} × {g['workflow']}{key}]"
            return f"{out.c(head, 'bold')}  {counts}  e.g. {eg}"
        key = f" [{n['key']}]" if n.get("key") else ""
        extra = f"  {out.c(error_line(n['error']), 'red')}" if n["status"] == "failed" and n["error"] else ""
        if n["status"] == "cancelled" and isinstance(n["error"], dict) and n["error"].get("reason"):
            extra = f"  ({n['error']['reason']})"
        return (("↪ continued as " if cont else "") + f"{out.c(str(n['id']), 'bold' if not cont else None)}  "
                f"{n['workflow']}{key}  {out.status(n['status'])}  {took(n, now)}{extra}")

    def chain(first: dict[str, Any]) -> list[tuple[dict[str, Any], bool]]:
        items, cont = [], False
        n: dict[str, Any] | None = first
        while n is not None:
            items.append((n, cont))
            n, cont = n.get("continued_as"), True
        return items

    def draw(n: dict[str, Any], prefix: str) -> None:
        entries = [e for child in n.get("children", []) for e in chain(child)]
        for i, (child, cont) in enumerate(entries):
            last = i == len(entries) - 1
            out.print(prefix + ("└── " if last else "├── ") + label(child, cont))
            draw(child, prefix + ("    " if last else "│   "))

    for n, cont in chain(tree):
        out.print(label(n, cont))
        draw(n, "")
