"""Write the PyNaCl vectors the web page's crypto tests open (apps/web/src/lib/fixtures).

    .venv/bin/python -m tests.client.web_vectors

Each vector is a box sealed by kuno.client.crypto (PyNaCl) with its keys and nonce, so the
page's tweetnacl code can open it and, sealing the same text with the same nonce, must
make the very same bytes. Rerunning makes new random keys: commit the result.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from kuno.client.crypto import KeyPair, seal

WEB_LIB = Path(__file__).resolve().parents[2] / "apps" / "web" / "src" / "lib"
FIXTURE = WEB_LIB / "fixtures" / "pynacl.json"
TEXTS = [
    "hello bob",
    "",
    "grüß dich, Bob — 你好 👋🏽",
    "line one\nline two\ttabbed",
    "x" * 5000,
]


def vectors() -> dict[str, object]:
    alice, bob = KeyPair.generate(), KeyPair.generate()
    boxes = []
    for text in TEXTS:
        ciphertext, nonce = seal(text, alice, bob.public_b64)
        boxes.append({"plaintext": text, "ciphertext": ciphertext, "nonce": nonce})
    # One box whose last byte is flipped: it must not open anywhere.
    raw = bytearray(base64.b64decode(boxes[0]["ciphertext"]))
    raw[-1] ^= 1
    tampered = {**boxes[0], "ciphertext": base64.b64encode(bytes(raw)).decode("ascii")}
    return {
        "comment": "made by tests/client/web_vectors.py with kuno.client.crypto (PyNaCl)",
        "sender": {"publicKey": alice.public_b64, "privateKey": alice.private_b64},
        "recipient": {"publicKey": bob.public_b64, "privateKey": bob.private_b64},
        "boxes": boxes,
        "tampered": tampered,
    }


def main() -> None:
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps(vectors(), indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {FIXTURE}")


if __name__ == "__main__":
    main()
