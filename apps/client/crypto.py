"""End-to-end encryption: X25519 key pairs and NaCl Box; servers only see ciphertext."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from nacl.exceptions import CryptoError
from nacl.public import Box, PrivateKey, PublicKey


class DecryptionError(Exception):
    """The message does not open with our key and the sender's: forged, corrupt or not ours."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


@dataclass(frozen=True)
class KeyPair:
    private: PrivateKey

    @classmethod
    def generate(cls) -> KeyPair:
        return cls(PrivateKey.generate())

    @classmethod
    def from_private_b64(cls, text: str) -> KeyPair:
        return cls(PrivateKey(unb64(text)))

    @property
    def private_b64(self) -> str:
        return b64(bytes(self.private))

    @property
    def public_b64(self) -> str:
        return b64(bytes(self.private.public_key))


def seal(text: str, sender: KeyPair, recipient_public_b64: str) -> tuple[str, str]:
    """(ciphertext, nonce), both base64: the text for the recipient's key, signed by ours."""
    box = Box(sender.private, PublicKey(unb64(recipient_public_b64)))
    encrypted = box.encrypt(text.encode("utf-8"))
    return b64(encrypted.ciphertext), b64(encrypted.nonce)


def open_sealed(ciphertext: str, nonce: str, recipient: KeyPair, sender_public_b64: str) -> str:
    try:
        box = Box(recipient.private, PublicKey(unb64(sender_public_b64)))
        return box.decrypt(unb64(ciphertext), unb64(nonce)).decode("utf-8")
    except (CryptoError, ValueError, TypeError) as exc:
        raise DecryptionError(str(exc) or type(exc).__name__) from None
