"""The master reaches its CouchDB servers with KUNO_COUCHDB_USER/_PASSWORD, and only so."""

from __future__ import annotations

import logging

import pytest

from kuno.client.crypto import KeyPair
from tests.master.conftest import PASSWORD


@pytest.mark.parametrize(
    ("right", "registered"),
    [
        pytest.param(True, True, id="the admin's credentials"),
        pytest.param(False, False, id="a wrong password"),
    ],
)
async def test_registration_needs_the_right_couchdb_credentials(
    start_master, couchdb, database, caplog, right, registered
):
    caplog.set_level(logging.DEBUG)
    password = couchdb.password if right else "not-the-password"
    master = await start_master(couchdb_user=couchdb.user, couchdb_password=password)

    key = KeyPair.generate().public_b64
    response = await master.post(
        "/api/register", json={"username": "carol", "password": PASSWORD, "publicKey": key}
    )

    assert (response.status == 201) is registered, await response.text()
    assert couchdb.password not in caplog.text
    assert "not-the-password" not in caplog.text
    if registered:
        assert "carol" in couchdb.all_ids(f"users_{database}")
