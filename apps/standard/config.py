"""The standard node's configuration: KUNO_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import (
    AnyHttpUrl,
    BeforeValidator,
    Field,
    FilePath,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import NoDecode

from kuno.common.settings import Port, ServiceSettings, split_list
from kuno.common.tokens import load_public_key

NODE_NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
DATABASE_PATTERN = r"^[a-z][a-z0-9_$()+/-]*$"
# Lists are JSON or comma-separated.
NodeNames = Annotated[
    list[Annotated[str, Field(pattern=NODE_NAME_PATTERN, max_length=64)]],
    NoDecode,
    BeforeValidator(split_list),
]
DatabaseNames = Annotated[
    list[Annotated[str, Field(pattern=DATABASE_PATTERN)]], NoDecode, BeforeValidator(split_list)
]


class StandardSettings(ServiceSettings):
    node_name: str = Field(min_length=1, max_length=64, pattern=NODE_NAME_PATTERN)
    couchdb_url: AnyHttpUrl
    couchdb_timeout: float = Field(default=5.0, gt=0, le=120)
    database: str = Field(default="messages", pattern=DATABASE_PATTERN)
    token_public_key_file: FilePath
    #: POST /messages/batch: at most this many messages and this many body bytes (a single
    #: message always fits, whatever this says).
    max_batch_messages: int = Field(default=500, ge=1, le=10000)
    max_batch_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    #: CouchDB writes of POST /messages at once; single messages arriving while they are out
    #: are coalesced into the next write (one _bulk_docs of at most max_batch_messages).
    store_writes_in_flight: int = Field(default=2, ge=1, le=64)
    #: Per recipient: at most this many stored messages and ciphertext bytes; a new message
    #: over either is refused (`queue_full`), nothing stored is dropped. A queue at
    #: queue_near_fraction of a bound counts in kuno_queues_near_bound.
    max_queue_messages: int = Field(default=10_000, ge=1, le=10_000_000)
    max_queue_bytes: int = Field(default=256 * 1024 * 1024, ge=1024, le=1 << 40)
    queue_near_fraction: float = Field(default=0.8, gt=0, le=1)
    page_limit: int = Field(default=100, ge=1, le=1000)
    max_page_limit: int = Field(default=1000, ge=1, le=10000)
    sweep_interval: float = Field(default=300.0, gt=0)
    sweep_batch: int = Field(default=500, ge=1, le=10000)
    port: Port = 4001
    #: The other storage nodes of the mesh, by node name: each should pull every
    #: replicated database from each (the replication role's `kuno-<db>-from-<peer>`).
    #: Empty: no link is expected, none is missing.
    peers: NodeNames = Field(default_factory=list, validate_default=True)
    replicated_databases: DatabaseNames = Field(default_factory=lambda: ["messages", "users"])
    replication_id_prefix: str = Field(default="kuno-", pattern=r"^[A-Za-z0-9_.-]*$")
    #: Seconds between two looks at the links (metrics, /health, watchdog).
    replication_poll_interval: float = Field(default=5.0, gt=0, le=3600)
    #: A link that runs with changes pending and no progress this long is stalled.
    replication_stall_seconds: float = Field(default=120.0, gt=0)
    #: Restart stalled links (false: only report them).
    replication_watchdog: bool = True
    # The filesystem whose free bytes /metrics exports (kuno_filesystem_*; KunoDiskFreeLow).
    filesystem_path: str = Field(default="/", min_length=1)

    @field_validator("peers")
    @classmethod
    def _not_itself(cls, peers: list[str], info: ValidationInfo) -> list[str]:
        if info.data.get("node_name") in peers:
            raise ValueError("lists this node itself; name only the other nodes")
        if len(set(peers)) != len(peers):
            raise ValueError("names a node twice")
        return peers

    @field_validator("token_public_key_file")
    @classmethod
    def _must_hold_ed25519_key(cls, path: Path) -> Path:
        try:
            load_public_key(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise ValueError(f"not a readable Ed25519 public key PEM ({exc})") from None
        return path

    @property
    def max_message_body(self) -> int:
        """POST /messages: base64 ciphertext (4/3 of its size) plus a little JSON."""
        return self.max_ciphertext_bytes * 4 // 3 + 16 * 1024

    @property
    def max_batch_body(self) -> int:
        return max(self.max_batch_bytes, self.max_message_body + 1024)
