"""KUNO_* configuration of the master: lists, checks, and the one-line failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kuno.common.settings import ConfigError, load
from kuno.master.config import MasterSettings


def environment(private_key_file: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUNO_")}
    env["KUNO_TOKEN_PRIVATE_KEY_FILE"] = str(private_key_file)
    env["KUNO_COUCHDB_URLS"] = "http://couchdb-1:5984, http://couchdb-2:5984"
    env.update(extra)
    return env


def test_url_lists_are_comma_separated_or_json(
    private_key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in environment(
        private_key_file, KUNO_STANDARD_NODE_URLS='["http://n1:4001", "http://n2:4002/"]'
    ).items():
        monkeypatch.setenv(name, value)
    settings = load(MasterSettings)
    assert [str(u) for u in settings.couchdb_urls] == [
        "http://couchdb-1:5984/",
        "http://couchdb-2:5984/",
    ]
    assert settings.node_urls == ["http://n1:4001", "http://n2:4002"]
    assert settings.storage_enabled
    assert settings.store_timeout == 2.0


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        ({}, "KUNO_STANDARD_NODE_URLS"),
        ({"KUNO_STANDARD_NODE_URLS": "http://n1,http://n1"}, "listed twice"),
        ({"KUNO_STANDARD_NODE_URLS": "http://n1", "KUNO_STORE_TIMEOUT": "0"}, "KUNO_STORE_TIMEOUT"),
        (
            {"KUNO_STANDARD_NODE_URLS": "http://n1", "KUNO_TOKEN_PRIVATE_KEY_FILE": "/nonexistent"},
            "KUNO_TOKEN_PRIVATE_KEY_FILE",
        ),
    ],
)
def test_a_bad_configuration_is_refused_naming_the_variable(
    private_key_file: Path, monkeypatch: pytest.MonkeyPatch, extra: dict[str, str], complaint: str
) -> None:
    for name, value in environment(private_key_file, **extra).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=complaint):
        load(MasterSettings)


def test_storage_may_be_disabled_without_nodes(
    private_key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in environment(private_key_file, KUNO_STORAGE_ENABLED="false").items():
        monkeypatch.setenv(name, value)
    settings = load(MasterSettings)
    assert (settings.storage_enabled, settings.node_urls) == (False, [])


def test_the_public_key_is_not_a_private_key(
    public_key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in environment(public_key_file, KUNO_STORAGE_ENABLED="false").items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="KUNO_TOKEN_PRIVATE_KEY_FILE"):
        load(MasterSettings)


def test_the_program_exits_2_with_one_line_and_no_secret(private_key_file: Path) -> None:
    env = environment(private_key_file, KUNO_COUCHDB_PASSWORD="hunter2-secret", KUNO_PORT="0")
    result = subprocess.run(
        [sys.executable, "-m", "kuno.master"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("kuno-master: invalid configuration:")
    assert "KUNO_PORT" in lines[0] and "KUNO_STANDARD_NODE_URLS" in lines[0]
    assert "hunter2" not in result.stderr
