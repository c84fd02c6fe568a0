"""NaCl Box between X25519 key pairs: only the recipient opens it, and only from that sender."""

from __future__ import annotations

import base64

import pytest

from kuno.client.crypto import DecryptionError, KeyPair, open_sealed, seal


def test_the_recipient_opens_what_the_sender_sealed() -> None:
    alice, bob = KeyPair.generate(), KeyPair.generate()
    ciphertext, nonce = seal("grüß dich, bob", alice, bob.public_b64)
    assert "bob" not in base64.b64decode(ciphertext).decode("latin-1")
    assert len(base64.b64decode(nonce)) == 24
    assert open_sealed(ciphertext, nonce, bob, alice.public_b64) == "grüß dich, bob"


def test_each_seal_has_a_fresh_nonce() -> None:
    alice, bob = KeyPair.generate(), KeyPair.generate()
    first, second = seal("same", alice, bob.public_b64), seal("same", alice, bob.public_b64)
    assert first[1] != second[1]
    assert first[0] != second[0]


@pytest.mark.parametrize("who", ["third party", "wrong sender key", "tampered"])
def test_anything_else_does_not_open(who: str) -> None:
    alice, bob, eve = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    ciphertext, nonce = seal("secret", alice, bob.public_b64)
    recipient, sender_key = bob, alice.public_b64
    if who == "third party":
        recipient = eve
    elif who == "wrong sender key":
        sender_key = eve.public_b64
    else:
        raw = bytearray(base64.b64decode(ciphertext))
        raw[-1] ^= 1
        ciphertext = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(DecryptionError):
        open_sealed(ciphertext, nonce, recipient, sender_key)


def test_garbage_is_a_decryption_error_not_a_crash() -> None:
    bob = KeyPair.generate()
    with pytest.raises(DecryptionError):
        open_sealed("not base64!", "AAAA", bob, KeyPair.generate().public_b64)


def test_a_key_pair_survives_its_base64_form() -> None:
    keys = KeyPair.generate()
    again = KeyPair.from_private_b64(keys.private_b64)
    assert again.public_b64 == keys.public_b64
    assert len(base64.b64decode(keys.public_b64)) == 32
