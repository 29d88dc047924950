"""`tunedesk data check` on the real public datasets (read in place) and on bad files."""

from __future__ import annotations

import json

import pytest

from backends.cli import main
from backends.data.check import check_file, format_report

IM_END = "<|im_end|>"

REAL_FILES = [
    # (path under shared data, format, rows)
    ("wikisql/train.jsonl", "text", 1000),
    ("llamafactory/alpaca_en_demo.json", "alpaca", 999),
    ("llamafactory/identity.json", "alpaca", 91),
    ("llamafactory/dpo_en_demo.json", "preference", 300),
]


def run_check(capsys, *argv):
    rc = main(["data", "check", *argv])
    out = capsys.readouterr().out
    return rc, out


@pytest.mark.slow
@pytest.mark.parametrize(("name", "fmt", "rows"), REAL_FILES)
def test_real_public_files_pass_data_check(capsys, shared_data, smollm2_dir, name, fmt, rows):
    path = shared_data / name
    rc, out = run_check(capsys, str(path), "--model", str(smollm2_dir), "--json")
    assert rc == 0
    result = json.loads(out)
    assert result["ok"] is True and result["format"] == fmt and result["rows_read"] == rows
    assert result["method"] == ("dpo" if fmt == "preference" else "sft")
    assert result["rows_kept"] + result["rows_dropped"] == rows
    assert result["problem_count"] == len(result["problems"]) == result["rows_dropped"]
    if fmt == "preference":
        # Only rows whose prompt alone exceeds 1024 tokens are dropped, each with its reason.
        assert result["rows_kept"] > 200
        assert all(
            p["field"] == "(length)" and "no room for an answer" in p["reason"] for p in result["problems"]
        )
    else:
        assert result["rows_kept"] == rows and result["problems"] == []
    stats = result["token_lengths"]
    assert 0 < stats["min"] <= stats["median"] <= stats["p95"] <= stats["max"]
    assert sum(result["histogram"]["counts"]) == rows and len(result["histogram"]["bins"]) == 21
    example = result["example"]
    trained = [example["text"][s:e] for s, e in example["spans"]]
    if fmt == "text":  # packed: documents joined with EOS, cut into sequences of max_seq_length
        assert len(trained) == 1 and trained[0].count(IM_END) >= 1
        assert any("plain text packed: 1000 documents" in n for n in result["notices"])
    else:
        assert trained and all(t.endswith(IM_END) for t in trained)


@pytest.mark.slow
def test_example_span_marks_exactly_the_answer(shared_data, smollm2_dir):
    path = shared_data / "llamafactory" / "identity.json"
    first = json.loads(path.read_text())[0]
    result = check_file(path, smollm2_dir)
    example = result["example"]
    assert example["row"] == 1
    ((start, end),) = example["spans"]
    assert example["text"][start:end] == first["output"] + IM_END
    assert example["text"][:start].endswith(f"user\n{first['instruction']}{IM_END}\n<|im_start|>assistant\n")
    text = format_report(result)
    assert f"⟦{first['output']}{IM_END}⟧" in text and "rows:    91 read, 91 kept, 0 dropped" in text


@pytest.mark.slow
def test_check_of_a_file_with_only_invalid_rows_exits_1_with_the_reasons(capsys, tmp_path, smollm2_dir):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"instruction": "a", "output": ""}\n{"instruction": "b", "output": null}\n')
    rc, out = run_check(capsys, str(path), "--model", str(smollm2_dir), "--json")
    result = json.loads(out)
    assert rc == 1 and result["ok"] is False and result["rows_kept"] == 0
    assert [(p["row"], p["field"], p["reason"]) for p in result["problems"]] == [
        (1, "output", "empty answer"),
        (2, "output", "is null"),
    ]
    rc, out = run_check(capsys, str(path), "--model", str(smollm2_dir))
    assert rc == 1 and "line 2: output: is null" in out and "no usable rows" in out


@pytest.mark.slow
def test_check_json_reports_a_stopping_error(capsys, tmp_path, smollm2_dir):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"text": "fine"}\n{"text": \n')
    # A malformed line is dropped and named; the rest is kept.
    rc, out = run_check(capsys, str(path), "--model", str(smollm2_dir), "--json")
    result = json.loads(out)
    assert rc == 0 and result["rows_kept"] == 1
    assert [(p["row"], p["field"]) for p in result["problems"]] == [(2, "(line)")]
    # With --strict it stops the check.
    rc, out = run_check(capsys, str(path), "--model", str(smollm2_dir), "--json", "--strict")
    result = json.loads(out)
    assert rc == 1 and result["ok"] is False
    assert result["error"]["line"] == 2 and result["error"]["file"] == str(path)
    assert "not valid JSON" in result["error"]["message"]
    # without --json the CLI prints the error and exits 1
    assert main(["data", "check", str(path), "--model", str(smollm2_dir), "--strict"]) == 1
    assert f"{path}:2" in capsys.readouterr().err


@pytest.mark.slow
def test_strict_check_fails_on_the_first_invalid_row(capsys, tmp_path, smollm2_dir):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"text": "ok"}, {"text": None}]))
    rc, out = run_check(capsys, str(path), "--model", str(smollm2_dir), "--json", "--strict")
    result = json.loads(out)
    assert rc == 1 and result["error"]["row"] == 2 and result["error"]["field"] == "text"
    assert f"{path}: row 2: text: is null" in result["error"]["message"]


def test_a_missing_file_is_reported_before_any_model_is_loaded(capsys, tmp_path, monkeypatch):
    from backends import models

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded for a file that does not exist")

    monkeypatch.setattr(models, "resolve_model", no_model)
    missing = tmp_path / "nope.jsonl"
    assert main(["data", "check", str(missing)]) == 1
    err = capsys.readouterr().err
    assert "no such file" in err and str(missing) in err
    assert main(["data", "check", str(tmp_path), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["error"]["message"].endswith("holds no .txt or .md file")
