"""The standard node's application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from kuno.common import couch
from kuno.common.tokens import TokenVerifier, load_public_key
from kuno.common.web import client_session, retry_until_ready, service_app
from kuno.standard import keys
from kuno.standard.config import StandardSettings
from kuno.standard.filesystem import FilesystemCollector
from kuno.standard.links import expected_links
from kuno.standard.mesh import MeshMonitor, register_metrics
from kuno.standard.store import MessageStore, QueueBounds, StoreMetrics
from kuno.standard.views import now_ms, routes
from kuno.standard.watchdog import Watchdog

log = logging.getLogger("kuno.standard")

# How often to check the schema again while CouchDB is away or the schema incomplete.
SCHEMA_RETRY_SECONDS = 2.0


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
    # Ready once the deployment's schema is there (checked, never created), then sweep.
    app.cleanup_ctx.append(
        retry_until_ready("maintenance", _check_schema, SCHEMA_RETRY_SECONDS, then=_sweep)
    )
    app.cleanup_ctx.append(_watch_links)
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
        app[keys.MESH] = MeshMonitor(
            client,
            session,
            settings.node_name,
            nodes=len(settings.peers) + 1,
            links=expected_links(settings.node_name, settings.peers, settings.replicated_databases),
            databases=sorted({settings.database, *settings.replicated_databases}),
            id_prefix=settings.replication_id_prefix,
            stall_seconds=settings.replication_stall_seconds,
            timeout=settings.couchdb_timeout,
        )
        register_metrics(app[keys.REGISTRY], app[keys.MESH], settings.replication_watchdog)
        app[keys.REGISTRY].register(FilesystemCollector(settings.filesystem_path))
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


async def _check_schema(app: web.Application) -> bool:
    """True once CouchDB has the database and indexes this node needs (/health says what
    is missing until then); the deployment creates them, this node never does."""
    try:
        missing = await app[keys.STORE].check_schema()
    except couch.CouchError as exc:
        log.warning("couchdb not ready; will retry", extra={"cause": exc.error})
        return False
    if missing:
        log.warning(
            "not ready: the schema is incomplete (the deployment creates it); will retry",
            extra={"missing": missing},
        )
        return False
    log.info("schema checked; ready", extra={"database": app[keys.STORE].database})
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


async def _watch_links(app: web.Application) -> AsyncIterator[None]:
    """Look at the replication links every poll interval; restart stalled ones unless the
    watchdog is off (KUNO_REPLICATION_WATCHDOG=false)."""
    settings, mesh = app[keys.SETTINGS], app[keys.MESH]
    watchdog = (
        Watchdog(app[keys.COUCH], app[keys.REGISTRY], settings.replication_stall_seconds)
        if settings.replication_watchdog
        else None
    )

    async def watch() -> None:
        while True:
            try:
                view = await mesh.look()
                if watchdog is not None and view.couchdb_up:
                    await watchdog.check(view.links, view.flavour)
            except Exception:
                log.exception("looking at the replication links failed")
            await asyncio.sleep(settings.replication_poll_interval)

    task = asyncio.create_task(watch(), name="links")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
