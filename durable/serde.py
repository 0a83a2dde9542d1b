"""JSON payloads: pydantic-aware encoding, validation against type hints, size limits.

Everything journaled (inputs, results, step outcomes, signal payloads, errors) goes
through here, so a bad payload is refused at the call that made it, before anything
is written.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python

from .errors import PayloadError

def dumps(value: Any, *, what: str, limit: int) -> str:
    """Encode ``value`` as JSON text; refuse it clearly when it cannot be stored."""
    try:
        plain = to_jsonable_python(value)
        text = json.dumps(plain, separators=(",", ":"), allow_nan=False)
    except (PydanticSerializationError, TypeError, ValueError) as exc:
        raise PayloadError(
            f"{what} is not JSON-serialisable ({type(value).__name__}: {exc}). Pass plain "
            "dict/list/str/int/float/bool/None values or pydantic models; nothing was written."
        ) from None
    size = len(text.encode())
    if size > limit:
        raise PayloadError(
            f"{what} is {size} bytes, over the payload limit of {limit} bytes. Store large data "
            "elsewhere and pass a reference, or raise payload_limit_bytes; nothing was written."
        )
    return text


@lru_cache(maxsize=1024)
def _adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp)


def validate(value: Any, tp: Any, *, what: str) -> Any:
    """Validate/convert a decoded JSON value against a type hint (Any/None = as is)."""
    if tp is None or tp is Any:
        return value
    try:
        return _adapter(tp).validate_python(value)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise PayloadError(f"{what} does not match {_type_name(tp)}: {problems}") from None
    except TypeError:  # a hint pydantic cannot build a validator for: accept as is
        return value


def roundtrip(value: Any, tp: Any, *, what: str, limit: int) -> tuple[str, Any]:
    """Encode for the journal and return (json_text, the value a replay would see)."""
    text = dumps(value, what=what, limit=limit)
    return text, validate(json.loads(text), tp, what=what)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or repr(tp)
