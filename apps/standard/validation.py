"""What the standard node accepts from a client, checked before anything reaches CouchDB.

Every refusal is a 400 `{"error", "reason"}` naming the value and what it must be.
"""

from __future__ import annotations

from aiohttp import web

from kuno.common.names import is_valid_username
from kuno.common.web import fail

# Query integers: ASCII digits only (str.isdigit() also takes "²", "①", "⒈", which int()
# refuses), and few enough that int() never meets Python's 4,300-digit limit.
MAX_INT_DIGITS = 20


def ascii_int(text: str, low: int, high: int) -> int:
    """`text` as an integer low..high, or ValueError: ASCII digits 0-9 only, at most
    MAX_INT_DIGITS of them, no sign, space or other numeral."""
    if not 0 < len(text) <= MAX_INT_DIGITS or not text.isascii() or not text.isdigit():
        raise ValueError(f"must be an integer {low}..{high} in ASCII digits")
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"must be an integer {low}..{high}")
    return value


def query_value(request: web.Request, name: str) -> str | None:
    """The query parameter `name` (None when absent), or 400 when it is given twice."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        fail(web.HTTPBadRequest, f"invalid_{name}", f"{name} must be given at most once")
    return values[0] if values else None


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """The query parameter `name` as an integer low..high (`default` when absent), or 400
    `invalid_<name>` naming the bounds."""
    raw = query_value(request, name)
    if raw is None:
        return default
    try:
        return ascii_int(raw, low, high)
    except ValueError as exc:
        fail(web.HTTPBadRequest, f"invalid_{name}", f"{name} {exc}")


def user_id(value: str) -> str:
    """`value` if it is a user id the node accepts, else ValueError saying why: 1-64 of
    A-Z a-z 0-9 _ -, never beginning with "_" (CouchDB's special documents)."""
    if value.startswith("_"):
        raise ValueError("must not begin with _ (CouchDB reserves such names)")
    # The master's name rule (kuno.common.names), in either case: legacy ids keep theirs.
    if not is_valid_username(value):
        raise ValueError("must be 1-64 of A-Z a-z 0-9 _ -")
    return value
