"""The WebSocket protocol between a client and the master: every frame, typed.

One JSON object per text frame, told apart by `type`:

    client → master  auth      {"type":"auth","token"}   (first frame, when no header token)
    client → master  send      {"type":"send","id","to","ciphertext","nonce"}
    client → master  received  {"type":"received","id"}
    client → master  refresh   {"type":"refresh","token"}  (a fresher token of the same user)
    master → client  ready     {"type":"ready","user"}
    master → client  message   {"type":"message","id","from","ciphertext","nonce","timestamp","seq"}
    master → client  ack       {"type":"ack","id","delivered","stored","nodes"}
                               (+ "storage":"disabled" when the master stores nothing)
    master → client  refreshed {"type":"refreshed","expiresAt"}  (the socket's new end, ms)
    master → client  error     {"type":"error","id","reason"}  (id null when the frame had none)

The master closes a socket with 4401 when its token expires (unless a `refresh` frame
brought a later one); a fresh token comes from POST /api/refresh with the current one.

`parse_frame(text, accepted)` reads one frame; `serialise(frame)` writes one.
`json_schema()` (or `python -m kuno.common.protocol`) gives every frame as JSON Schema.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
)
from pydantic.json_schema import models_json_schema

from kuno.common.jsontext import BadInput, parse_json
from kuno.common.messages import MAX_NONCE_BYTES, Message, canonical_uuid, decoded_size
from kuno.common.names import canonical_username

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


class FrameError(Exception):
    """A frame refused: `kind` (the error metric's label), `reason` (for the error frame),
    `message_id` (the frame's `id` when it had a string one), `frame_type` (the frame's
    `type` when it was one of the accepted types, its fields then being wrong)."""

    def __init__(
        self,
        kind: str,
        reason: str,
        message_id: str | None = None,
        frame_type: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.message_id = message_id
        self.frame_type = frame_type


class Frame(BaseModel):
    """One WebSocket frame; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    type: str

    @classmethod
    def frame_type(cls) -> str:
        return str(cls.model_fields["type"].default)


# --- client → master ---------------------------------------------------------


def _ciphertext(value: str) -> str:
    decoded_size(value, "ciphertext")
    return value


def _nonce(value: str) -> str:
    if decoded_size(value, "nonce") > MAX_NONCE_BYTES:
        raise ValueError(f"nonce must be at most {MAX_NONCE_BYTES} bytes")
    return value


#: A message id: a UUID in its canonical lowercase form.
MessageId = Annotated[StrictStr, AfterValidator(canonical_uuid)]
#: A recipient's name, read as its user id (names are one account whatever their case).
Recipient = Annotated[StrictStr, AfterValidator(canonical_username)]
Ciphertext = Annotated[StrictStr, Field(min_length=1), AfterValidator(_ciphertext)]
Nonce = Annotated[StrictStr, Field(min_length=1), AfterValidator(_nonce)]


class AuthFrame(Frame):
    """The token, for clients that cannot set `Authorization` on the upgrade (browsers)."""

    # Other fields have always been ignored in this one frame; kept so for old clients.
    model_config = ConfigDict(extra="ignore")

    type: Literal["auth"] = "auth"
    token: StrictStr


class SendFrame(Frame):
    """A sealed message: `id` a canonical lowercase UUID (the sender's, for resends), `to`
    the recipient's name (read as its user id, lower case), `ciphertext` and `nonce` base64
    (the nonce at most MAX_NONCE_BYTES decoded)."""

    type: Literal["send"] = "send"
    id: MessageId
    to: Recipient
    ciphertext: Ciphertext
    nonce: Nonce


class ReceivedFrame(Frame):
    """The recipient has message `id` (a canonical UUID): delete it from every node."""

    type: Literal["received"] = "received"
    id: MessageId


class RefreshFrame(Frame):
    """A fresher token of the socket's user (from POST /api/refresh): the socket stays open
    until it expires instead. Answered by `refreshed`, or by an error frame (id null)."""

    type: Literal["refresh"] = "refresh"
    token: StrictStr


# --- master → client ---------------------------------------------------------


class ReadyFrame(Frame):
    """Authenticated as user id `user`; messages to it reach this socket from now on."""

    type: Literal["ready"] = "ready"
    user: StrictStr


class MessageFrame(Frame):
    """A message pushed to its recipient; `timestamp` in ms since the epoch (the master's),
    `seq` the master's order of acceptance (sort by it: many messages share a timestamp)."""

    type: Literal["message"] = "message"
    id: StrictStr
    sender: StrictStr = Field(alias="from")
    ciphertext: StrictStr
    nonce: StrictStr
    timestamp: StrictInt
    seq: StrictInt

    @classmethod
    def of(cls, message: Message) -> MessageFrame:
        shared = message.model_dump(include={"id", "ciphertext", "nonce", "timestamp", "seq"})
        return cls(sender=message.senderId, **shared)


class AckFrame(Frame):
    """A send settled: `stored` of `nodes` standard nodes hold it (at least one), and
    `delivered` whether an open socket of the recipient took it. `storage` is there, as
    "disabled", only when the master stores nothing (then stored and nodes are 0)."""

    type: Literal["ack"] = "ack"
    id: StrictStr
    delivered: StrictBool
    stored: StrictInt = Field(ge=0)
    nodes: StrictInt = Field(ge=0)
    storage: Literal["disabled"] | None = Field(
        default=None, exclude_if=lambda value: value is None
    )


class RefreshedFrame(Frame):
    """The socket now lasts until `expiresAt` (ms since the epoch): the refresh token's
    expiry, when the master closes it with 4401 unless refreshed again."""

    type: Literal["refreshed"] = "refreshed"
    expiresAt: StrictInt


class ErrorFrame(Frame):
    """A frame refused, or a send that failed; `id` is the frame's, null when it had none."""

    type: Literal["error"] = "error"
    id: StrictStr | None
    reason: StrictStr


CLIENT_FRAMES: tuple[type[Frame], ...] = (AuthFrame, SendFrame, ReceivedFrame, RefreshFrame)
SERVER_FRAMES: tuple[type[Frame], ...] = (
    ReadyFrame,
    MessageFrame,
    AckFrame,
    RefreshedFrame,
    ErrorFrame,
)
# What a client may send once authenticated, and what a client reads.
ROUTED_FRAMES = (SendFrame, ReceivedFrame, RefreshFrame)
ServerFrame = ReadyFrame | MessageFrame | AckFrame | RefreshedFrame | ErrorFrame
#: The close code of a socket whose token expired (4000-4999: the application's own, RFC
#: 6455 §7.4.2; as HTTP 401): get a fresh token and reconnect, or log in again.
TOKEN_EXPIRED_CLOSE = 4401

F = TypeVar("F", bound=Frame)


def parse_frame(data: str | bytes, accepted: tuple[type[F], ...]) -> F:
    """One frame of one of the `accepted` types, from its JSON text.

    Raises FrameError("invalid_frame", reason) for text that is not JSON (reasons as
    kuno.common.jsontext.parse_json gives them), a value that is not an object, a `type` not
    accepted, or fields that do not fit the type (the first problem, as "field: why").
    """
    try:
        value = parse_json(data, "the frame")
    except BadInput as exc:
        raise FrameError("invalid_frame", exc.reason) from None
    if not isinstance(value, dict):
        raise FrameError("invalid_frame", "the frame must be a JSON object")
    message_id = value.get("id") if isinstance(value.get("id"), str) else None
    kind = value.get("type")
    model = next((m for m in accepted if isinstance(kind, str) and m.frame_type() == kind), None)
    if model is None:
        *others, last = [m.frame_type() for m in accepted]
        names = f"{', '.join(others)} or {last}" if others else last
        raise FrameError("invalid_frame", f"type must be {names}", message_id)
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise FrameError("invalid_frame", first_problem(exc), message_id, kind) from None


def first_problem(exc: ValidationError) -> str:
    """The first validation error as one line, "field: why"."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def serialise(frame: Frame) -> str:
    """The frame's JSON text, compact, with the wire's field names (`from`)."""
    return frame.model_dump_json(by_alias=True)


def json_schema() -> dict[str, Any]:
    """Every frame as JSON Schema (2020-12): `$defs` holds each frame by class name and
    `ClientFrame` / `ServerFrame`, the frames each side sends, told apart by `type`."""
    pairs = [(model, "validation") for model in CLIENT_FRAMES] + [
        (model, "serialization") for model in SERVER_FRAMES
    ]
    refs, schema = models_json_schema(pairs, ref_template="#/$defs/{model}")  # type: ignore[arg-type]
    defs = dict(schema.get("$defs", {}))

    def one_of(models: tuple[type[Frame], ...], mode: str) -> dict[str, Any]:
        members = [refs[(model, mode)] for model in models]  # type: ignore[index]
        mapping = {
            model.frame_type(): ref["$ref"] for model, ref in zip(models, members, strict=True)
        }
        return {"oneOf": members, "discriminator": {"propertyName": "type", "mapping": mapping}}

    defs["ClientFrame"] = one_of(CLIENT_FRAMES, "validation")
    defs["ServerFrame"] = one_of(SERVER_FRAMES, "serialization")
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": "kuno WebSocket frames",
        "description": __doc__.split("\n\n")[0] if __doc__ else "",
        "oneOf": [{"$ref": "#/$defs/ClientFrame"}, {"$ref": "#/$defs/ServerFrame"}],
        "$defs": defs,
    }


if __name__ == "__main__":
    print(json.dumps(json_schema(), indent=2))
