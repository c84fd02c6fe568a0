"""`python -m kuno.standard` as ops run it: config errors, fresh server, log lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.support.messages import message_body
from tests.support.pouchdb import free_port, http_json, wait_until
from tests.support.schema import apply_schema


def run_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUNO_")}
    env.update({f"KUNO_{k.upper()}": v for k, v in values.items()})
    return env


@pytest.fixture
def valid(couchdb, public_key_file, database):
    return {
        "node_name": "node1",
        "couchdb_url": couchdb.url,
        "database": database,
        "token_public_key_file": str(public_key_file),
    }


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        ({"node_name": None}, "KUNO_NODE_NAME"),
        ({"couchdb_url": "not a url"}, "KUNO_COUCHDB_URL"),
        ({"port": "eighty"}, "KUNO_PORT"),
        ({"max_ciphertext_bytes": "0"}, "KUNO_MAX_CIPHERTEXT_BYTES"),
        ({"token_public_key_file": "/nonexistent.pem"}, "KUNO_TOKEN_PUBLIC_KEY_FILE"),
        ({"sweep_interval": "-1"}, "KUNO_SWEEP_INTERVAL"),
    ],
)
def test_a_bad_setting_exits_2_with_one_line_naming_it(valid, change, variable):
    values = {k: v for k, v in (valid | change).items() if v is not None}
    values["couchdb_password"] = "s3cret-password"
    result = subprocess.run(
        [sys.executable, "-m", "kuno.standard"],
        env=run_env(**values),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kuno-standard: invalid configuration:")
    assert variable in lines[0]
    assert "s3cret-password" not in result.stderr


def test_a_key_file_that_is_not_an_ed25519_key_is_refused(valid, tmp_path):
    bad = tmp_path / "key.pem"
    bad.write_text("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    result = subprocess.run(
        [sys.executable, "-m", "kuno.standard"],
        env=run_env(**(valid | {"token_public_key_file": str(bad)})),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "KUNO_TOKEN_PUBLIC_KEY_FILE" in result.stderr


def test_the_node_runs_against_a_fresh_server_and_logs_json_without_secrets(
    private_couchdb, public_key_file, master_token, user_token, tmp_path
):
    port = free_port()
    log_path = tmp_path / "node.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "kuno.standard"],
            env=run_env(
                node_name="node1",
                couchdb_url=private_couchdb.url,
                token_public_key_file=str(public_key_file),
                host="127.0.0.1",
                port=str(port),
                couchdb_user=private_couchdb.user,
                couchdb_password=private_couchdb.password,
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        # A fresh server: the node is not ready, names what is missing, creates nothing.
        status, health = wait_until(lambda: _answer(url + "/health"), timeout=20)
        assert status == 503
        assert health["missing"][0] == "database messages"
        assert http_json("GET", private_couchdb.db_url("messages"))[0] == 404
        # The deployment applies the schema: the node is ready, on the database and both indexes.
        apply_schema(private_couchdb.url, messages="messages")
        wait_until(lambda: _answers(url + "/health"), timeout=20)
        status, indexes = http_json("GET", private_couchdb.db_url("messages") + "/_index")
        assert status == 200
        assert {"recipient-seq-index", "expires-at-index"} <= {
            i["name"] for i in indexes["indexes"]
        }

        body = message_body("bob")
        status, _ = _request("POST", url + "/messages", master_token, body)
        assert status == 201
        status, page = _request("GET", url + "/messages/bob", user_token("bob"))
        assert [m["id"] for m in page["messages"]] == [body["id"]]
        _request("GET", url + "/messages/bob", "forged.token.value")
        assert http_json("GET", url + "/health")[0] == 200
    finally:
        process.terminate()
        process.wait(timeout=10)

    output = log_path.read_text()
    records = [json.loads(line) for line in output.splitlines()]
    assert {"time", "level", "logger", "message"} <= set(records[0])
    requests = [r for r in records if r["message"] == "request"]
    assert {(r["method"], r["route"], r["status"]) for r in requests} >= {
        ("POST", "/messages", 201),
        ("GET", "/messages/{user_id}", 200),
        ("GET", "/messages/{user_id}", 401),
        ("GET", "/health", 503),  # not ready, before the schema: worth a line
    }
    # Docker polls /health every few seconds: a healthy answer is not worth a log line.
    assert "/health" not in {r["route"] for r in requests if r["status"] < 400}
    assert any(r["message"].startswith("not ready") and r["missing"] for r in records)
    assert any(r["message"] == "starting" and r["node"] == "node1" for r in records)
    for secret in (body["ciphertext"], master_token, user_token("bob"), private_couchdb.password):
        assert secret not in output


def _answers(url):
    answer = _answer(url)
    return answer is not None and answer[0] == 200


def _answer(url):
    """(status, body) of a GET, or None while nothing listens."""
    try:
        return http_json("GET", url, timeout=1)
    except OSError:
        time.sleep(0.1)
        return None


def _request(method, url, token, body=None):
    return http_json(method, url, body, headers={"Authorization": f"Bearer {token}"})
