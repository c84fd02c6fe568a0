"""The master's cap on open WebSockets and the open-files limit it needs.

Every WebSocket holds one file descriptor from its upgrade request until it closes. A
process out of descriptors cannot accept(), so a connection beyond them would wait
unanswered; the master refuses one over its cap instead, with 503 and a reason, and keeps
its cap below what its open-files limit allows.
"""

from __future__ import annotations

import contextlib
import json
import logging
import resource
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

log = logging.getLogger("kuno.master")

#: Descriptors kept free of WebSockets: client connections to CouchDB and the standard
#: nodes (at most 100 per host), the listening socket, logs.
FILES_RESERVE = 1024
#: Seconds a refused client is asked to wait (Retry-After).
RETRY_AFTER = 5


def raise_open_files_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE to `wanted` descriptors, at most to the hard
    limit (an unprivileged process cannot go beyond it); returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return wanted if soft == resource.RLIM_INFINITY else soft


class SocketLimit:
    """At most `limit` WebSockets at once, counted from the upgrade request (before the
    token is checked: a socket waiting for its auth frame holds a descriptor too) until the
    handler returns.

    `limit` is `configured` (KUNO_MAX_WEBSOCKETS) unless the open-files limit, raised as far
    as the hard limit allows, is below `configured` + FILES_RESERVE: then it is what the
    descriptors allow, logged as a warning at start.
    """

    def __init__(self, configured: int, registry: CollectorRegistry) -> None:
        files = raise_open_files_limit(configured + FILES_RESERVE)
        reserve = min(FILES_RESERVE, files // 4)
        self.limit = max(1, min(configured, files - reserve))
        if self.limit < configured:
            log.warning(
                "the open-files limit allows fewer WebSockets than KUNO_MAX_WEBSOCKETS; "
                "raise the container's nofile ulimit",
                extra={"configured": configured, "open_files": files, "limit": self.limit},
            )
        self.held = 0
        Gauge(
            "kuno_master_websockets_limit",
            "Most WebSockets the master holds at once (KUNO_MAX_WEBSOCKETS, or fewer when the "
            "open-files limit is lower)",
            registry=registry,
        ).set(self.limit)
        self.refused = Counter(
            "kuno_master_websockets_refused",
            "WebSocket upgrades refused with 503 because the master held its limit",
            registry=registry,
        )

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """One socket's place for the duration; 503 `too_many_websockets` when none is
        free."""
        if self.held >= self.limit:
            self.refused.inc()
            log.warning("websocket refused: limit reached", extra={"limit": self.limit})
            reason = (
                f"the master holds its maximum of {self.limit} WebSockets; "
                f"try again in {RETRY_AFTER} s"
            )
            raise web.HTTPServiceUnavailable(
                text=json.dumps({"error": "too_many_websockets", "reason": reason}),
                content_type="application/json",
                headers={"Retry-After": str(RETRY_AFTER)},
            )
        self.held += 1
        try:
            yield
        finally:
            self.held -= 1
