"""Configuration from the environment, validated at start-up.

A bad value stops the program with one line on stderr and exit code 2; the line
names the variable, never its value (it may be a password).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, NoReturn, TypeVar

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "KUNO_"

S = TypeVar("S", bound=BaseSettings)


class KunoSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", frozen=True, case_sensitive=False
    )


def split_list(value: Any) -> Any:
    """A list variable's text as a list: JSON (`["a", "b"]`) or comma-separated (`a, b`);
    any other value as it is (for a field_validator(mode="before") with NoDecode)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


#: A TCP port; each service gives its own default.
Port = Annotated[int, Field(ge=1, le=65535)]


class ServiceSettings(KunoSettings):
    """What every kuno service reads (KUNO_HOST, KUNO_PORT, KUNO_LOG_LEVEL, its CouchDB
    credentials, the token audience, the ciphertext cap); each service adds its own."""

    host: str = "0.0.0.0"  # noqa: S104 - a container's service listens on all its interfaces
    port: Port
    log_level: str = Field(default="info", pattern=r"^(?i)(debug|info|warning|error)$")
    couchdb_user: str | None = None
    couchdb_password: SecretStr | None = None
    token_audience: str = "kuno"  # noqa: S105 - a JWT audience, not a secret
    #: Bytes of a message's ciphertext (decoded) at most.
    max_ciphertext_bytes: int = Field(default=64 * 1024, ge=1, le=16 * 1024 * 1024)

    @property
    def couchdb_password_value(self) -> str | None:
        return self.couchdb_password.get_secret_value() if self.couchdb_password else None


class ConfigError(Exception):
    """One line naming every bad variable."""


def describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        problems.append(f"{ENV_PREFIX}{field.upper()}: {error['msg']}")
    return "; ".join(problems)


def load(settings_cls: type[S]) -> S:
    try:
        return settings_cls()
    except ValidationError as exc:
        raise ConfigError(describe(exc)) from None


def exit_on_bad_config(program: str, exc: ConfigError) -> NoReturn:
    print(f"{program}: invalid configuration: {exc}", file=sys.stderr)
    sys.exit(2)
