"""Typed keys of the master's application state."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry

from kuno.common.tokens import TokenSigner, TokenVerifier
from kuno.common.web import HttpMetrics
from kuno.master.config import MasterSettings
from kuno.master.ratelimit import KeyedLimiter
from kuno.master.routing import Router, RoutingMetrics
from kuno.master.sockets import SocketLimit
from kuno.master.users import UserDirectory

SETTINGS = web.AppKey("settings", MasterSettings)
REGISTRY = web.AppKey("registry", CollectorRegistry)
HTTP_METRICS = web.AppKey("http_metrics", HttpMetrics)
ROUTING_METRICS = web.AppKey("routing_metrics", RoutingMetrics)
SIGNER = web.AppKey("signer", TokenSigner)
VERIFIER = web.AppKey("verifier", TokenVerifier)
USERS = web.AppKey("users", UserDirectory)
ROUTER = web.AppKey("router", Router)
LOGIN_LIMITER = web.AppKey("login_limiter", KeyedLimiter)
CLIENT_LIMITER = web.AppKey("client_limiter", KeyedLimiter)
SOCKET_LIMIT = web.AppKey("socket_limit", SocketLimit)
