"""A --json child command's error answer is shown as its message, not as raw JSON."""

from __future__ import annotations

import json

from desktop.worker import _json_error_message


def test_json_error_answer_gives_the_message():
    answer = {
        "ok": False,
        "error": {"message": "data.jsonl:3: messages: empty", "file": "data.jsonl", "line": 3},
    }
    assert _json_error_message([json.dumps(answer)]) == "data.jsonl:3: messages: empty"


def test_non_error_output_gives_nothing():
    assert _json_error_message(["not json"]) == ""
    assert _json_error_message([json.dumps({"ok": True})]) == ""
    assert _json_error_message([]) == ""
