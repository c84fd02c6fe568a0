"""User names: which are valid, and the canonical form that is the user id.

One place for both services (register, login, key lookup, a WebSocket `send.to`):

- a name matches `USERNAME_PATTERN` (ASCII letters, digits, `_`, `-`; 1 to 64) and does
  not begin with `_`: CouchDB reserves ids beginning with `_` (`_design/`, `_local/`,
  `_all_docs`, `_security`, ...), and the account's document id is derived from the name;
- names are compared case-insensitively: the canonical form, the lower-case name, is
  the user id (a token's subject, a message's `senderId`/`recipientId`, the account
  document's `_id`); `Alice` and `alice` are one name;
- `RESERVED_USERNAMES` (canonical forms) can never be registered.
"""

from __future__ import annotations

import re
from typing import Any

USERNAME_PATTERN = r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,63}$"
USERNAME_RULE = "username must be 1 to 64 ASCII letters, digits, '_' or '-', not beginning with '_'"
# The service token's subject: no user may be called so, whatever the case.
RESERVED_USERNAMES = frozenset({"master"})

_USERNAME = re.compile(USERNAME_PATTERN)


class InvalidUsername(ValueError):
    """The value is not a valid user name; str(exc) is USERNAME_RULE."""

    def __init__(self) -> None:
        super().__init__(USERNAME_RULE)


def is_valid_username(value: Any) -> bool:
    """True when value is a str that is a valid user name (any case)."""
    return isinstance(value, str) and _USERNAME.fullmatch(value) is not None


def canonical_username(value: Any) -> str:
    """The user id of a name as a client typed it: `"Alice"` → `"alice"`.

    Raises InvalidUsername for anything that is not a valid name (not a str, empty, over
    64 characters, a character outside `[A-Za-z0-9_-]`, a leading `_`), so the result can
    never address a CouchDB special document or endpoint.
    """
    if not is_valid_username(value):
        raise InvalidUsername()
    # The pattern is ASCII only, so lower() cannot change the length or leave ASCII.
    return value.lower()


def is_reserved(user_id: str) -> bool:
    """True for canonical names nobody may register (see RESERVED_USERNAMES)."""
    return user_id in RESERVED_USERNAMES
