"""kuno's CouchDB schema, read from its one definition (schema.json beside this module).

The deployment owns the schema: the couchdb role applies this very file (databases,
their `_security`, the Mango indexes, the design documents of map/reduce views) before
any replication starts, and the tests apply it with tests/support/schema.py. The
services never create any of it: at start they `check` that what they need exists, and
until it does they are not ready (docs/ARCHITECTURE.md, "Who owns the schema").
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
class Design:
    """A design document `_design/{ddoc}` of map/reduce `views`: view name →
    `{"map": JavaScript source, "reduce": a built-in such as "_sum"}`, in `language`."""

    ddoc: str
    language: str
    views: dict[str, dict[str, str]]

    @property
    def name(self) -> str:
        return self.ddoc

    @property
    def id(self) -> str:
        """The document id, `_design/{ddoc}`."""
        return DESIGN_PREFIX + self.ddoc

    def document(self) -> dict[str, Any]:
        """The body of `PUT /{db}/_design/{ddoc}` (without `_rev`) that writes it."""
        return {"language": self.language, "views": self.views}

    def matches(self, current: Any) -> bool:
        """Whether `current` (a `GET` of the design document) has this language and views."""
        return isinstance(current, dict) and all(
            current.get(key) == value for key, value in self.document().items()
        )


@dataclass(frozen=True)
class Database:
    """One database of the schema, by its deployed `name`, with its indexes and design
    documents."""

    name: str
    indexes: tuple[Index, ...]
    designs: tuple[Design, ...] = ()

    def index(self, name: str) -> Index:
        """The index called `name`; KeyError when the schema has none."""
        return _named(self.indexes, name, f"the schema's {self.name} database has no index")

    def design(self, ddoc: str) -> Design:
        """The design document `_design/{ddoc}`; KeyError when the schema has none."""
        return _named(self.designs, ddoc, f"the schema's {self.name} database has no design")


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
                tuple(Design(d["ddoc"], d["language"], d["views"]) for d in db.get("designs", [])),
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
    `["index expires-at-index of messages", "design _design/queues of messages"]`. An
    index of the schema's name with other fields, or a design document with other views
    or language, counts as missing.

    Reads only (`GET /{db}`, `GET /{db}/_index`, `GET /{db}/_design/{ddoc}`). Raises the
    CouchError of any other answer (unreachable, 401/403 for credentials that are no
    admin's).
    """
    name = name or database.name
    path = "/" + quote(name, safe="")
    indexes = [f"index {index.name} of {name}" for index in database.indexes]
    designs = [f"design {design.id} of {name}" for design in database.designs]
    try:
        await client.request("GET", path)
    except NotFound:
        return [f"database {name}", *indexes, *designs]
    lacking = await _missing_indexes(client, database, path, indexes) if indexes else []
    for design, line in zip(database.designs, designs, strict=True):
        try:
            current = await client.request(
                "GET", f"{path}/{DESIGN_PREFIX}{quote(design.ddoc, safe='')}"
            )
        except NotFound:
            current = None
        if not design.matches(current):
            lacking.append(line)
    return lacking


async def _missing_indexes(
    client: CouchClient, database: Database, path: str, indexes: list[str]
) -> list[str]:
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
