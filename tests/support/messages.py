"""Message bodies as the master would post them."""

from __future__ import annotations

import base64
import os
import time
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kuno.client.api import KunoClient
    from kuno.master.routing import SendOrder

DAY_MS = 24 * 3600 * 1000


def now_ms() -> int:
    return int(time.time() * 1000)


def message_body(recipient: str = "bob", sender: str = "alice", **fields: Any) -> dict[str, Any]:
    timestamp = fields.pop("timestamp", now_ms())
    body = {
        "id": str(uuid.uuid4()),
        "senderId": sender,
        "recipientId": recipient,
        "ciphertext": base64.b64encode(os.urandom(48)).decode(),
        "nonce": base64.b64encode(os.urandom(24)).decode(),
        "timestamp": timestamp,
        "expiresAt": timestamp + 30 * DAY_MS,
    }
    body.update(fields)
    return body


async def sealed_bodies(
    sender: KunoClient, recipient: str, order: SendOrder, count: int, per_ms: int = 0
) -> list[dict[str, Any]]:
    """`count` bodies "message 0", "message 1", ... sealed by `sender` for `recipient`, each
    with the next seq of `order`, expiring in a day; stamped now, or, with `per_ms`, a burst
    of `per_ms` messages a millisecond."""
    timestamp = now_ms()
    bodies = []
    for index in range(count):
        sealed = await sender.seal(recipient, f"message {index}")
        bodies.append(
            {
                "id": sealed.id,
                "senderId": sender.username,
                "recipientId": recipient,
                "ciphertext": sealed.ciphertext,
                "nonce": sealed.nonce,
                "timestamp": timestamp + (index // per_ms if per_ms else 0),
                "expiresAt": timestamp + DAY_MS,
                "seq": order.next(),
            }
        )
    return bodies
