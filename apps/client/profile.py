"""The client's local state: one directory (mode 0700), files mode 0600.

profile.json   master URL, storage node URLs, username
key.json       the X25519 key pair (the private key never leaves this file)
token          the last login's token
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kuno.client.crypto import KeyPair

PROFILE = "profile.json"
KEY = "key.json"
TOKEN = "token"  # noqa: S105 - a file name


def default_config_dir() -> Path:
    if "KUNO_CONFIG_DIR" in os.environ:
        return Path(os.environ["KUNO_CONFIG_DIR"])
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "kuno"


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, created so from the start (no window at 0644)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


@dataclass
class Profile:
    directory: Path
    master_url: str | None = None
    node_urls: list[str] = field(default_factory=list)
    username: str | None = None

    @classmethod
    def load(cls, directory: Path) -> Profile:
        path = directory / PROFILE
        if not path.exists():
            return cls(directory)
        data: dict[str, Any] = json.loads(path.read_text())
        return cls(
            directory,
            data.get("masterUrl"),
            list(data.get("nodeUrls", [])),
            data.get("username"),
        )

    def save(self) -> None:
        data = {"masterUrl": self.master_url, "nodeUrls": self.node_urls, "username": self.username}
        write_private(self.directory / PROFILE, json.dumps(data, indent=2) + "\n")

    def save_key(self, username: str, keys: KeyPair) -> None:
        data = {"username": username, "publicKey": keys.public_b64, "privateKey": keys.private_b64}
        write_private(self.directory / KEY, json.dumps(data, indent=2) + "\n")

    def load_key(self) -> KeyPair | None:
        path = self.directory / KEY
        if not path.exists():
            return None
        return KeyPair.from_private_b64(json.loads(path.read_text())["privateKey"])

    def save_token(self, token: str) -> None:
        write_private(self.directory / TOKEN, token + "\n")

    def load_token(self) -> str | None:
        path = self.directory / TOKEN
        return path.read_text().strip() if path.exists() else None
