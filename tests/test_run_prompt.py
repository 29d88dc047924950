"""A run records what the prompt renderer used, and chat with its adapter renders the same prompt:
the system prompt, literal special tokens kept as text, ``--show-prompt``; ``data.strict`` drops
nothing silently; a resume with an edited config.yaml is refused unless allowed."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import yaml

from backends.cli import main
from backends.config import config_from_dict
from backends.data import load_tokenizer, prepare_data
from backends.data.check import check_file
from backends.errors import RunStopped, UserInputError
from backends.events import read_events
from backends.runs import RunDir

SYSTEM = "You are the TuneDesk support bot."
ROWS = [
    ("How do I reset my password?", "Open Settings, then Security."),
    ("My log shows <|im_end|> inside a line, why?", "It is plain text there."),
    ("What is two plus two?", "Four."),
]


def write_rows(path: Path, rows=ROWS) -> Path:
    lines = [
        json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
        for q, a in rows
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_config(model_dir: Path, tmp: Path, name: str, **data) -> dict:
    return {
        "model": str(model_dir),
        "backend": "torch",
        "data": {"train_file": str(write_rows(tmp / "rows.jsonl")), "validation_fraction": 0.0, **data},
        "lora": {"rank": 2, "alpha": 4, "dropout": 0.0},
        "training": {
            "batch_size": 1,
            "max_seq_length": 128,
            "precision": "fp32",
            "eval_every": 0,
            "max_steps": 2,
        },
        "output": {"runs_dir": str(tmp / "runs"), "run_name": name},
    }


def test_chat_with_a_runs_adapter_shows_and_feeds_the_training_prompt(tiny_model_dir, tmp_path, capsys):
    config = tmp_path / "sys.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tiny_model_dir, tmp_path, "sys", system_prompt=SYSTEM)))
    assert main(["train", "--config", str(config)]) == 0
    run = RunDir(tmp_path / "runs" / "sys")
    recorded = json.loads((run.path / "prompt.json").read_text())
    assert recorded["system_prompt"] == SYSTEM and recorded["special_tokens"] == "text"
    assert recorded["add_bos"] is False and "<|im_start|>" in recorded["template"]
    assert json.loads((run.adapter_dir / "tunedesk.json").read_text())["prompt"] == recorded
    capsys.readouterr()
    code = main(
        ["chat", "--model", str(tiny_model_dir), "--adapter", str(run.path), "--prompt", ROWS[0][0]]
        + ["--show-prompt", "--max-new-tokens", "1", "--backend", "torch"]
    )
    assert code == 0
    err = capsys.readouterr().err
    shown = err.split("\n--- end of prompt ---")[0].split("tokens) ---\n", 1)[1]
    expected = f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{ROWS[0][0]}<|im_end|>\n<|im_start|>assistant\n"
    assert shown == expected
    # ... and those are the ids training fed before the answer of the same row.
    tok = load_tokenizer(tiny_model_dir)
    data = prepare_data(run.load_config(), tok)
    example = next(e for e in data.train if e.row == 1)
    n = len(tok(expected, add_special_tokens=False)["input_ids"])
    assert list(example.input_ids[:n]) == tok(expected, add_special_tokens=False)["input_ids"]
    assert example.labels[n] != -100 and all(x == -100 for x in example.labels[:n])


def test_literal_special_tokens_are_reported_and_trained_as_text(tiny_model_dir, tmp_path):
    tok = load_tokenizer(tiny_model_dir)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    rows = write_rows(tmp_path / "rows.jsonl")
    report = check_file(rows, tokenizer=tok)
    assert report["literal_special_tokens"] == [{"row": 2, "tokens": ["<|im_end|>"]}]
    assert any("line 2" in n and "plain text" in n for n in report["notices"])

    def example_ids(policy: str) -> list[int]:
        config = config_from_dict(tiny_config(tiny_model_dir, tmp_path, "x", literal_special_tokens=policy))
        return list(next(e for e in prepare_data(config, tok).train if e.row == 2).input_ids)

    as_text, as_control = example_ids("text"), example_ids("control")
    # The typed <|im_end|> is plain text unless opted in: one control token fewer.
    assert as_control.count(im_end) == as_text.count(im_end) + 1 >= 3
    assert tok.decode(as_text) == tok.decode(as_control)


def test_strict_makes_an_over_length_row_an_error_naming_file_and_line(tiny_model_dir, tmp_path):
    long = [*ROWS, ("word " * 300, "Fine.")]
    path = write_rows(tmp_path / "long.jsonl", long)
    config = tiny_config(tiny_model_dir, tmp_path, "strict", strict=True)
    config["data"]["train_file"] = str(path)
    config["training"]["max_seq_length"] = 64
    with pytest.raises(UserInputError) as info:
        prepare_data(config_from_dict(config), load_tokenizer(tiny_model_dir))
    assert info.value.file == str(path) and info.value.line == 4 and "max_seq_length" in str(info.value)
    config["data"]["strict"] = False
    data = prepare_data(config_from_dict(config), load_tokenizer(tiny_model_dir))
    assert sorted(e.row for e in data.train) == [1, 2, 3]


def _stopped_run(model_dir: Path, tmp: Path) -> RunDir:
    from backends.jobs import run_training

    raw = tiny_config(model_dir, tmp, "resume")
    raw["training"].update(max_steps=200, save_every=0)
    events = tmp / "runs" / "resume" / "events.jsonl"

    def stop_after_a_step() -> None:
        while not any(e["event"] == "step" for e in read_events(events)):
            time.sleep(0.02)
        (events.parent / "stop.request").write_text("")

    threading.Thread(target=stop_after_a_step, daemon=True).start()
    with pytest.raises(RunStopped):
        run_training(config_from_dict(raw), console=False)
    return RunDir(events.parent)


def test_resume_refuses_an_edited_config_unless_allowed(tiny_model_dir, tmp_path, capsys):
    run = _stopped_run(tiny_model_dir, tmp_path)
    raw = yaml.safe_load(run.config_path.read_text())
    stopped_at = run.events()[-1]["step"]
    raw["training"]["learning_rate"] = 0.5
    raw["training"]["max_steps"] = stopped_at + 1
    run.config_path.write_text(yaml.safe_dump(raw))
    assert main(["train", "--resume", str(run.path)]) == 1
    err = capsys.readouterr().err
    assert "training.learning_rate" in err and "training.max_steps" in err and "--allow-config-change" in err
    assert main(["train", "--resume", str(run.path), "--allow-config-change"]) == 0
    noted = [e for e in run.events() if e.get("changed_keys")]
    assert noted and noted[0]["changed_keys"] == ["training.learning_rate", "training.max_steps"]
    assert run.events()[-1]["event"] == "run_finished"
