"""Large fan-outs in ``durable tree``: the grouping lives in durable/trees.py (the web
console shares it); re-exported here for the CLI."""

from __future__ import annotations

from ..trees import EXAMPLES, GROUP_OVER, SHOW_UP_TO, group_children, key_prefix, last_of_chain, tree_doc

__all__ = ["EXAMPLES", "GROUP_OVER", "SHOW_UP_TO", "group_children", "key_prefix", "last_of_chain", "tree_doc"]
