"""Readers, format detection and per-row validation (no tokenizer needed: fast)."""

from __future__ import annotations

import json

import pytest

from backends.data import read_rows
from backends.data.formats import parse_row
from backends.data.pipeline import analyze_file, no_rows_error
from backends.errors import UserInputError


def write_jsonl(path, rows):
    path.write_text(
        "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8"
    )
    return path


def chat(*pairs):
    return {"messages": [{"role": r, "content": c} for r, c in pairs]}


GOOD = chat(("user", "hi"), ("assistant", "hello"))


def problems_of(path, **kw):
    _, report, _, _ = analyze_file(path, None, **kw)
    return report


# ---- item 1: readers ---------------------------------------------------------------------------


def test_malformed_json_line_is_dropped_and_named_with_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, "", '{"messages": [}', GOOD])
    report = problems_of(path)
    assert (report.rows_read, report.rows_kept) == (3, 2)
    (problem,) = report.problems
    assert str(problem).startswith(f"{path}:3: (line): not valid JSON")
    with pytest.raises(UserInputError) as exc:
        analyze_file(path, None, strict=True)
    assert exc.value.line == 3
    assert str(exc.value).startswith(f"{path}:3: ")
    assert "not valid JSON" in str(exc.value)


def test_two_objects_on_one_line_is_a_bad_line(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, json.dumps(GOOD) + " " + json.dumps(GOOD)])
    (problem,) = problems_of(path).problems
    assert problem.row == 2 and "one object per line" in problem.reason


def test_bom_and_blank_lines_are_fine_and_rows_keep_line_numbers(tmp_path):
    path = tmp_path / "d.jsonl"
    text = (
        "\ufeff"
        + json.dumps(GOOD)
        + "\n\n   \n"
        + json.dumps(chat(("user", "a"), ("assistant", "b")))
        + "\n\n"
    )
    path.write_bytes(text.encode("utf-8"))
    fmt, rows = read_rows(path)
    assert fmt == "messages"
    assert [n for n, _ in rows] == [1, 4]
    assert rows.unit == "line"
    assert rows[1][1]["messages"][1]["content"] == "b"


def test_json_array_with_bom_numbers_rows(tmp_path):
    path = tmp_path / "d.json"
    data = [{"instruction": "a", "input": "", "output": "b"}, {"instruction": "c", "output": "d"}]
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(data, indent=2).encode())
    fmt, rows = read_rows(path)
    assert fmt == "alpaca" and rows.unit == "row" and [n for n, _ in rows] == [1, 2]


def test_malformed_json_array_names_the_line(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n  {"text": "a"},\n  {"text": "b",}\n]\n')
    with pytest.raises(UserInputError) as exc:
        read_rows(path)
    assert exc.value.line == 3


def test_json_file_holding_json_lines(tmp_path):
    path = write_jsonl(tmp_path / "d.json", [{"text": "a"}, {"text": "b"}])
    fmt, rows = read_rows(path)
    assert fmt == "text" and rows.unit == "line" and len(rows) == 2


def test_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"text": "a"}\n{"text": "\xff"}\n')
    with pytest.raises(UserInputError) as exc:
        read_rows(path)
    assert exc.value.line == 2 and "UTF-8" in str(exc.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(UserInputError, match="not found"):
        read_rows(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(UserInputError, match="no rows"):
        read_rows(tmp_path / "empty.jsonl")


def test_csv_is_read_as_text_with_quotes_and_newlines(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text(
        '\ufeffinstruction,input,output\n"Say ""hi"", twice",,"hi\nhi"\nCount,,007\n', encoding="utf-8"
    )
    fmt, rows = read_rows(path)
    assert fmt == "alpaca" and rows.unit == "row"
    assert rows[0] == (1, {"instruction": 'Say "hi", twice', "input": "", "output": "hi\nhi"})
    assert rows[1][1]["output"] == "007"  # text, not the number 7


def test_parquet_with_nested_messages(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([GOOD, chat(("user", "x"), ("assistant", "y"))]), path)
    fmt, rows = read_rows(path)
    assert fmt == "messages" and [n for n, _ in rows] == [1, 2]
    assert parse_row(fmt, rows[1][1])[-1] == {"role": "assistant", "content": "y"}


# ---- item 2: formats -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "fmt"),
    [
        (GOOD, "messages"),
        ({"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}, "sharegpt"),
        ({"instruction": "a", "input": "", "output": "b"}, "alpaca"),
        ({"prompt": "a", "completion": "b"}, "prompt_completion"),
        ({"text": "a"}, "text"),
        ({"prompt": "a", "chosen": "b", "rejected": "c"}, "preference"),
        (
            {
                "conversations": [{"from": "human", "value": "a"}],
                "chosen": {"from": "gpt", "value": "b"},
                "rejected": {"from": "gpt", "value": "c"},
            },
            "preference",
        ),
    ],
)
def test_format_detection(tmp_path, row, fmt):
    path = write_jsonl(tmp_path / "d.jsonl", [row, row])
    assert read_rows(path)[0] == fmt


def test_mixed_formats_name_the_first_differing_row(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}, {"text": "b"}, "", GOOD, {"text": "c"}, GOOD])
    with pytest.raises(UserInputError) as exc:
        read_rows(path)
    assert exc.value.line == 4
    assert "mixed formats" in str(exc.value) and "'messages'" in str(exc.value) and "line 1" in str(exc.value)
    assert exc.value.field == "messages"


def test_mixed_formats_in_a_json_array_name_the_row(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"text": "a"}, {"instruction": "i", "output": "o"}]))
    with pytest.raises(UserInputError) as exc:
        read_rows(path)
    assert f"{path}: row 2: " in str(exc.value) and "mixed formats" in str(exc.value)


def test_unknown_fields_everywhere_cannot_be_detected(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"frage": "a", "antwort": "b"}])
    with pytest.raises(UserInputError, match="cannot tell the format") as exc:
        read_rows(path)
    assert "antwort, frage" in str(exc.value) and "--columns prompt=COL" in str(exc.value)
    assert exc.value.line == 1


def test_format_override_skips_detection(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}, GOOD])
    fmt, rows = read_rows(path, "text")
    assert fmt == "text"
    report = problems_of(path, format="text")
    assert [(p.row, p.field, p.reason) for p in report.problems] == [(2, "text", "missing")]


def test_format_conversions():
    assert parse_row(
        "alpaca",
        {"instruction": "Add", "input": "1 2", "output": "3", "system": "S", "history": [["q", "a"]]},
    ) == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": "Add\n1 2"},
        {"role": "assistant", "content": "3"},
    ]
    assert parse_row("alpaca", {"instruction": "Hi", "input": None, "output": "Yo"}) == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Yo"},
    ]
    sharegpt = {
        "conversations": [
            {"from": "system", "value": "S"},
            {"from": "human", "value": "a"},
            {"from": "gpt", "value": "b"},
        ]
    }
    assert [m["role"] for m in parse_row("sharegpt", sharegpt)] == ["system", "user", "assistant"]
    assert parse_row("prompt_completion", {"prompt": "a", "completion": "b"}, system_prompt="Be brief.") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
    ]
    parts = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": "c"},
        ]
    }
    assert parse_row("messages", parts)[0]["content"] == "ab"
    pref = parse_row(
        "preference",
        {
            "prompt": [{"role": "user", "content": "q"}],
            "chosen": [{"role": "assistant", "content": "y"}],
            "rejected": "n",
        },
    )
    assert (pref.prompt, pref.chosen, pref.rejected) == ([{"role": "user", "content": "q"}], "y", "n")


# ---- item 3: validation, one test per kind -------------------------------------------------------


def one_problem(tmp_path, row, fmt=None):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, row] if fmt is None else [row, row])
    report = problems_of(path, format=fmt or "auto")
    bad = [p for p in report.problems if p.row == 2]
    assert len(bad) == 1, report.problems
    return bad[0], path


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [
        # missing / null fields
        ({"messages": None}, "messages", "is null"),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": None}]},
            "messages[1].content",
            "is null",
        ),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant"}]},
            "messages[1].content",
            "missing",
        ),
        # wrong types
        ({"messages": "hello"}, "messages", "expected a list of messages, got string"),
        (
            {"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "b"}]},
            "messages[0].content",
            "expected a string, got number",
        ),
        (
            {"messages": ["hi", "there"]},
            "messages[0]",
            "expected an object with role and content, got string",
        ),
        # empty answer
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "  "}]},
            "messages[1].content",
            "empty answer",
        ),
        # roles that do not alternate
        (
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "user", "content": "b"},
                    {"role": "assistant", "content": "c"},
                ]
            },
            "messages[1].role",
            "roles must alternate",
        ),
        ({"messages": [{"role": "assistant", "content": "a"}]}, "messages[0].role", "starting with user"),
        (
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "system", "content": "s"},
                    {"role": "assistant", "content": "c"},
                ]
            },
            "messages[1].role",
            "only allowed first",
        ),
        # conversation not ending with the assistant
        (
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": "b"},
                    {"role": "user", "content": "c"},
                ]
            },
            "messages[2].role",
            "must end with an assistant turn",
        ),
        # unknown role
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]},
            "messages[1].role",
            "unknown role 'bot'",
        ),
        # a row that is no object
        ([1, 2], "(row)", "expected a JSON object, got list"),
    ],
)
def test_each_invalid_messages_row_names_row_field_and_reason(tmp_path, row, field, reason):
    problem, path = one_problem(tmp_path, row)
    assert problem.field == field
    assert reason in problem.reason
    assert str(problem).startswith(f"{path}:2: {field}: ")


@pytest.mark.parametrize(
    ("fmt", "row", "field", "reason"),
    [
        ("alpaca", {"instruction": "a", "input": "", "output": None}, "output", "is null"),
        ("alpaca", {"instruction": "a", "input": ""}, "output", "missing"),
        ("alpaca", {"instruction": ["a"], "output": "b"}, "instruction", "expected a string, got list"),
        ("alpaca", {"instruction": "a", "output": ""}, "output", "empty answer"),
        ("alpaca", {"instruction": "a", "output": "b", "history": [["q"]]}, "history[0]", "pair"),
        (
            "sharegpt",
            {"conversations": [{"from": "human", "value": "a"}, {"from": "robot", "value": "b"}]},
            "conversations[1].from",
            "unknown role 'robot'",
        ),
        (
            "sharegpt",
            {
                "conversations": [
                    {"from": "human", "value": "a"},
                    {"from": "gpt", "value": "b"},
                    {"from": "human", "value": "c"},
                ]
            },
            "conversations[2].from",
            "must end with an assistant turn",
        ),
        ("text", {"text": 3}, "text", "expected a string, got number"),
        ("text", {"text": ""}, "text", "empty text"),
        ("prompt_completion", {"prompt": "a", "completion": ""}, "completion", "empty answer"),
        ("preference", {"prompt": "a", "chosen": "b", "rejected": None}, "rejected", "is null"),
        ("preference", {"prompt": "a", "chosen": "", "rejected": "c"}, "chosen", "empty answer"),
        (
            "preference",
            {
                "conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}],
                "chosen": "x",
                "rejected": "y",
            },
            "conversations[1].from",
            "must end with a user turn",
        ),
        (
            "preference",
            {"prompt": "a", "chosen": {"from": "human", "value": "b"}, "rejected": "c"},
            "chosen.from",
            "must be an assistant message",
        ),
    ],
)
def test_each_invalid_row_of_other_formats(tmp_path, fmt, row, field, reason):
    problem, path = one_problem(tmp_path, row, fmt)
    assert (problem.row, problem.field) == (2, field)
    assert reason in problem.reason


def test_problems_in_json_arrays_say_row(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"instruction": "a", "output": "b"}, {"instruction": "a", "output": None}]))
    report = problems_of(path)
    assert [str(p) for p in report.problems] == [f"{path}: row 2: output: is null"]
    assert report.rows_read == 2 and report.rows_kept == 1 and report.rows_dropped == 1


def test_strict_makes_an_invalid_row_an_error(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, chat(("user", "a"), ("bot", "b")), chat(("user", "a"))])
    with pytest.raises(UserInputError) as exc:
        analyze_file(path, None, strict=True)
    assert exc.value.line == 2 and exc.value.field == "messages[1].role"
    assert "and 1 more invalid row" in str(exc.value)


def test_only_invalid_rows_fail_with_the_reasons(tmp_path):
    path = write_jsonl(
        tmp_path / "d.jsonl", [chat(("user", "a"), ("assistant", "")), chat(("user", "a"), ("robot", "b"))]
    )
    _, report, _, _ = analyze_file(path, None)
    assert report.rows_kept == 0
    err = no_rows_error(report)
    text = str(err)
    assert "no usable rows: 2 read" in text
    assert f"{path}:1: messages[1].content: empty answer" in text
    assert f"{path}:2: messages[1].role: unknown role 'robot'" in text
    assert err.line == 1 and err.field == "messages[1].content"


def test_method_and_format_must_fit(tmp_path):
    pref = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"}])
    with pytest.raises(UserInputError, match="method 'dpo'"):
        analyze_file(pref, None, method="sft")
    sft = write_jsonl(tmp_path / "s.jsonl", [GOOD])
    with pytest.raises(UserInputError, match="preference pairs"):
        analyze_file(sft, None, method="dpo")
    assert analyze_file(pref, None)[3] == "dpo"


def test_check_file_without_a_model_validates_only(tmp_path):
    from backends.data import check_file

    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, chat(("user", "a"), ("assistant", None))])
    result = check_file(path)
    assert result["ok"] is True and result["format"] == "messages" and result["method"] == "sft"
    assert (result["rows_read"], result["rows_kept"], result["rows_dropped"]) == (2, 1, 1)
    assert result["problems"] == [
        {"row": 2, "field": "messages[1].content", "reason": "is null", "where": "line"}
    ]
    assert result["token_lengths"] is None and result["histogram"] is None and result["example"] is None
