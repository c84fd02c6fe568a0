"""kuno's CouchDB schema, read from its one definition (schema.json beside this module).

The deployment owns the schema: the couchdb role applies this very file (databases,
their `_security`, the Mango indexes) before any replication starts, and the tests apply
it with tests/support/schema.py. The services never create any of it: at start they
`check` that what they need exists, and until it does they are not ready (docs/ARCHITECTURE.md,
"Who owns the schema").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

from kuno.common.couch import CouchClient, NotFound

DESIGN_PREFIX = "_design/"


class _HasName(Protocol):
    @property
    def name(self) -> str: ...


Named = TypeVar("Named", bound=_HasName)


@dataclass(frozen=True)
class Index:
    """A Mango json index: design document `ddoc` (without `_design/`), `name`, the
    `fields` in order, all ascending."""

    ddoc: str
    name: str
    fields: tuple[str, ...]

    @property
    def use_index(self) -> list[str]:
        """The `use_index` of a `_find` on this index: [ddoc, name]."""
        return [self.ddoc, self.name]

    @property
    def sort(self) -> list[dict[str, str]]:
        """The `_find` sort on every indexed field, ascending (pouchdb-server needs all)."""
        return [{field: "asc"} for field in self.fields]

    def definition(self) -> dict[str, Any]:
        """The body of `POST /{db}/_index` that creates it."""
        return {
            "index": {"fields": list(self.fields)},
            "ddoc": self.ddoc,
            "name": self.name,
            "type": "json",
        }


@dataclass(frozen=True)
class Database:
    """One database of the schema, by its deployed `name`, with its indexes."""

    name: str
    indexes: tuple[Index, ...]

    def index(self, name: str) -> Index:
        """The index called `name`; KeyError when the schema has none."""
        return _named(self.indexes, name, f"the schema's {self.name} database has no index")


@dataclass(frozen=True)
class Schema:
    """Every database (deployed names) and the `_security` object each gets."""

    security: dict[str, Any]
    databases: tuple[Database, ...]

    def database(self, name: str) -> Database:
        """The database called `name` when deployed; KeyError when the schema has none."""
        return _named(self.databases, name, "the schema has no database")


def _named(items: tuple[Named, ...], name: str, missing: str) -> Named:
    for item in items:
        if item.name == name:
            return item
    raise KeyError(f"{missing} {name!r}")


def load(text: str | None = None) -> Schema:
    """The schema of `text` (JSON), by default of the packaged schema.json."""
    if text is None:
        text = resources.files(__package__).joinpath("schema.json").read_text("utf-8")
    raw = json.loads(text)
    return Schema(
        security=raw["security"],
        databases=tuple(
            Database(
                db["name"],
                tuple(Index(i["ddoc"], i["name"], tuple(i["fields"])) for i in db["indexes"]),
            )
            for db in raw["databases"]
        ),
    )


SCHEMA = load()
MESSAGES = SCHEMA.database("messages")
USERS = SCHEMA.database("users")


async def missing(client: CouchClient, database: Database, name: str | None = None) -> list[str]:
    """What of `database` the server lacks, stored under `name` (a service's configured
    name; default the deployed one): `[]` when all is there, else each part missing, e.g.
    `["database messages", "index recipient-seq-index of messages", ...]` or
    `["index expires-at-index of messages"]`. An index of the schema's name with other
    fields counts as missing.

    Reads only (`GET /{db}`, `GET /{db}/_index`). Raises the CouchError of any other
    answer (unreachable, 401/403 for credentials that are no admin's).
    """
    name = name or database.name
    path = "/" + quote(name, safe="")
    indexes = [f"index {index.name} of {name}" for index in database.indexes]
    try:
        await client.request("GET", path)
    except NotFound:
        return [f"database {name}", *indexes]
    if not database.indexes:
        return []
    listing = await client.request("GET", path + "/_index")
    present = {
        (str(i.get("ddoc")), str(i.get("name")), _field_names(i))
        for i in (listing.get("indexes") if isinstance(listing, dict) else None) or []
        if isinstance(i, dict)
    }
    return [
        line
        for index, line in zip(database.indexes, indexes, strict=True)
        if (DESIGN_PREFIX + index.ddoc, index.name, index.fields) not in present
    ]


def _field_names(index: dict[str, Any]) -> tuple[str, ...]:
    """("a", "b") of a listed index's `def.fields` [{"a": "asc"}, {"b": "asc"}]; a field
    that is not ascending keeps its whole form, so it matches no schema field."""
    definition = index.get("def")
    fields = definition.get("fields") if isinstance(definition, dict) else None
    names: list[str] = []
    for field in fields if isinstance(fields, list) else []:
        if isinstance(field, dict) and len(field) == 1 and next(iter(field.values())) == "asc":
            names.append(str(next(iter(field))))
        else:
            names.append(json.dumps(field))
    return tuple(names)
