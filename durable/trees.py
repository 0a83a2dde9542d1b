"""A run's tree as a document, and large fan-outs in it as groups: shared by ``durable
tree`` (durable/cli/inspect.py) and the web console's run page (durable/ui/).

More than :data:`GROUP_OVER` children under one parent are shown as groups (by workflow
and child-key prefix) with counts by status and a few examples, instead of a flat list of
UUIDs (``durable tree --all`` shows every child)."""

from __future__ import annotations

import heapq
import re
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

GROUP_OVER = 20   # children under one parent shown one by one up to this many
EXAMPLES = 3      # runs named per group (failed ones first)
SHOW_UP_TO = 2    # a group this small is shown run by run

# the varying tail of a key: digits, or a hex/uuid-like run, after the last separator
_TAIL = re.compile(r"(?<=[-_.:/#])[0-9a-fA-F-]*\d[0-9a-fA-F-]*$|\d+$")
_ORDER = {"failed": 0, "cancelled": 1, "running": 2, "suspended": 3, "pending": 4, "continued": 5, "completed": 6}


def key_prefix(key: str | None) -> str | None:
    """'order-017' -> 'order-*'; None for a child started without key=."""
    if key is None:
        return None
    stem = _TAIL.sub("", key)
    return stem + "*" if stem != key else key


def last_of_chain(node: dict[str, Any]) -> dict[str, Any]:
    while node.get("continued_as"):
        node = node["continued_as"]
    return node


def tree_doc(rows: Sequence[Mapping[str, Any]], run_id: Hashable, limit: int) -> tuple[dict[str, Any], int, bool]:
    """The tree document (``durable tree --json``'s ``tree``) of ``run_id`` from the rows of
    ``store/inspect.py:run_tree`` fetched with ``limit + 1``: children nested under their
    parent, continue-as-new successors under ``continued_as``. Returns (tree, runs read,
    truncated). ``rows`` must hold ``run_id``; they may hold more of its tree (only its
    subtree is in the document), and only the shape (``tree_shape``: no times, no error)."""
    truncated = len(rows) > limit
    nodes = {r["id"]: r for r in (rows[:limit] if truncated else rows)}
    if run_id not in nodes:
        nodes[run_id] = next(r for r in rows if r["id"] == run_id)
    successors = {r["continued_to"] for r in nodes.values() if r["continued_to"] in nodes}
    kids: dict[Hashable, list[Mapping[str, Any]]] = {}
    for r in nodes.values():
        if r["id"] != run_id and r["id"] not in successors and r["parent_id"] in nodes:
            kids.setdefault(r["parent_id"], []).append(r)

    def doc(r: Mapping[str, Any]) -> dict[str, Any]:
        nxt = nodes.get(r["continued_to"]) if r["continued_to"] else None
        return {"id": r["id"], "workflow": r["workflow"], "status": r["status"], "queue": r.get("queue"),
                "created_at": r.get("created_at"), "started_at": r.get("started_at"),
                "finished_at": r.get("finished_at"), "error": r.get("error"), "key": r["child_key"],
                "children": [doc(k) for k in kids.get(r["id"], [])], "continued_as": doc(nxt) if nxt else None}

    return doc(nodes[run_id]), len(nodes), truncated


def group_children(node: dict[str, Any], over: int = GROUP_OVER) -> dict[str, Any]:
    """``node`` (a tree document) with every children list longer than ``over`` replaced by
    groups: {"group": {...}} entries with workflow, key prefix, count, counts by status (of
    each chain's last run) and examples."""
    out = dict(node)
    if node.get("continued_as"):
        out["continued_as"] = group_children(node["continued_as"], over)
    kids = [group_children(k, over) if k.get("children") or k.get("continued_as") else k
            for k in node.get("children", [])]  # a leaf is taken as it is
    if len(kids) <= over:
        out["children"] = kids
        return out
    groups: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
    for k in kids:
        groups.setdefault((k["workflow"], key_prefix(k.get("key"))), []).append(k)
    out["children"] = []
    for (workflow, prefix), members in groups.items():
        if len(members) <= SHOW_UP_TO:
            out["children"] += members
            continue
        statuses = Counter(last_of_chain(m)["status"] for m in members)
        examples = heapq.nsmallest(EXAMPLES, members, key=lambda m: (_ORDER.get(last_of_chain(m)["status"], 9),
                                                                      m.get("key") or "", str(m["id"])))
        out["children"].append({"group": {
            "workflow": workflow, "key_prefix": prefix, "count": len(members),
            "by_status": dict(sorted(statuses.items(), key=lambda kv: _ORDER.get(kv[0], 9))),
            "examples": [{"id": m["id"], "key": m.get("key"), "status": last_of_chain(m)["status"]}
                         for m in examples]}})
    return out
