"""Configuration from the environment, validated at start-up.

A bad value stops the program with one line on stderr and exit code 2; the line
names the variable, never its value (it may be a password).
"""

from __future__ import annotations

import sys
from typing import NoReturn, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "KUNO_"

S = TypeVar("S", bound=BaseSettings)


class KunoSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", frozen=True, case_sensitive=False
    )


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
