"""What a stored message is, and the checks a body must pass before it is stored."""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictInt,
    StrictStr,
    model_validator,
)

from kuno.common.names import USERNAME_PATTERN

TTL_MS = 30 * 24 * 3600 * 1000
MAX_NONCE_BYTES = 64
#: The largest `seq`: JavaScript's largest safe integer (µs since the epoch fit until 2255).
MAX_SEQ = 2**53 - 1

# The account rule (no leading "_": CouchDB reserves such ids), in either case.
UserId = Annotated[StrictStr, Field(pattern=USERNAME_PATTERN)]
Base64Text = Annotated[StrictStr, Field(min_length=1)]


def decoded_size(value: str, field: str) -> int:
    try:
        return len(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError):
        raise ValueError(f"{field} must be base64") from None


def canonical_uuid(value: str) -> str:
    """The id exactly as given, if it is a UUID in its canonical lowercase form."""
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        raise ValueError("id must be a UUID") from None
    if str(parsed) != value:
        raise ValueError("id must be a UUID in canonical lowercase form")
    return value


class Message(BaseModel):
    """A message as the master posts it. Unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: StrictStr
    type: Literal["message"] = "message"
    senderId: UserId
    recipientId: UserId
    ciphertext: Base64Text
    nonce: Base64Text
    timestamp: StrictInt = Field(ge=0)
    expiresAt: StrictInt = Field(ge=0)
    #: The master's order of acceptance (kuno.master.routing.SendOrder): readers sort by it.
    #: Absent from an older master's body: timestamp * 1000, ties then go by id.
    seq: StrictInt = Field(default=-1, ge=-1, le=MAX_SEQ)
    # Measured once while validating: the size check and the store both need it.
    _ciphertext_bytes: int = PrivateAttr(default=0)

    @model_validator(mode="after")
    def _check(self) -> Message:
        canonical_uuid(self.id)
        self._ciphertext_bytes = decoded_size(self.ciphertext, "ciphertext")
        if decoded_size(self.nonce, "nonce") > MAX_NONCE_BYTES:
            raise ValueError(f"nonce must be at most {MAX_NONCE_BYTES} bytes")
        if not self.timestamp < self.expiresAt <= self.timestamp + TTL_MS:
            raise ValueError("expiresAt must be after timestamp and at most 30 days later")
        if self.seq == -1:
            object.__setattr__(self, "seq", self.timestamp * 1000)
        return self

    @property
    def ciphertext_bytes(self) -> int:
        return self._ciphertext_bytes

    def to_document(self) -> dict[str, Any]:
        """The CouchDB document: the same bytes on every node, so the same revision."""
        return {
            "_id": self.id,
            "type": self.type,
            "senderId": self.senderId,
            "recipientId": self.recipientId,
            "ciphertext": self.ciphertext,
            "nonce": self.nonce,
            "timestamp": self.timestamp,
            "expiresAt": self.expiresAt,
            "seq": self.seq,
        }


def from_document(doc: dict[str, Any]) -> dict[str, Any]:
    """A stored document as the API returns it: `id` instead of CouchDB's fields."""
    return {
        "id": doc["_id"],
        "type": doc.get("type", "message"),
        "senderId": doc["senderId"],
        "recipientId": doc["recipientId"],
        "ciphertext": doc["ciphertext"],
        "nonce": doc["nonce"],
        "timestamp": doc["timestamp"],
        "expiresAt": doc["expiresAt"],
        "seq": doc["seq"],
    }
