"""Message bodies as the master would post them."""

from __future__ import annotations

import base64
import os
import time
import uuid
from typing import Any

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
