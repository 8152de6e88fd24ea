"""The reference browser client (``examples/chat/static/wsapp-client.js``) in Node.js, with a
stand-in WebSocket: envelopes, positions in the query string, gaps, duplicates, and the backoff.

(Chromium runs it against real servers in ``test_chat_recovery_browser.py``; here each rule is
driven on its own, frame by frame.)
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support import TIMEOUT, require_program

CLIENT = Path(__file__).resolve().parents[1] / "examples" / "chat" / "static" / "wsapp-client.js"

HARNESS = Path(__file__).with_name("wsapp_client_harness.mjs")


def run(tmp_path: Path, steps: list[dict[str, Any]], **scenario: Any) -> dict[str, Any]:
    node = require_program("node", "apt-get install nodejs")
    result = subprocess.run(
        [node, str(HARNESS), CLIENT.as_uri(), json.dumps({"steps": steps, **scenario})],
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 4,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    output: dict[str, Any] = json.loads(result.stdout)
    return output


def envelope(group: str, position: str, data: str | None = None) -> str:
    fields: dict[str, str] = {"group": group, "position": position}
    if data is not None:
        fields["data"] = data
    return json.dumps(fields)


@pytest.fixture
def js(tmp_path: Path) -> Any:
    return lambda steps, **scenario: run(tmp_path, steps, **scenario)


def test_broadcasts_and_other_frames_reach_the_page(js: Any) -> None:
    binary = [*b'{"group":"g","position":"e.2"}\n', 0, 10, 255]
    out = js(
        [
            {"open": True},
            {"text": envelope("g", "e.1", "hi")},
            {"binary": binary},
            {"text": '{"type": "error"}'},
            {"text": "not json"},
        ]
    )
    assert out["events"] == [
        ["broadcast", "g", "hi", "e.1"],
        ["broadcast", "g", [0, 10, 255], "e.2"],
        ["message", '{"type": "error"}'],
        ["message", "not json"],
    ]
    assert out["positions"] == {"g": "e.2"}


def test_read_envelope_refuses_what_is_not_one(js: Any) -> None:
    out = js(
        [],
        parse=[
            '{"group":"g","position":"e.01","data":"x"}',
            '{"group":1,"position":"e.1","data":"x"}',
            '{"group":"g","position":"e.1","data":5}',
            "[1, 2]",
            '{"group":"g","position":"e.1"}',
        ],
    )
    assert out["parsed"] == [None, None, None, None, {"group": "g", "position": "e.1"}]


def test_reconnects_with_the_last_position_of_each_group_in_the_query_string(js: Any) -> None:
    out = js(
        [
            {"open": True},
            {"text": envelope("room 1", "e.7", "x")},
            {"text": envelope("b&c", "f.2", "y")},
            {"drop": True},
            {"timer": True},
        ]
    )
    first, second = out["urls"]
    assert first == "ws://example.test/ws/room"
    assert second == "ws://example.test/ws/room?since.room+1=e.7&since.b%26c=f.2"


def test_a_broadcast_received_already_is_dropped(js: Any) -> None:
    out = js(
        [
            {"open": True},
            {"text": envelope("g", "e.1", "a")},
            {"text": envelope("g", "e.2", "b")},
            {"text": envelope("g", "e.2", "b")},
            {"text": envelope("g", "e.1", "a")},
            {"text": envelope("g", "e.3", "c")},
        ]
    )
    assert [event[2] for event in out["events"]] == ["a", "b", "c"]


def test_a_skipped_offset_or_another_epoch_is_a_gap(js: Any) -> None:
    out = js(
        [
            {"open": True},
            {"text": envelope("g", "e.1", "a")},
            {"text": envelope("g", "e.3", "c")},
            {"text": envelope("g", "f.1", "new epoch")},
            {"text": envelope("h", "e.9", "first of h: no gap")},
        ]
    )
    assert out["events"] == [
        ["broadcast", "g", "a", "e.1"],
        ["gap", "g", "e.3"],
        ["broadcast", "g", "c", "e.3"],
        ["gap", "g", "f.1"],
        ["broadcast", "g", "new epoch", "f.1"],
        ["broadcast", "h", "first of h: no gap", "e.9"],
    ]


def test_a_position_notice_ahead_of_the_page_is_a_gap_else_nothing(js: Any) -> None:
    out = js(
        [
            {"open": True},
            {"text": envelope("g", "e.5", "a")},
            {"text": envelope("g", "e.5")},  # recovered: where the page is
            {"text": envelope("g", "e.4")},  # live ones came first: behind the page
            {"text": envelope("g", "e.9")},  # not recovered: the history ends at 9
            {"text": envelope("g", "e.10", "b")},
        ]
    )
    assert out["events"] == [
        ["broadcast", "g", "a", "e.5"],
        ["gap", "g", "e.9"],
        ["broadcast", "g", "b", "e.10"],
    ]


def test_the_backoff_doubles_up_to_its_limit_with_full_jitter(js: Any) -> None:
    steps: list[dict[str, Any]] = []
    for _ in range(6):
        steps += [{"drop": True}, {"timer": True}]
    steps += [{"open": True}, {"drop": True}]
    out = js(steps, randoms=[1.0, 1.0, 0.5, 1.0, 0.0, 1.0, 1.0], statuses=True)
    waits = [event[2] for event in out["events"] if event[:2] == ["status", "waiting"]]
    # ceilings 100, 200, 400, 800, 1000, 1000; then, after a connection opened, 100 again
    assert waits == [100, 200, 200, 800, 0, 1000, 100]
