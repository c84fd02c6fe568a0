"""The standard node's application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from kuno.common import couch
from kuno.common.tokens import TokenVerifier, load_public_key
from kuno.common.web import HttpMetrics, make_error_middleware, metrics_handler
from kuno.standard import keys
from kuno.standard.config import StandardSettings
from kuno.standard.store import MessageStore, StoreMetrics
from kuno.standard.views import now_ms, routes

log = logging.getLogger("kuno.standard")

# How often to retry creating the database while CouchDB is unreachable at start.
PREPARE_RETRY_SECONDS = 2.0


def create_app(settings: StandardSettings) -> web.Application:
    registry = CollectorRegistry()
    http_metrics = HttpMetrics(registry)
    # The largest body any route takes; each route refuses more than its own limit.
    app = web.Application(
        middlewares=[make_error_middleware(http_metrics)],
        client_max_size=settings.max_batch_body,
    )
    app[keys.SETTINGS] = settings
    app[keys.REGISTRY] = registry
    app[keys.HTTP_METRICS] = http_metrics
    app[keys.VERIFIER] = TokenVerifier(
        load_public_key(settings.token_public_key_file.read_bytes()), settings.token_audience
    )
    app.cleanup_ctx.append(_couchdb)
    app.cleanup_ctx.append(_maintenance)
    app.add_routes(routes)
    app.router.add_get("/metrics", metrics_handler(registry))
    return app


async def _couchdb(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=100), raise_for_status=False
    ) as session:
        client = couch.CouchClient(
            session,
            str(settings.couchdb_url),
            settings.couchdb_user,
            settings.couchdb_password_value,
            timeout=settings.couchdb_timeout,
        )
        app[keys.COUCH] = client
        app[keys.STORE] = MessageStore(
            client,
            settings.database,
            StoreMetrics(app[keys.REGISTRY]),
            max_write=settings.max_batch_messages,
            writes_in_flight=settings.store_writes_in_flight,
        )
        yield
        await app[keys.STORE].close()


async def _maintenance(app: web.Application) -> AsyncIterator[None]:
    """Prepare the database (retrying while CouchDB is away), then sweep expired messages."""
    store = app[keys.STORE]
    settings = app[keys.SETTINGS]
    prepared = await _try_prepare(store)
    task = asyncio.create_task(_maintain(store, settings, prepared), name="maintenance")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _try_prepare(store: MessageStore) -> bool:
    try:
        await store.prepare()
    except couch.CouchError as exc:
        log.warning("couchdb not ready; will retry", extra={"cause": exc.error})
        return False
    return True


async def _maintain(store: MessageStore, settings: StandardSettings, prepared: bool) -> None:
    while not prepared:
        await asyncio.sleep(PREPARE_RETRY_SECONDS)
        prepared = await _try_prepare(store)
    while True:
        await asyncio.sleep(settings.sweep_interval)
        try:
            swept = await store.sweep(now_ms(), settings.sweep_batch)
        except couch.CouchError as exc:
            log.warning("sweep failed", extra={"cause": exc.error})
            continue
        if swept:
            log.info("swept expired messages", extra={"count": swept})
