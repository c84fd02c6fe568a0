"""kuno.common.protocol: one parser and one serialiser for every WebSocket frame, and the
JSON Schema a web page validates frames with."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from kuno.common.protocol import (
    CLIENT_FRAMES,
    ROUTED_FRAMES,
    SERVER_FRAMES,
    AckFrame,
    ErrorFrame,
    FrameError,
    MessageFrame,
    SendFrame,
    json_schema,
    parse_frame,
    serialise,
)

EVERY_FRAME_TYPE = {
    "auth",
    "send",
    "received",
    "refresh",
    "ready",
    "message",
    "ack",
    "refreshed",
    "error",
}


def frame_types(schema: dict, group: str) -> set[str]:
    defs = schema["$defs"]
    members = [defs[ref["$ref"].rsplit("/", 1)[1]] for ref in defs[group]["oneOf"]]
    return {member["properties"]["type"]["const"] for member in members}


def test_the_schema_lists_every_frame_type_on_its_side() -> None:
    schema = json_schema()
    assert frame_types(schema, "ClientFrame") == {"auth", "send", "received", "refresh"}
    assert frame_types(schema, "ServerFrame") == {"ready", "message", "ack", "refreshed", "error"}
    assert frame_types(schema, "ClientFrame") | frame_types(schema, "ServerFrame") == (
        EVERY_FRAME_TYPE
    )
    mapping = schema["$defs"]["ServerFrame"]["discriminator"]["mapping"]
    assert set(mapping) == {"ready", "message", "ack", "refreshed", "error"}


def test_the_schema_uses_the_wire_names() -> None:
    schema = json_schema()
    message = schema["$defs"]["MessageFrame"]
    assert "from" in message["properties"] and "sender" not in message["properties"]
    assert set(message["required"]) >= {"from", "id", "ciphertext", "nonce", "timestamp", "seq"}


def test_python_m_prints_the_schema() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kuno.common.protocol"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(done.stdout) == json.loads(json.dumps(json_schema()))


def test_every_frame_type_has_one_model() -> None:
    types = [model.frame_type() for model in CLIENT_FRAMES + SERVER_FRAMES]
    assert sorted(types) == sorted(EVERY_FRAME_TYPE)


def test_server_frames_serialise_to_the_wire_format() -> None:
    message_id = str(uuid.uuid4())
    assert json.loads(serialise(AckFrame(id=message_id, delivered=True, stored=2, nodes=3))) == {
        "type": "ack",
        "id": message_id,
        "delivered": True,
        "stored": 2,
        "nodes": 3,
    }
    disabled = AckFrame(id=message_id, delivered=False, stored=0, nodes=0, storage="disabled")
    assert json.loads(serialise(disabled))["storage"] == "disabled"
    assert json.loads(serialise(ErrorFrame(id=None, reason="no"))) == {
        "type": "error",
        "id": None,
        "reason": "no",
    }
    pushed = MessageFrame(
        id=message_id, sender="alice", ciphertext="YQ==", nonce="Yg==", timestamp=5, seq=5001
    )
    assert json.loads(serialise(pushed)) == {
        "type": "message",
        "id": message_id,
        "from": "alice",
        "ciphertext": "YQ==",
        "nonce": "Yg==",
        "timestamp": 5,
        "seq": 5001,
    }


@pytest.mark.parametrize("frame", [AckFrame, ErrorFrame, MessageFrame])
def test_what_the_master_serialises_the_client_parses_back(frame: type) -> None:
    message_id = str(uuid.uuid4())
    built = {
        AckFrame: AckFrame(id=message_id, delivered=True, stored=1, nodes=1),
        ErrorFrame: ErrorFrame(id=message_id, reason="why"),
        MessageFrame: MessageFrame(
            id=message_id, sender="alice", ciphertext="YQ==", nonce="Yg==", timestamp=1, seq=1000
        ),
    }[frame]
    assert parse_frame(serialise(built), SERVER_FRAMES) == built


def test_a_send_frame_is_read_with_its_recipient_as_user_id() -> None:
    message_id = str(uuid.uuid4())
    text = json.dumps(
        {"type": "send", "id": message_id, "to": "Bob", "ciphertext": "YQ==", "nonce": "Yg=="}
    )
    frame = parse_frame(text, ROUTED_FRAMES)
    assert isinstance(frame, SendFrame) and frame.to == "bob"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{", "the frame is not JSON"),
        (b"\xff", "the frame is not valid UTF-8"),
        ("[]", "the frame must be a JSON object"),
        ('{"type": "ack", "id": "x"}', "type must be send, received or refresh"),
        # An unhashable type is a bad frame like any other, not an internal error.
        ('{"type": ["send"]}', "type must be send, received or refresh"),
        ('{"type": {"a": 1}}', "type must be send, received or refresh"),
        ('{"type": "received", "id": "x"}', "id: id must be a UUID"),
    ],
)
def test_a_bad_frame_is_an_invalid_frame_error(text: str | bytes, reason: str) -> None:
    with pytest.raises(FrameError) as raised:
        parse_frame(text, ROUTED_FRAMES)
    assert raised.value.kind == "invalid_frame"
    assert raised.value.reason == reason
