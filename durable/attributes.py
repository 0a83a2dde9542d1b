"""Search attributes: the small, indexed metadata of a run (``customer="c1"``,
``tier=["gold"]``), set at start or by the workflow and filtered on by ``list_runs``.

A value is a scalar (str, int, float, bool) or a list of scalars; keys are plain names.
Everything else is refused here, before anything is written.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from .errors import SearchAttributeError

Scalar = str | int | float | bool
AttributeValue = Scalar | list[Scalar]

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,99}$")
MAX_ATTRIBUTES = 64        # keys per call
MAX_BYTES = 16 * 1024      # the whole document, as JSON


def _scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, (str, int, bool))


def check_key(key: Any, where: str) -> str:
    if not isinstance(key, str) or not _KEY.match(key):
        raise SearchAttributeError(
            f"{where}: search attribute key {key!r} is not a plain name; use letters, digits, '_', '.' or '-' "
            "(starting with a letter or '_', at most 100 characters)")
    return key


def check_attributes(attrs: Any, where: str) -> dict[str, AttributeValue]:
    """``attrs`` as a JSON-ready dict, or SearchAttributeError naming the bad key and the fix."""
    if not isinstance(attrs, Mapping):
        raise SearchAttributeError(f"{where}: search attributes must be a dict of name -> value, got "
                                   f"{type(attrs).__name__}")
    if len(attrs) > MAX_ATTRIBUTES:
        raise SearchAttributeError(f"{where}: {len(attrs)} search attributes at once; at most {MAX_ATTRIBUTES}")
    out: dict[str, AttributeValue] = {}
    for key, value in attrs.items():
        check_key(key, where)
        if isinstance(value, (list, tuple)) and all(_scalar(v) for v in value):
            out[key] = list(value)
        elif _scalar(value):
            out[key] = value
        else:
            raise SearchAttributeError(
                f"{where}: search attribute {key!r} is a {type(value).__name__} ({value!r:.60}); a value must be "
                "a str, int, float or bool, or a list of those. Store structured data in the input or a step "
                "result and index only the fields you search by (e.g. customer='c1')")
    if len(json.dumps(out)) > MAX_BYTES:
        raise SearchAttributeError(f"{where}: search attributes take more than {MAX_BYTES} bytes as JSON; keep "
                                   "them small (ids, names, tags) and store the rest in the input or results")
    return out


def filter_docs(attrs: Any) -> list[list[dict[str, Any]]]:
    """A filter ``{key: value}`` as containment documents: every inner list is OR'd, the
    lists are AND'd. A scalar matches the attribute equal to it or a list holding it; a
    list matches a list holding all of its values."""
    checked = check_attributes(attrs, "attribute filter")
    docs: list[list[dict[str, Any]]] = []
    for key, value in checked.items():
        if isinstance(value, list):
            docs.append([{key: value}])
        else:
            docs.append([{key: value}, {key: [value]}])
    return docs


def filter_value(text: str) -> Any:
    """A filter value as typed by a person (``--attr amount=12.5``, ``attr=tier=gold``): JSON
    when it parses to a scalar or a list (42, true, ["a","b"]), else the text itself."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return text if isinstance(value, (dict, type(None))) else value
