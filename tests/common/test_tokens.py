"""EdDSA tokens: what the verifier accepts and refuses."""

from __future__ import annotations

import time

import jwt
import pytest

from kuno.common.tokens import (
    STORE_SCOPE,
    InvalidToken,
    TokenSigner,
    TokenVerifier,
    generate_key_pair,
    load_private_key,
    load_public_key,
)


@pytest.fixture
def keys():
    private_pem, public_pem = generate_key_pair()
    return load_private_key(private_pem), load_public_key(public_pem)


def test_a_signed_token_verifies_to_its_subject_and_scopes(keys):
    private, public = keys
    token = TokenSigner(private, "kuno", ttl=60).sign("master", scopes=(STORE_SCOPE,))
    identity = TokenVerifier(public, "kuno").verify(token)
    assert identity.subject == "master"
    assert identity.is_master


def test_a_user_token_is_not_the_masters(keys):
    private, public = keys
    identity = TokenVerifier(public, "kuno").verify(TokenSigner(private, "kuno", 60).sign("bob"))
    assert (identity.subject, identity.is_master) == ("bob", False)


def test_a_cached_token_stops_verifying_once_it_expires(keys):
    private, public = keys
    verifier = TokenVerifier(public, "kuno", leeway=0)
    token = TokenSigner(private, "kuno", ttl=1).sign("bob")
    assert verifier.verify(token).subject == "bob"
    assert verifier.verify(token).subject == "bob"  # from the cache
    time.sleep(2.1)  # past `exp` by the wall clock, which PyJWT reads itself
    with pytest.raises(InvalidToken):
        verifier.verify(token)


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "bob", "aud": "kuno", "iss": "someone-else"},
        {"sub": "bob", "aud": "kuno"},
        {"aud": "kuno", "iss": "kuno-master"},
        {"sub": "bob", "aud": "kuno", "iss": "kuno-master", "scope": ["store"]},
    ],
    ids=["other-issuer", "no-issuer", "no-subject", "scope-not-string"],
)
def test_tokens_missing_or_misusing_claims_are_refused(keys, claims):
    private, public = keys
    now = int(time.time())
    token = jwt.encode({"iat": now, "exp": now + 60, **claims}, private, algorithm="EdDSA")
    with pytest.raises(InvalidToken):
        TokenVerifier(public, "kuno").verify(token)


def test_an_unsigned_token_is_refused(keys):
    _, public = keys
    now = int(time.time())
    token = jwt.encode(
        {
            "sub": "master",
            "aud": "kuno",
            "iss": "kuno-master",
            "iat": now,
            "exp": now + 60,
            "scope": STORE_SCOPE,
        },
        None,
        algorithm="none",
    )
    with pytest.raises(InvalidToken):
        TokenVerifier(public, "kuno").verify(token)
