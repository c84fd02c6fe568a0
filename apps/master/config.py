"""The master's configuration: KUNO_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AnyHttpUrl, Field, FilePath, ValidationInfo, field_validator
from pydantic_settings import NoDecode

from kuno.common.settings import Port, ServiceSettings, split_list
from kuno.common.tokens import load_private_key

# A list variable is either JSON (`["http://a", "http://b"]`) or comma-separated.
UrlList = Annotated[list[AnyHttpUrl], NoDecode]


class MasterSettings(ServiceSettings):
    #: Every CouchDB server holding the replicated `users` database; any one that answers will do.
    couchdb_urls: UrlList = Field(min_length=1)
    couchdb_timeout: float = Field(default=2.0, gt=0, le=60)
    users_database: str = Field(default="users", pattern=r"^[a-z][a-z0-9_$()+/-]*$")

    #: The rollback mode when false: WebSocket delivery only, nothing stored anywhere.
    storage_enabled: bool = True
    #: Every standard node; each message is stored on all of them. Empty only without storage.
    standard_node_urls: UrlList = Field(default_factory=list, validate_default=True)
    store_timeout: float = Field(default=2.0, gt=0, le=60)
    #: Stores to one node are coalesced into `POST /messages/batch` requests: at most this
    #: many messages and body bytes each (keep them within the nodes' max_batch_* limits),
    #: at most this many requests in flight per node; messages arriving meanwhile wait.
    store_batch_messages: int = Field(default=100, ge=1, le=10000)
    store_batch_bytes: int = Field(default=1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    store_batches_in_flight: int = Field(default=2, ge=1, le=64)
    message_ttl_days: float = Field(default=30.0, gt=0, le=30)

    token_private_key_file: FilePath
    #: Seconds a token lives; a WebSocket is closed (4401) when its token expires unless
    #: the client sent a fresher one on it (a `refresh` frame).
    token_ttl: float = Field(default=900.0, ge=2, le=24 * 3600)
    #: Seconds a session lasts from its password login, however often its token is
    #: refreshed (POST /api/refresh); then the user logs in again.
    session_max_age: float = Field(default=7 * 24 * 3600.0, ge=2, le=90 * 24 * 3600)

    #: argon2id cost; the defaults are argon2-cffi's (RFC 9106, low-memory profile).
    password_time_cost: int = Field(default=3, ge=1, le=20)
    password_memory_kib: int = Field(default=64 * 1024, ge=8, le=4 * 1024 * 1024)
    password_parallelism: int = Field(default=4, ge=1, le=64)

    #: Login attempts per username: a burst, then this many per minute.
    login_burst: int = Field(default=5, ge=1)
    login_per_minute: float = Field(default=5.0, gt=0)
    #: Register and login requests per client address: a burst, then this many per minute.
    client_burst: int = Field(default=60, ge=1)
    client_per_minute: float = Field(default=60.0, gt=0)
    #: The header the proxy puts the client's address in (e.g. X-Real-IP). Set it only when
    #: the master is reachable through that proxy alone; unset, the peer address counts.
    client_address_header: str | None = Field(default=None, pattern=r"^[A-Za-z0-9-]+$")

    #: Sends per WebSocket connection: a burst, then this many per second.
    send_burst: int = Field(default=100, ge=1)
    send_per_second: float = Field(default=50.0, gt=0)
    #: WebSockets open at once (authenticated or waiting for their auth frame); one more is
    #: refused with 503 `too_many_websockets`. Each holds a file descriptor: the master
    #: raises its soft open-files limit to this + 1024 and, when the hard limit is lower,
    #: holds only what it allows (logged at start).
    max_websockets: int = Field(default=12000, ge=1, le=1_000_000)
    #: Seconds a client has to send its auth frame when the token is not in a header.
    auth_timeout: float = Field(default=10.0, gt=0)
    heartbeat: float = Field(default=30.0, gt=0)
    #: Seconds shutdown waits for in-flight fan-outs before closing sockets with 1001.
    shutdown_timeout: float = Field(default=10.0, gt=0, le=300)

    port: Port = 4000

    @field_validator("couchdb_urls", "standard_node_urls", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return split_list(value)

    @field_validator("token_private_key_file")
    @classmethod
    def _must_hold_ed25519_key(cls, path: Path) -> Path:
        try:
            load_private_key(path.read_bytes())
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(f"not a readable Ed25519 private key PEM ({exc})") from None
        return path

    @field_validator("standard_node_urls")
    @classmethod
    def _distinct(cls, urls: list[AnyHttpUrl], info: ValidationInfo) -> list[AnyHttpUrl]:
        if info.data.get("storage_enabled", True) and not urls:
            raise ValueError("list every standard node, or set KUNO_STORAGE_ENABLED=false")
        if len({str(url) for url in urls}) != len(urls):
            raise ValueError("a standard node is listed twice")
        return urls

    @property
    def message_ttl_ms(self) -> int:
        return int(self.message_ttl_days * 24 * 3600 * 1000)

    @property
    def node_urls(self) -> list[str]:
        return [str(url).rstrip("/") for url in self.standard_node_urls]
