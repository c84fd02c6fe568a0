"""The web page's crypto and the Python client's talk both ways: boxes sealed by the page's
tweetnacl code (apps/web/src/lib/crypto.ts, run by vitest) open with kuno.client.crypto, and
the PyNaCl vectors the page's own tests open are boxes Python made (and opens)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kuno.client.crypto import DecryptionError, KeyPair, open_sealed
from tests.client.web_vectors import FIXTURE

WEB = Path(__file__).resolve().parents[2] / "apps" / "web"
VITEST = WEB / "node_modules" / ".bin" / "vitest"


def test_the_committed_pynacl_vectors_open_in_python() -> None:
    vectors = json.loads(FIXTURE.read_text())
    recipient = KeyPair.from_private_b64(vectors["recipient"]["privateKey"])
    sender = vectors["sender"]["publicKey"]
    assert recipient.public_b64 == vectors["recipient"]["publicKey"]
    for box in vectors["boxes"]:
        assert open_sealed(box["ciphertext"], box["nonce"], recipient, sender) == box["plaintext"]
    tampered = vectors["tampered"]
    with pytest.raises(DecryptionError):
        open_sealed(tampered["ciphertext"], tampered["nonce"], recipient, sender)


@pytest.mark.skipif(
    shutil.which("node") is None or not VITEST.exists(),
    reason="the page's packages are not installed (cd apps/web && npm ci)",
)
def test_boxes_sealed_by_the_page_open_in_python(tmp_path: Path) -> None:
    out = tmp_path / "boxes.json"
    subprocess.run(
        [str(VITEST), "run", "src/lib/crypto.interop.test.ts"],
        cwd=WEB,
        env={**os.environ, "KUNO_WEB_BOXES": str(out), "CI": "true"},
        check=True,
        capture_output=True,
        timeout=120,
    )
    written = json.loads(out.read_text())
    recipient = KeyPair.from_private_b64(written["recipient"]["privateKey"])
    sender = KeyPair.from_private_b64(written["sender"]["privateKey"])
    # The page derives the same public keys from the private ones as PyNaCl.
    assert recipient.public_b64 == written["recipient"]["publicKey"]
    assert sender.public_b64 == written["sender"]["publicKey"]
    assert len(written["boxes"]) == 4
    for box in written["boxes"]:
        opened = open_sealed(box["ciphertext"], box["nonce"], recipient, sender.public_b64)
        assert opened == box["plaintext"]
