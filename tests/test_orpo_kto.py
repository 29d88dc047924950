"""ORPO and KTO through the data pipeline and the shared loop on the torch engine (tiny Llama):
unpaired feedback is detected, refused for SFT with a message naming KTO, and read for KTO; `data
check` says which methods a file suits; each method's run carries its own figures in its events,
and a stop followed by a resume replays the steps of an uninterrupted run.

The unpaired feedback is LLaMA-Factory's KTO shape (``messages`` + ``label``) made from real data:
the shared DPO demo pairs split into a thumbs-up row (chosen) and a thumbs-down row (rejected), as
TRL's ``unpair_preference_dataset`` does."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from backends.config import config_from_dict
from backends.data import analyze_file, check_file
from backends.errors import RunStopped, UserInputError
from backends.events import KTO_STEP_FIELDS, ORPO_STEP_FIELDS, read_events
from backends.jobs import run_training
from backends.runs import RunDir

ROLE = {"human": "user", "gpt": "assistant", "system": "system"}


def write_feedback(shared_data: Path, out: Path, pairs: int = 40) -> Path:
    """LLaMA-Factory's KTO shape from the shared DPO demo: per pair, the chosen answer rated true
    and the rejected one false (alternating, in file order)."""
    rows = json.loads((shared_data / "llamafactory" / "dpo_en_demo.json").read_text(encoding="utf-8"))
    out_rows = []
    for row in rows[:pairs]:
        prompt = [{"role": ROLE[m["from"]], "content": m["value"]} for m in row["conversations"]]
        for key, label in (("chosen", True), ("rejected", False)):
            answer = {"role": "assistant", "content": row[key]["value"]}
            out_rows.append({"messages": [*prompt, answer], "label": label})
    out.write_text(json.dumps(out_rows), encoding="utf-8")
    return out


def test_unpaired_feedback_is_detected_refused_for_sft_and_read_for_kto(
    shared_data, tmp_path, tiny_model_dir
):
    feedback = write_feedback(shared_data, tmp_path / "kto.json", pairs=5)
    with pytest.raises(UserInputError) as err:
        analyze_file(feedback, None, method="sft")
    assert "kto" in str(err.value) and "label" in str(err.value) and err.value.field == "method"
    with pytest.raises(UserInputError, match="train it with method 'dpo' or 'orpo'"):
        analyze_file(shared_data / "llamafactory" / "dpo_en_demo.json", None, method="kto")
    with pytest.raises(UserInputError, match="needs unpaired feedback"):
        analyze_file(shared_data / "llamafactory" / "alpaca_en_demo.json", None, method="kto")
    result = check_file(feedback, tiny_model_dir)
    assert result["format"] == "feedback" and result["method"] == "kto" and result["suits"] == ["kto"]
    assert result["rows_kept"] == 10
    rows = json.loads(feedback.read_text())
    (start, end), text = result["example"]["spans"][0], result["example"]["text"]
    assert rows[0]["messages"][-1]["content"].strip()[:30] in text[start:end]
    pairs = check_file(shared_data / "llamafactory" / "dpo_en_demo.json")
    assert pairs["suits"] == ["dpo", "orpo"] and pairs["method"] == "dpo"
    assert check_file(shared_data / "llamafactory" / "alpaca_en_demo.json")["suits"] == ["sft", "grpo"]
    assert check_file(shared_data / "wikisql" / "valid.jsonl")["suits"] == ["sft"]  # plain text

    # TRL's unpaired form (prompt/completion/label) and a label that is not true/false
    lines = [
        {"prompt": "Say hi.", "completion": "Hi!", "label": True},
        {"prompt": "Say hi.", "completion": "Go away.", "label": False},
        {"prompt": "Say bye.", "completion": "Bye!", "label": "true"},
    ]
    path = tmp_path / "trl.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    examples, report, _, method = analyze_file(path, None)
    assert method == "kto" and report.rows_kept == 2
    assert [(p.row, p.field) for p in report.problems] == [(3, "label")]
    assert "true or false" in report.problems[0].reason


def run_config(model_dir, data_file, runs, name, method, **training):
    return config_from_dict(
        {
            "model": str(model_dir),
            "method": method,
            "data": {"train_file": str(data_file), "validation_fraction": 0.1},
            "lora": {"rank": 8, "alpha": 16, "dropout": 0.1},
            "training": {
                "precision": "fp32",
                "batch_size": 2,
                "gradient_accumulation_steps": 2,
                "max_seq_length": 64,
                "learning_rate": 1e-2,
                "seed": 3,
                "max_steps": 6,
                "eval_every": 3,
                "save_every": 0,
                **training,
            },
            "output": {"runs_dir": str(runs), "run_name": name},
        }
    )


@pytest.mark.parametrize("method", ["orpo", "kto"])
def test_run_events_stop_and_exact_resume(method, tiny_model_dir, shared_data, tmp_path):
    data = (
        shared_data / "llamafactory" / "dpo_en_demo.json"
        if method == "orpo"
        else write_feedback(shared_data, tmp_path / "kto.json")
    )
    fields = ORPO_STEP_FIELDS if method == "orpo" else ("kl", "desirable_share")
    runs = tmp_path / "runs"
    whole = run_training(run_config(tiny_model_dir, data, runs, "whole", method), console=False)
    events = whole.events()
    assert next(e for e in events if e["event"] == "run_started")["method"] == method
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, 7))
    for e in steps:
        assert all(isinstance(e[k], float) for k in fields), e
    evals = [e for e in events if e["event"] == "eval"]
    assert [e["step"] for e in evals] == [3, 6] and all(0 < e["val_loss"] < 20 for e in evals)
    if method == "orpo":
        first = steps[0]
        assert first["loss"] == pytest.approx(first["nll_loss"] - 0.1 * first["log_odds_ratio"], abs=1e-6)
        assert "reward_accuracy" in evals[0]
    else:
        assert steps[0]["loss"] == pytest.approx(0.5, abs=1e-6)  # policy = reference at step 1
        assert any(k in steps[0] for k in KTO_STEP_FIELDS[:2]) and "kl" in evals[0]
    assert json.loads((whole.adapter_dir / "tunedesk.json").read_text())["method"] == method
    expected = {e["step"]: e for e in steps}

    stop = threading.Event()
    events_path = runs / "stopped" / "events.jsonl"

    def stop_after_step_2() -> None:
        while not any(e["event"] == "step" and e["step"] >= 2 for e in read_events(events_path)):
            time.sleep(0.01)
        stop.set()

    threading.Thread(target=stop_after_step_2, daemon=True).start()
    with pytest.raises(RunStopped):
        run_training(run_config(tiny_model_dir, data, runs, "stopped", method), console=False, stop=stop)
    run = RunDir(runs / "stopped")
    stopped = run.events()[-1]
    assert stopped["event"] == "stopped" and 2 <= stopped["step"] < 6
    run_training(None, resume_dir=run.path, console=False)
    events = run.events()
    resumed = [e for e in events if e["event"] == "run_started"][-1]
    after = [e for e in events[events.index(resumed) :] if e["event"] == "step"]
    assert [e["step"] for e in after] == list(range(stopped["step"] + 1, 7))
    for e in after:
        for key in ("loss", "grad_norm", *fields):
            assert e[key] == pytest.approx(expected[e["step"]][key], abs=1e-5), (e["step"], key)


def test_mlx_refuses_grpo_saying_why(tiny_model_dir):
    """ORPO and KTO run on MLX (tests/test_orpo_kto_mlx.py); GRPO is refused before MLX loads."""
    from backends import mlx_backend

    config = config_from_dict({"model": str(tiny_model_dir), "method": "grpo", "backend": "mlx"})
    with pytest.raises(UserInputError, match="method 'grpo' runs on the PyTorch backend only") as err:
        mlx_backend.create_engine(config)
    assert err.value.field == "backend" and "backend: torch" in err.value.hint
    assert set(mlx_backend.MLX_METHODS) == {"sft", "dpo", "orpo", "kto"}
