"""The local config directory: keys and token readable by their owner only."""

from __future__ import annotations

import stat
from pathlib import Path

from kuno.client.crypto import KeyPair
from kuno.client.profile import Profile


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_key_token_and_profile_are_0600_in_a_0700_directory(tmp_path: Path) -> None:
    directory = tmp_path / "kuno"
    profile = Profile(directory, "http://127.0.0.1:1", ["http://127.0.0.1:2"], "alice")
    keys = KeyPair.generate()
    profile.save_key("alice", keys)
    profile.save_token("a.token.value")
    profile.save()
    assert mode(directory) == 0o700
    assert {p.name: mode(p) for p in directory.iterdir()} == {
        "key.json": 0o600,
        "token": 0o600,
        "profile.json": 0o600,
    }
    again = Profile.load(directory)
    assert (again.master_url, again.node_urls, again.username) == (
        "http://127.0.0.1:1",
        ["http://127.0.0.1:2"],
        "alice",
    )
    assert again.load_token() == "a.token.value"
    loaded = again.load_key()
    assert loaded is not None
    assert loaded.public_b64 == keys.public_b64


def test_an_existing_loose_file_is_tightened_on_save(tmp_path: Path) -> None:
    directory = tmp_path / "kuno"
    directory.mkdir(mode=0o755)
    (directory / "token").write_text("old")
    (directory / "token").chmod(0o644)
    Profile(directory).save_token("new")
    assert mode(directory / "token") == 0o600
    assert mode(directory) == 0o700


def test_an_empty_directory_is_an_empty_profile(tmp_path: Path) -> None:
    profile = Profile.load(tmp_path / "nothing")
    assert (profile.master_url, profile.node_urls, profile.username) == (None, [], None)
    assert profile.load_key() is None
    assert profile.load_token() is None
