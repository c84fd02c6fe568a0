"""Typed keys of the standard node's application state."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry

from kuno.common.couch import CouchClient
from kuno.common.tokens import TokenVerifier
from kuno.common.web import HttpMetrics
from kuno.standard.config import StandardSettings
from kuno.standard.mesh import MeshMonitor
from kuno.standard.store import MessageStore

SETTINGS = web.AppKey("settings", StandardSettings)
REGISTRY = web.AppKey("registry", CollectorRegistry)
HTTP_METRICS = web.AppKey("http_metrics", HttpMetrics)
VERIFIER = web.AppKey("verifier", TokenVerifier)
COUCH = web.AppKey("couch", CouchClient)
STORE = web.AppKey("store", MessageStore)
MESH = web.AppKey("mesh", MeshMonitor)
