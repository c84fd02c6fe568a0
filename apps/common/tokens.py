"""Short-lived EdDSA (Ed25519) tokens: the master signs, storage nodes only verify.

A storage node holds the public key alone, so a compromised node cannot mint tokens.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "EdDSA"
ISSUER = "kuno-master"
#: The master's service scope: store messages on every node, read and delete for users.
STORE_SCOPE = "store"


class InvalidToken(Exception):
    """Missing, malformed, forged, expired or meant for another audience."""


@dataclass(frozen=True)
class Identity:
    """A verified token: `expires` its `exp` and `auth_time` when its session began (the
    password login it was refreshed from), both seconds since the epoch."""

    subject: str
    scopes: frozenset[str]
    expires: float = float("inf")
    auth_time: float = 0.0

    @property
    def is_master(self) -> bool:
        return STORE_SCOPE in self.scopes


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an Ed25519 private key")
    return key


def generate_key_pair() -> tuple[bytes, bytes]:
    """A new (private PEM, public PEM) pair."""
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


class TokenVerifier:
    # The master sends one service token with every store: remembering tokens already
    # verified (until they expire) saves an Ed25519 verification per request.
    CACHE_SIZE = 1024

    def __init__(self, public_key: Ed25519PublicKey, audience: str, leeway: float = 5.0) -> None:
        self._key = public_key
        self._audience = audience
        self._leeway = leeway
        self._verified: dict[str, tuple[Identity, float]] = {}

    def verify(self, token: str) -> Identity:
        cached = self._verified.get(token)
        if cached is not None and time.time() < cached[1]:
            return cached[0]
        identity, expires = self._decode(token)
        if len(self._verified) >= self.CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (identity, expires)
        return identity

    def _decode(self, token: str) -> tuple[Identity, float]:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=ISSUER,
                leeway=self._leeway,
                options={"require": ["exp", "iat", "sub", "aud", "iss"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from exc
        scope = claims.get("scope", "")
        if not isinstance(scope, str):
            raise InvalidToken("scope must be a string")
        auth_time = claims.get("auth_time", claims["iat"])
        if isinstance(auth_time, bool) or not isinstance(auth_time, int | float):
            raise InvalidToken("auth_time must be a number")
        identity = Identity(
            subject=claims["sub"],
            scopes=frozenset(scope.split()),
            expires=claims["exp"],
            auth_time=auth_time,
        )
        return identity, claims["exp"] + self._leeway


class TokenSigner:
    def __init__(self, private_key: Ed25519PrivateKey, audience: str, ttl: float) -> None:
        self._key = private_key
        self._audience = audience
        self._ttl = ttl

    def sign(
        self,
        subject: str,
        scopes: tuple[str, ...] = (),
        ttl: float | None = None,
        auth_time: int | None = None,
    ) -> str:
        """A token for `subject` living `ttl` seconds (the signer's default when None);
        `auth_time` (RFC 9068, seconds since the epoch) is when its session began: now for
        a login, the old token's for a refresh."""
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": self._audience,
            "sub": subject,
            "iat": now,
            "exp": now + int(ttl if ttl is not None else self._ttl),
            "jti": uuid.uuid4().hex,
            "auth_time": now if auth_time is None else auth_time,
        }
        if scopes:
            claims["scope"] = " ".join(scopes)
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)
