"""The master's application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import WSCloseCode, web
from argon2 import PasswordHasher

from kuno.common.tokens import TokenSigner, TokenVerifier, load_private_key
from kuno.common.web import client_session, retry_until_ready, service_app
from kuno.master import keys
from kuno.master.config import MasterSettings
from kuno.master.fanout import BatchLimits, FanoutMetrics, ServiceToken, StandardNodes
from kuno.master.ratelimit import KeyedLimiter
from kuno.master.routing import Router, RoutingMetrics
from kuno.master.users import Failover, UserDirectory
from kuno.master.views import routes

log = logging.getLogger("kuno.master")

# How often to check the schema again on servers that lacked it or did not answer.
SCHEMA_RETRY_SECONDS = 5.0
MAX_BODY = 64 * 1024


def create_app(settings: MasterSettings) -> web.Application:
    app, http_metrics = service_app(routes, client_max_size=MAX_BODY)
    private_key = load_private_key(settings.token_private_key_file.read_bytes())
    app[keys.SETTINGS] = settings
    app[keys.REGISTRY] = http_metrics.registry
    app[keys.HTTP_METRICS] = http_metrics
    app[keys.ROUTING_METRICS] = RoutingMetrics(http_metrics.registry)
    app[keys.SIGNER] = TokenSigner(private_key, settings.token_audience, settings.token_ttl)
    app[keys.VERIFIER] = TokenVerifier(private_key.public_key(), settings.token_audience)
    app[keys.LOGIN_LIMITER] = KeyedLimiter(settings.login_burst, settings.login_per_minute / 60)
    app[keys.CLIENT_LIMITER] = KeyedLimiter(settings.client_burst, settings.client_per_minute / 60)
    app.cleanup_ctx.append(_services)
    # The deployment's users database on every CouchDB, checked (never created); the
    # servers away or without it are checked again in the background.
    app.cleanup_ctx.append(retry_until_ready("check-schema", _check_schema, SCHEMA_RETRY_SECONDS))
    app.on_shutdown.append(_close_sockets)
    return app


async def _services(app: web.Application) -> AsyncIterator[None]:
    """One client session for CouchDB and every standard node; the router on top."""
    settings = app[keys.SETTINGS]
    async with client_session(limit=0, limit_per_host=100) as session:
        hasher = PasswordHasher(
            time_cost=settings.password_time_cost,
            memory_cost=settings.password_memory_kib,
            parallelism=settings.password_parallelism,
        )
        app[keys.USERS] = UserDirectory(
            Failover.of(session, settings), settings.users_database, hasher
        )
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


async def _check_schema(app: web.Application) -> bool:
    """True once every CouchDB has the users database (/health names what is missing
    until then); the deployment creates it, the master never does."""
    missing = await app[keys.USERS].check_schema()
    if missing:
        log.warning(
            "schema incomplete or couchdb away (the deployment creates the schema); will retry",
            extra={"missing": missing},
        )
    return not missing


async def _close_sockets(app: web.Application) -> None:
    """Let in-flight fan-outs finish and ack (bounded), then close every socket with 1001."""
    router = app[keys.ROUTER]
    timeout = app[keys.SETTINGS].shutdown_timeout
    if not await router.drain(timeout):
        log.warning(
            "shutdown: fan-outs still running after the timeout", extra={"timeout": timeout}
        )
    await router.close_all(WSCloseCode.GOING_AWAY, b"server shutting down")
