"""Large fan-outs in ``durable tree``: more than :data:`GROUP_OVER` children under one
parent are shown as groups (by workflow and child-key prefix) with counts by status and a
few examples, instead of a flat list of UUIDs (``durable tree --all`` shows every child)."""

from __future__ import annotations

import re
from collections import Counter
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


def group_children(node: dict[str, Any], over: int = GROUP_OVER) -> dict[str, Any]:
    """``node`` (a ``durable tree --json`` document) with every children list longer than
    ``over`` replaced by groups: {"group": {...}} entries with workflow, key prefix, count,
    counts by status (of each chain's last run) and examples."""
    out = dict(node)
    if node.get("continued_as"):
        out["continued_as"] = group_children(node["continued_as"], over)
    kids = [group_children(k, over) for k in node.get("children", [])]
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
        examples = sorted(members, key=lambda m: (_ORDER.get(last_of_chain(m)["status"], 9), m.get("key") or "",
                                                  str(m["id"])))[:EXAMPLES]
        out["children"].append({"group": {
            "workflow": workflow, "key_prefix": prefix, "count": len(members),
            "by_status": dict(sorted(statuses.items(), key=lambda kv: _ORDER.get(kv[0], 9))),
            "examples": [{"id": m["id"], "key": m.get("key"), "status": last_of_chain(m)["status"]}
                         for m in examples]}})
    return out
