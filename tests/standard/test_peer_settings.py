"""KUNO_PEERS and KUNO_REPLICATED_DATABASES from the environment: JSON or comma-separated,
checked at start-up (the variable named, never a value)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kuno.common.settings import ConfigError, load
from kuno.standard.config import StandardSettings


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, public_key_file: Path) -> pytest.MonkeyPatch:
    monkeypatch.setenv("KUNO_NODE_NAME", "node1")
    monkeypatch.setenv("KUNO_COUCHDB_URL", "http://127.0.0.1:5984")
    monkeypatch.setenv("KUNO_TOKEN_PUBLIC_KEY_FILE", str(public_key_file))
    return monkeypatch


@pytest.mark.parametrize("value", ["node2,node3", '["node2", "node3"]', " node2 , node3 "])
def test_peers_are_a_list_in_either_form(environment: pytest.MonkeyPatch, value: str) -> None:
    environment.setenv("KUNO_PEERS", value)
    environment.setenv("KUNO_REPLICATED_DATABASES", "messages")
    settings = load(StandardSettings)
    assert settings.peers == ["node2", "node3"]
    assert settings.replicated_databases == ["messages"]
    assert settings.replication_watchdog is True


def test_no_peers_by_default(environment: pytest.MonkeyPatch) -> None:
    settings = load(StandardSettings)
    assert settings.peers == []
    assert settings.replicated_databases == ["messages", "users"]


@pytest.mark.parametrize("value", ["node1,node2", "node2,node2", "node 2"])
def test_bad_peers_stop_the_start(environment: pytest.MonkeyPatch, value: str) -> None:
    environment.setenv("KUNO_PEERS", value)
    with pytest.raises(ConfigError, match="KUNO_PEERS"):
        load(StandardSettings)
