"""aiohttp plumbing both services share: start-up, the app and its set-up, JSON errors,
request metrics, bearer tokens."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from kuno.common import couch
from kuno.common.jsontext import BadInput, parse_json
from kuno.common.logs import configure_logging
from kuno.common.settings import ConfigError, ServiceSettings, exit_on_bad_config, load
from kuno.common.tokens import Identity, InvalidToken, TokenVerifier

log = logging.getLogger("kuno.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Settings = TypeVar("Settings", bound=ServiceSettings)
CleanupContext = Callable[[web.Application], AsyncIterator[None]]

# Polled by Docker and Prometheus every few seconds: logged at debug unless they fail.
QUIET_ROUTES = frozenset({"/health", "/metrics"})


def run_service(
    program: str,
    settings_cls: type[Settings],
    create_app: Callable[[Settings], web.Application],
    describe: Callable[[Settings], dict[str, Any]],
    shutdown_timeout: Callable[[Settings], float] = lambda _: 60.0,
) -> None:
    """Load the settings (ServiceSettings' and the service's own; a bad value exits 2 with
    one line), log `starting` with describe(settings), serve until SIGTERM."""
    try:
        settings = load(settings_cls)
    except ConfigError as exc:
        exit_on_bad_config(program, exc)
    configure_logging(settings.log_level)
    logging.getLogger(program).info("starting", extra=describe(settings))
    # access_log=None: the error middleware logs each request, without query strings.
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        access_log=None,
        print=None,
        shutdown_timeout=shutdown_timeout(settings),
    )


def service_app(
    routes: web.RouteTableDef, client_max_size: int
) -> tuple[web.Application, HttpMetrics]:
    """A service's app: its routes and GET /metrics, the error middleware, request metrics
    in a registry of its own (`HttpMetrics.registry`), bodies of at most `client_max_size`
    bytes."""
    metrics = HttpMetrics(CollectorRegistry())
    app = web.Application(
        middlewares=[make_error_middleware(metrics)], client_max_size=client_max_size
    )
    app.add_routes(routes)
    app.router.add_get("/metrics", metrics_handler(metrics.registry))
    return app, metrics


@contextlib.asynccontextmanager
async def client_session(
    limit: int, limit_per_host: int = 0
) -> AsyncIterator[aiohttp.ClientSession]:
    """The app's one client session (for CouchDB and the other services): at most `limit`
    connections (0: no limit) and `limit_per_host` to one host (0: no limit); statuses are
    the callers' to check."""
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit_per_host)
    async with aiohttp.ClientSession(connector=connector, raise_for_status=False) as session:
        yield session


def retry_until_ready(
    name: str,
    attempt: Callable[[web.Application], Awaitable[bool]],
    retry_seconds: float,
    then: Callable[[web.Application], Awaitable[None]] | None = None,
) -> CleanupContext:
    """A cleanup_ctx step: `attempt(app)` once during start-up (True: ready), then every
    `retry_seconds` in a background task `name` until it is True, then `then(app)` in that
    task. Start-up never waits for a server that is away; cleanup cancels the task."""

    async def keep_trying(app: web.Application, ready: bool) -> None:
        while not ready:
            await asyncio.sleep(retry_seconds)
            ready = await attempt(app)
        if then is not None:
            await then(app)

    async def step(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(keep_trying(app, await attempt(app)), name=name)
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return step


class PayloadTooLarge(web.HTTPClientError):
    """413 without aiohttp's required sizes, for limits the handlers check themselves."""

    status_code = 413


def fail(status: type[web.HTTPException], error: str, reason: str) -> NoReturn:
    """Raise an HTTP error whose body is the contract's {"error", "reason"} JSON."""
    raise status(
        text=web.json_response({"error": error, "reason": reason}).text,
        content_type="application/json",
    )


class HttpMetrics:
    """Request counts and latency by route, in the app's own registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "kuno_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "kuno_http_request_duration_seconds",
            "HTTP request latency by route and method",
            ["route", "method"],
            registry=registry,
        )
        self.couchdb_errors = Counter(
            "kuno_couchdb_errors",
            "CouchDB requests that failed, by kind",
            ["kind"],
            registry=registry,
        )


def _route_name(request: web.Request) -> str:
    # The route template, never the concrete path: user ids stay out of labels and logs.
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def make_error_middleware(metrics: HttpMetrics) -> Any:
    """Render every error as JSON, count requests, log one line each without secrets."""

    @web.middleware
    async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        route = _route_name(request)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = _error_response(exc, route, metrics, request)
        except Exception as exc:
            response = _error_response(exc, route, metrics, request)

        elapsed = time.perf_counter() - started
        metrics.requests.labels(route, request.method, str(response.status)).inc()
        metrics.latency.labels(route, request.method).observe(elapsed)
        quiet = route in QUIET_ROUTES and response.status < 400
        log.log(
            logging.DEBUG if quiet else logging.INFO,
            "request",
            extra={
                "method": request.method,
                "route": route,
                "status": response.status,
                "ms": round(elapsed * 1000, 2),
            },
        )
        return response

    return error_middleware


class ResponseStarted(ConnectionResetError):
    """A handler failed after its response had started; the connection is dropped."""


def _error_response(
    exc: Exception, route: str, metrics: HttpMetrics, request: web.Request
) -> web.Response:
    """The contract's JSON error for what a handler raised; 500 only for our own faults.

    Raises ResponseStarted instead when the handler's response (an upgraded WebSocket, a
    stream) had already started: a response written then would land inside it.
    """
    if request.writer.output_size > 0:
        log.error("error after the response started", extra={"route": route}, exc_info=exc)
        raise ResponseStarted("the response had started") from exc
    if isinstance(exc, web.HTTPException):
        return _as_json(exc)
    if isinstance(exc, BadInput):
        return _json(400, exc.error, exc.reason)
    if isinstance(exc, couch.Unavailable):
        metrics.couchdb_errors.labels(kind="unavailable").inc()
        log.warning("couchdb unavailable", extra={"route": route, "cause": exc.reason})
        return _json(503, "couchdb_unavailable", "the message store is unreachable")
    if isinstance(exc, couch.CouchError):
        metrics.couchdb_errors.labels(kind=exc.error or str(exc.status)).inc()
        log.error("couchdb error", extra={"route": route, "status": exc.status})
        return _json(502, "couchdb_error", "the message store refused the request")
    log.error("unhandled error", extra={"route": route}, exc_info=exc)
    return _json(500, "internal_error", "internal server error")


def _json(status: int, error: str, reason: str) -> web.Response:
    return web.json_response({"error": error, "reason": reason}, status=status)


_ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


def _as_json(exc: web.HTTPException) -> web.Response:
    """An HTTP error as a response in the contract's shape (aiohttp's own errors too)."""
    if exc.content_type == "application/json":
        response = web.Response(status=exc.status, text=exc.text, content_type="application/json")
    else:
        response = _json(exc.status, _ERROR_CODES.get(exc.status, "error"), exc.reason)
    for header in ("Allow", "WWW-Authenticate", "Retry-After"):
        if header in exc.headers:
            response.headers[header] = exc.headers[header]
    return response


def metrics_handler(registry: CollectorRegistry) -> Handler:
    async def metrics(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response

    return metrics


def authenticate(request: web.Request, verifier: TokenVerifier) -> Identity:
    """The caller's identity from `Authorization: Bearer`, or 401."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        fail(web.HTTPUnauthorized, "unauthorized", "a bearer token is required")
    try:
        return verifier.verify(token.strip())
    except InvalidToken:
        fail(web.HTTPUnauthorized, "unauthorized", "the token is invalid or expired")


async def read_json_object(request: web.Request, max_bytes: int | None = None) -> dict[str, Any]:
    """The request body as a JSON object, or 400/413/415 with the contract's JSON error.

    The body must be `application/json` in UTF-8 (RFC 8259; a `charset` other than UTF-8
    is 415, and so is a Content-Type header that cannot be parsed). At most `max_bytes`
    (else the app's client_max_size): a body that says it is longer is refused before it
    is read, one sent in chunks as soon as it passes the limit.
    """
    try:
        content_type = request.content_type
        charset: object = request.charset  # a tuple for an RFC 2231 `charset*=` parameter
    except Exception:
        # aiohttp parses the header with the stdlib's email package, which is not total:
        # `application/json;0*` raises IndexError, other malformed parameters other errors.
        fail(
            web.HTTPUnsupportedMediaType,
            "unsupported_media_type",
            "the Content-Type header is malformed: send application/json",
        )
    if content_type != "application/json":
        fail(web.HTTPUnsupportedMediaType, "unsupported_media_type", "send application/json")
    if charset is not None and (
        not isinstance(charset, str) or charset.strip().lower() not in ("utf-8", "utf8")
    ):
        fail(
            web.HTTPUnsupportedMediaType,
            "unsupported_media_type",
            "send application/json in UTF-8 (charset=utf-8 or none)",
        )
    if max_bytes is not None:
        if request.content_length is not None and request.content_length > max_bytes:
            fail(PayloadTooLarge, "too_large", "the request body is too large")
        request = request.clone(client_max_size=max_bytes)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        fail(PayloadTooLarge, "too_large", "the request body is too large")
    except (ConnectionError, HttpProcessingError):
        # Shorter than its Content-Length, or broken chunks: the client's fault, not ours.
        fail(web.HTTPBadRequest, "incomplete_body", "the request body is incomplete")
    try:
        body = parse_json(raw)
    except BadInput as exc:
        fail(web.HTTPBadRequest, exc.error, exc.reason)
    if not isinstance(body, dict):
        fail(web.HTTPBadRequest, "invalid_json", "the body must be a JSON object")
    return body
