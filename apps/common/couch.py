"""A small async CouchDB client on aiohttp, written to CouchDB 3.x's documented API.

It also runs against pouchdb-server 4.2 (the tests' server); the differences it
handles are listed in DESIGN.md ("CouchDB flavours").
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

JSON = dict[str, Any]


class CouchError(Exception):
    """CouchDB answered with an error status."""

    def __init__(self, status: int, error: str, reason: str) -> None:
        super().__init__(f"CouchDB {status} {error}: {reason}")
        self.status = status
        self.error = error
        self.reason = reason


class BadRequest(CouchError):
    pass


class Unauthorized(CouchError):
    pass


class NotFound(CouchError):
    pass


class Conflict(CouchError):
    pass


class PreconditionFailed(CouchError):
    pass


class Unavailable(CouchError):
    """CouchDB could not be reached, timed out, or answered 5xx."""


_ERRORS_BY_STATUS: dict[int, type[CouchError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    409: Conflict,
    412: PreconditionFailed,
}


def redact_url(url: str) -> str:
    """The URL without any user:password part, for logs and health output."""
    parsed = URL(url)
    if parsed.user is None and parsed.password is None:
        return url
    return str(parsed.with_user(None))


class CouchClient:
    """One CouchDB server: the base URL, optional admin credentials, a shared session.

    Credentials are `user`/`password`, or else a `user:password@` part of `url`; they go
    in an `Authorization: Basic` header made once (aiohttp 3.14 deprecates `auth=`), and
    the client's `url` keeps no credentials. Raises ValueError for a user with a ":"
    (RFC 7617) or a password without a user.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        user: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._session = session
        parsed = URL(url.rstrip("/"))
        if user is None and parsed.user is not None:
            user, password = parsed.user, parsed.password
        if user is None and password is not None:
            raise ValueError("a CouchDB password needs a user")
        self.url = parsed.with_user(None)
        self._headers = {"Accept": "application/json"}
        if user is not None:
            self._headers["Authorization"] = _basic_authorization(user, password or "")
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def __repr__(self) -> str:
        return f"CouchClient({redact_url(str(self.url))!r})"

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        expect: tuple[int, ...] = (200, 201, 202),
    ) -> Any:
        """One request; returns the decoded JSON body or raises the mapped CouchError."""
        try:
            async with self._session.request(
                method,
                self.url.with_path(self.url.path.rstrip("/") + path, encoded=True),
                json=json,
                params=params,
                # Accept: pouchdb-server answers text/plain (and open_revs multipart) otherwise.
                headers=self._headers,
                timeout=self._timeout,
            ) as response:
                body = await response.json(content_type=None)
                if response.status in expect:
                    return body
                raise _error_for(response.status, body)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise Unavailable(503, "unavailable", type(exc).__name__) from exc

    # --- server -------------------------------------------------------------

    async def server_info(self) -> JSON:
        return await self.request("GET", "/")

    # --- documents ----------------------------------------------------------

    async def create(self, db: str, doc: JSON) -> JSON:
        """POST /{db}: a new document with its `_id`; raises Conflict when the id exists.

        POST, not PUT /{db}/{id}: pouchdb-server refuses a PUT to the id `null` (412
        missing_id), which CouchDB 3 accepts either way.
        """
        return await self.request("POST", f"/{quote(db, safe='')}", json=doc)

    async def get(self, db: str, doc_id: str) -> JSON:
        return await self.request("GET", _doc_path(db, doc_id))

    async def live_leaves(self, db: str, doc_id: str) -> list[JSON]:
        """Every live leaf revision of the document: the winner and its conflicts.

        Deleted leaves are left out: they need no further tombstone.
        """
        try:
            leaves = await self.request("GET", _doc_path(db, doc_id), params={"open_revs": "all"})
        except NotFound:
            return []
        return [leaf["ok"] for leaf in leaves if "ok" in leaf and not leaf["ok"].get("_deleted")]

    async def bulk_docs(self, db: str, docs: list[JSON]) -> list[JSON]:
        """Write the documents in one _bulk_docs; one result per document, in order.

        Each result is `{"id", "rev"}` or `{"id", "error", "reason"}` (a conflict is
        `"error": "conflict"`): the request succeeds even when some documents fail.
        """
        results = await self.request(
            "POST", f"/{quote(db, safe='')}/_bulk_docs", json={"docs": docs}
        )
        if not isinstance(results, list) or len(results) != len(docs):
            raise CouchError(502, "bad_response", "_bulk_docs did not answer every document")
        return results

    async def tombstone(self, db: str, leaves: Iterable[JSON]) -> None:
        """Delete the given leaf revisions in one _bulk_docs."""
        tombstones = [{"_id": d["_id"], "_rev": d["_rev"], "_deleted": True} for d in leaves]
        if not tombstones:
            return
        results = await self.bulk_docs(db, tombstones)
        failed = [r for r in results if "error" in r]
        if failed:
            # A leaf written meanwhile: the caller may retry; report the first cause.
            raise Conflict(409, failed[0].get("error", "conflict"), failed[0].get("reason", ""))

    async def delete_all_leaves(self, db: str, doc_ids: Iterable[str]) -> list[str]:
        """Tombstone every live leaf of each document; returns the ids that had any."""
        ids = list(dict.fromkeys(doc_ids))
        leaves = await asyncio.gather(*(self.live_leaves(db, doc_id) for doc_id in ids))
        await self.tombstone(db, (leaf for doc_leaves in leaves for leaf in doc_leaves))
        return [doc_id for doc_id, doc_leaves in zip(ids, leaves, strict=True) if doc_leaves]

    async def find(self, db: str, query: JSON) -> JSON:
        return await self.request("POST", f"/{quote(db, safe='')}/_find", json=query)


def _basic_authorization(user: str, password: str) -> str:
    """An `Authorization` value for HTTP Basic (RFC 7617), credentials in UTF-8."""
    if ":" in user:
        raise ValueError('a CouchDB user name must not contain ":" (RFC 7617)')
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _doc_path(db: str, doc_id: str) -> str:
    return f"/{quote(db, safe='')}/{quote(doc_id, safe='')}"


def _error_for(status: int, body: Any) -> CouchError:
    error = str(body.get("error", "")) if isinstance(body, dict) else ""
    reason = str(body.get("reason", "")) if isinstance(body, dict) else ""
    if status >= 500:
        return Unavailable(status, error or "server_error", reason)
    return _ERRORS_BY_STATUS.get(status, CouchError)(status, error, reason)


SCHEDULER_PAGE = 1000  # entries per /_scheduler request (CouchDB 3's default is 100)
SCHEDULER_MAX_PAGES = 100


async def scheduler_listing(client: CouchClient, kind: str) -> JSON:
    """Every entry of CouchDB 3's `/_scheduler/{kind}` (`kind` "docs" or "jobs"), read in
    pages with `limit`/`skip`: CouchDB answers 100 entries unless told a limit, so one
    plain GET loses the rest on a server with more replications.

    Returns `{"total_rows": n, kind: [entry, ...]}` (at most SCHEDULER_PAGE *
    SCHEDULER_MAX_PAGES entries); raises what `request` raises (NotFound / BadRequest on a
    server without a scheduler, such as pouchdb-server).
    """
    entries: list[Any] = []
    total = 0
    for _ in range(SCHEDULER_MAX_PAGES):
        page = await client.request(
            "GET",
            f"/_scheduler/{kind}",
            params={"limit": str(SCHEDULER_PAGE), "skip": str(len(entries))},
        )
        page = page if isinstance(page, dict) else {}
        rows = page.get(kind) or []
        total = page.get("total_rows", 0)
        entries.extend(rows)
        if len(rows) < SCHEDULER_PAGE or not isinstance(total, int) or len(entries) >= total:
            break
    return {"total_rows": total, kind: entries}


async def replication_states(client: CouchClient) -> list[JSON]:
    """The state of every replication this server runs, credentials removed.

    CouchDB 3 reports it in /_scheduler/docs; pouchdb-server has no scheduler and
    writes `_replication_state` into the _replicator documents instead.
    """
    try:
        scheduler = await scheduler_listing(client, "docs")
    except (NotFound, BadRequest):
        scheduler = None
    if scheduler is not None:
        return [
            _replication(d.get("doc_id", ""), d.get("source"), d.get("target"), d.get("state"))
            for d in scheduler.get("docs", [])
        ]
    try:
        listing = await client.request(
            "GET", "/_replicator/_all_docs", params={"include_docs": "true"}
        )
    except NotFound:
        return []
    return [
        _replication(
            row["id"],
            row["doc"].get("source"),
            row["doc"].get("target"),
            row["doc"].get("_replication_state"),
        )
        for row in listing.get("rows", [])
        if not row["id"].startswith("_design/") and row.get("doc")
    ]


def _replication(doc_id: str, source: Any, target: Any, state: Any) -> JSON:
    return {
        "id": doc_id,
        "source": _endpoint(source),
        "target": _endpoint(target),
        "state": state or "unknown",
    }


def _endpoint(endpoint: Any) -> str:
    url = endpoint.get("url", "") if isinstance(endpoint, dict) else str(endpoint or "")
    return redact_url(url)


def flavour(server_info: JSON) -> str:
    """Which server answers GET /: "couchdb" or "pouchdb-server"."""
    if "couchdb" in server_info:
        return "couchdb"
    if "express-pouchdb" in server_info:
        return "pouchdb-server"
    return "unknown"
