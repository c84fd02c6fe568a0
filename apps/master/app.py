"""The master's application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import WSCloseCode, web
from argon2 import PasswordHasher
from prometheus_client import CollectorRegistry

from kuno.common import couch
from kuno.common.tokens import TokenSigner, TokenVerifier, load_private_key
from kuno.common.web import HttpMetrics, make_error_middleware, metrics_handler
from kuno.master import keys
from kuno.master.config import MasterSettings
from kuno.master.fanout import BatchLimits, FanoutMetrics, ServiceToken, StandardNodes
from kuno.master.ratelimit import KeyedLimiter
from kuno.master.routing import Router, RoutingMetrics
from kuno.master.users import Failover, UserDirectory
from kuno.master.views import routes

log = logging.getLogger("kuno.master")

# How often to retry creating the users database on servers that did not answer at start.
PREPARE_RETRY_SECONDS = 5.0
MAX_BODY = 64 * 1024


def create_app(settings: MasterSettings) -> web.Application:
    registry = CollectorRegistry()
    http_metrics = HttpMetrics(registry)
    app = web.Application(
        middlewares=[make_error_middleware(http_metrics)], client_max_size=MAX_BODY
    )
    private_key = load_private_key(settings.token_private_key_file.read_bytes())
    app[keys.SETTINGS] = settings
    app[keys.REGISTRY] = registry
    app[keys.HTTP_METRICS] = http_metrics
    app[keys.ROUTING_METRICS] = RoutingMetrics(registry)
    app[keys.SIGNER] = TokenSigner(private_key, settings.token_audience, settings.token_ttl)
    app[keys.VERIFIER] = TokenVerifier(private_key.public_key(), settings.token_audience)
    app[keys.LOGIN_LIMITER] = KeyedLimiter(settings.login_burst, settings.login_per_minute / 60)
    app[keys.CLIENT_LIMITER] = KeyedLimiter(settings.client_burst, settings.client_per_minute / 60)
    app.cleanup_ctx.append(_services)
    app.cleanup_ctx.append(_prepare_users)
    app.on_shutdown.append(_close_sockets)
    app.add_routes(routes)
    app.router.add_get("/metrics", metrics_handler(registry))
    return app


async def _services(app: web.Application) -> AsyncIterator[None]:
    """One client session for CouchDB and every standard node; the router on top."""
    settings = app[keys.SETTINGS]
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=100), raise_for_status=False
    ) as session:
        clients = [
            couch.CouchClient(
                session,
                str(url),
                settings.couchdb_user,
                settings.couchdb_password_value,
                timeout=settings.couchdb_timeout,
            )
            for url in settings.couchdb_urls
        ]
        hasher = PasswordHasher(
            time_cost=settings.password_time_cost,
            memory_cost=settings.password_memory_kib,
            parallelism=settings.password_parallelism,
        )
        app[keys.USERS] = UserDirectory(Failover(clients), settings.users_database, hasher)
        nodes = None
        if settings.storage_enabled:
            nodes = StandardNodes(
                session,
                settings.node_urls,
                ServiceToken(app[keys.SIGNER]),
                settings.store_timeout,
                FanoutMetrics(app[keys.REGISTRY]),
                BatchLimits(
                    settings.store_batch_messages,
                    settings.store_batch_bytes,
                    settings.store_batches_in_flight,
                ),
            )
            log.info(
                "storing every message on every standard node",
                extra={"nodes": nodes.labels, "timeout": settings.store_timeout},
            )
        else:
            log.warning(
                "STORAGE DISABLED: messages are delivered over WebSocket only and never stored; "
                "messages to offline users are lost"
            )
        app[keys.ROUTER] = Router(
            app[keys.USERS],
            nodes,
            app[keys.SIGNER],
            settings.message_ttl_ms,
            settings.max_ciphertext_bytes,
            app[keys.ROUTING_METRICS],
            delivery_timeout=settings.store_timeout,
        )
        yield
        if nodes is not None:
            await nodes.close()


async def _prepare_users(app: web.Application) -> AsyncIterator[None]:
    """Create the users database on every CouchDB; retry the ones away in the background."""
    users = app[keys.USERS]
    missing = await users.prepare()
    task = asyncio.create_task(_keep_preparing(users, missing), name="prepare-users")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _keep_preparing(users: UserDirectory, missing: list[str]) -> None:
    while missing:
        log.warning("users database not ready; will retry", extra={"servers": missing})
        await asyncio.sleep(PREPARE_RETRY_SECONDS)
        missing = await users.prepare()


async def _close_sockets(app: web.Application) -> None:
    """Let in-flight fan-outs finish and ack (bounded), then close every socket with 1001."""
    router = app[keys.ROUTER]
    timeout = app[keys.SETTINGS].shutdown_timeout
    if not await router.drain(timeout):
        log.warning(
            "shutdown: fan-outs still running after the timeout", extra={"timeout": timeout}
        )
    await router.close_all(WSCloseCode.GOING_AWAY, b"server shutting down")
