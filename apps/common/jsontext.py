"""JSON text from a client: parsed, or BadInput with the contract's error code.

Apart from kuno.common.web (which re-exports both names) so that the frame protocol, and
the client that imports it, parse JSON without importing the server side (aiohttp.web,
prometheus_client, the settings).
"""

from __future__ import annotations

import json
from typing import Any


class BadInput(ValueError):
    """Client input that cannot be parsed; the error middleware answers it with 400
    `{"error": error, "reason": reason}` (a handler may raise it instead of fail())."""

    def __init__(self, error: str, reason: str) -> None:
        super().__init__(reason)
        self.error = error
        self.reason = reason


def parse_json(data: str | bytes, what: str = "the body") -> Any:
    """JSON text (bytes must be UTF-8) as Python values.

    Raises BadInput("invalid_json", "<what> is ...") for any text that is not JSON: bad
    UTF-8, bad syntax, a number over Python's digit limit, nesting deeper than the
    parser's recursion limit (about 1,000 levels) -- never another exception.
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise BadInput("invalid_json", f"{what} is not valid UTF-8") from None
    try:
        return json.loads(data)
    except RecursionError:
        raise BadInput("invalid_json", f"{what} is nested too deeply") from None
    except ValueError:
        # JSONDecodeError, and int() refusing more than sys.get_int_max_str_digits().
        raise BadInput("invalid_json", f"{what} is not JSON") from None
