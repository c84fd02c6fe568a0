"""The standard node's application factory."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from kuno.common import couch
from kuno.common.tokens import TokenVerifier, load_public_key
from kuno.common.web import client_session, retry_until_ready, service_app
from kuno.standard import keys
from kuno.standard.config import StandardSettings
from kuno.standard.store import MessageStore, QueueBounds, StoreMetrics
from kuno.standard.views import now_ms, routes

log = logging.getLogger("kuno.standard")

# How often to retry creating the database while CouchDB is unreachable at start.
PREPARE_RETRY_SECONDS = 2.0


def create_app(settings: StandardSettings) -> web.Application:
    # The largest body any route takes; each route refuses more than its own limit.
    app, http_metrics = service_app(routes, client_max_size=settings.max_batch_body)
    app[keys.SETTINGS] = settings
    app[keys.REGISTRY] = http_metrics.registry
    app[keys.HTTP_METRICS] = http_metrics
    app[keys.VERIFIER] = TokenVerifier(
        load_public_key(settings.token_public_key_file.read_bytes()), settings.token_audience
    )
    app.cleanup_ctx.append(_couchdb)
    # Prepare the database (retrying while CouchDB is away), then sweep expired messages.
    app.cleanup_ctx.append(
        retry_until_ready("maintenance", _try_prepare, PREPARE_RETRY_SECONDS, then=_sweep)
    )
    return app


async def _couchdb(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    async with client_session(limit=100) as session:
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
            bounds=QueueBounds(
                settings.max_queue_messages,
                settings.max_queue_bytes,
                settings.queue_near_fraction,
            ),
        )
        yield
        await app[keys.STORE].close()


async def _try_prepare(app: web.Application) -> bool:
    try:
        await app[keys.STORE].prepare()
    except couch.CouchError as exc:
        log.warning("couchdb not ready; will retry", extra={"cause": exc.error})
        return False
    return True


async def _sweep(app: web.Application) -> None:
    """Delete expired messages every sweep_interval seconds, forever."""
    store, settings = app[keys.STORE], app[keys.SETTINGS]
    while True:
        await asyncio.sleep(settings.sweep_interval)
        try:
            swept = await store.sweep(now_ms(), settings.sweep_batch)
        except couch.CouchError as exc:
            log.warning("sweep failed", extra={"cause": exc.error})
            continue
        if swept:
            log.info("swept expired messages", extra={"count": swept})
