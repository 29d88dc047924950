"""GRPO: the built-in rewards, a user's reward file (run only when named; a clear error naming the
file when it raises), the group advantages, and a run through the shared loop on the tiny Llama:
the step figures of each reward function, evaluation, and a stop (in-process, and SIGTERM to
`tunedesk train`) followed by a resume that samples and scores exactly the steps of an
uninterrupted run (torch's RNG is in the checkpoint)."""

from __future__ import annotations

import json
import signal
import threading
import time

import numpy as np
import pytest
import yaml

from backends.config import RewardConfig, config_from_dict
from backends.errors import RunFailed, RunStopped, UserInputError
from backends.events import GRPO_STEP_FIELDS, read_events
from backends.jobs import run_training
from backends.runs import RunDir, run_status
from backends.training.grpo import group_advantages
from backends.training.rewards import RewardError, build_rewards, matches_answer, valid_json
from tests.test_dpo_torch import _start


def test_builtin_rewards():
    assert matches_answer("", " paris ", "Paris") == 1.0
    assert matches_answer("", "The answer is 42.", "42") == 1.0
    assert matches_answer("", "The answer is 41.", "42") == 0.0
    assert matches_answer("", "anything", "") == 0.0
    assert valid_json("", '{"a": [1, 2]}', "") == 1.0
    assert valid_json("", '```json\n{"a": 1}\n```', "") == 1.0
    assert valid_json("", "{'a': 1}", "") == 0.0
    regex, length = build_rewards(
        [RewardConfig(type="regex", pattern=r"^\d+$", weight=2), RewardConfig(type="length", min=2, max=5)]
    )
    assert (regex.name, regex.weight) == ("regex", 2.0)
    assert regex.fn("", "123", "") == 1.0 and regex.fn("", "12a", "") == 0.0
    assert (
        length.fn("", "abc", "") == 1.0
        and length.fn("", "a", "") == 0.0
        and length.fn("", "abcdef", "") == 0.0
    )
    with pytest.raises(UserInputError, match="invalid regular expression"):
        build_rewards([RewardConfig(type="regex", pattern="(")])
    with pytest.raises(ValueError, match="pattern"):
        RewardConfig(type="regex")


def test_user_reward_file_runs_only_when_named_and_errors_name_it(tmp_path):
    marker = tmp_path / "imported"
    good = tmp_path / "my_reward.py"
    good.write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "def reward(prompt, completion, answer):\n"
        "    return len(completion) / 10\n"
        "def broken(prompt, completion, answer):\n"
        "    return 1 / 0\n"
        "def text(prompt, completion, answer):\n"
        "    return 'high'\n"
    )
    build_rewards([RewardConfig(type="length", max=3)])
    assert not marker.exists()  # nothing imports a file the config does not name
    (fn,) = build_rewards([RewardConfig(type="python", file=good)])
    assert marker.exists() and fn.name == "my_reward" and fn.fn("p", "abcde", "") == 0.5
    (bad,) = build_rewards([RewardConfig(type="python", file=good, function="broken")])
    with pytest.raises(RewardError) as err:
        bad.fn("p", "c", "a")
    assert (
        str(good) in str(err.value) and "ZeroDivisionError" in str(err.value) and "'broken'" in str(err.value)
    )
    (wrong,) = build_rewards([RewardConfig(type="python", file=good, function="text")])
    with pytest.raises(RewardError, match="must return a finite number"):
        wrong.fn("p", "c", "a")
    with pytest.raises(UserInputError, match="no function 'missing'"):
        build_rewards([RewardConfig(type="python", file=good, function="missing")])
    with pytest.raises(UserInputError, match="not found"):
        build_rewards([RewardConfig(type="python", file=tmp_path / "nope.py")])


def test_group_advantages():
    adv = group_advantages([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0], 4)
    first = np.array([1.0, 0.0, 0.0, 1.0])
    expected = (first - 0.5) / (first.std(ddof=1) + 1e-4)
    np.testing.assert_allclose(adv[:4], expected)
    assert np.all(adv[4:] == 0)  # a group of equal rewards teaches nothing
    with pytest.raises(ValueError):
        group_advantages([1.0, 2.0, 3.0], 2)


def write_prompts(path, n: int = 12):
    rows = [{"prompt": f"Name a number bigger than {i}.", "completion": str(i + 1)} for i in range(n)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def grpo_config(model_dir, data, runs, name, **grpo):
    return config_from_dict(grpo_raw(model_dir, data, runs, name, **grpo))


def grpo_raw(model_dir, data, runs, name, **grpo) -> dict:
    return {
        "model": str(model_dir),
        "method": "grpo",
        "data": {"train_file": str(data), "validation_fraction": 0.2},
        "lora": {"rank": 4, "alpha": 8, "dropout": 0.1},
        "grpo": {
            "num_generations": 3,
            "max_completion_length": 6,
            "rewards": [{"type": "length", "max": 12}, {"type": "regex", "pattern": r"\d"}],
            **grpo,
        },
        "training": {
            "precision": "fp32",
            "batch_size": 2,
            "gradient_accumulation_steps": 2,
            "max_seq_length": 64,
            "learning_rate": 1e-2,
            "seed": 3,
            "max_steps": 4,
            "eval_every": 2,
            "save_every": 0,
        },
        "output": {"runs_dir": str(runs), "run_name": name},
    }


def test_grpo_run_events_stop_and_exact_resume(tiny_model_dir, tmp_path):
    data = write_prompts(tmp_path / "prompts.jsonl")
    runs = tmp_path / "runs"
    whole = run_training(grpo_config(tiny_model_dir, data, runs, "whole"), console=False)
    events = whole.events()
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4]
    for e in steps:
        assert all(isinstance(e[k], float) for k in GRPO_STEP_FIELDS)
        assert 0 <= e["reward_mean/length"] <= 1 and 0 <= e["reward_mean/regex"] <= 1
        assert e["reward_mean"] == pytest.approx(e["reward_mean/length"] + e["reward_mean/regex"])
        assert 1 <= e["completion_length"] <= 6 and e["kl"] >= 0 and e["clip_fraction"] == 0
        assert e["step_tokens"] > 0
    evals = [e for e in events if e["event"] == "eval"]
    assert [e["step"] for e in evals] == [2, 4]
    assert all(e["val_loss"] == pytest.approx(-e["reward_mean"]) for e in evals)
    expected = {e["step"]: e for e in steps}

    stop = threading.Event()
    events_path = runs / "stopped" / "events.jsonl"

    def stop_after_step_1() -> None:
        while not any(e["event"] == "step" for e in read_events(events_path)):
            time.sleep(0.01)
        stop.set()

    threading.Thread(target=stop_after_step_1, daemon=True).start()
    with pytest.raises(RunStopped):
        run_training(grpo_config(tiny_model_dir, data, runs, "stopped"), console=False, stop=stop)
    run = RunDir(runs / "stopped")
    stopped = run.events()[-1]
    assert stopped["event"] == "stopped" and 1 <= stopped["step"] < 4
    run_training(None, resume_dir=run.path, console=False)
    events = run.events()
    resumed = [e for e in events if e["event"] == "run_started"][-1]
    after = [e for e in events[events.index(resumed) :] if e["event"] == "step"]
    assert [e["step"] for e in after] == list(range(stopped["step"] + 1, 5))
    for e in after:
        for key in ("loss", "grad_norm", *GRPO_STEP_FIELDS, "reward_mean/length"):
            assert e[key] == pytest.approx(expected[e["step"]][key], abs=1e-5), (e["step"], key)


def test_a_raising_reward_file_fails_the_run_naming_the_file(tiny_model_dir, tmp_path):
    data = write_prompts(tmp_path / "prompts.jsonl", 4)
    bad = tmp_path / "scorer.py"
    bad.write_text("def reward(prompt, completion, answer):\n    raise KeyError('score')\n")
    config = grpo_config(
        tiny_model_dir, data, tmp_path / "runs", "bad", rewards=[{"type": "python", "file": str(bad)}]
    )
    with pytest.raises((UserInputError, RunFailed)) as err:
        run_training(config, console=False)
    assert str(bad) in str(err.value) and "KeyError" in str(err.value)
    failed = RunDir(tmp_path / "runs" / "bad").events()[-1]
    assert failed["event"] == "run_failed" and str(bad) in failed["message"]


@pytest.mark.slow
def test_sigterm_then_resume_continues_the_same_curve(tiny_model_dir, tmp_path):
    """`tunedesk train` of a GRPO run (LoRA dropout on, 6 steps): SIGTERM after step 2 -> `stopped`,
    exit 130; `--resume` in a new process samples the same completions and gives every later step
    exactly the figures of an uninterrupted run: the same rewards per function, completion
    lengths, loss, KL and gradient norm (equal values, not close ones)."""
    data = write_prompts(tmp_path / "prompts.jsonl")
    runs = tmp_path / "runs"

    # A reward that varies between the tiny model's random completions (the built-ins give it all
    # zeros), so the advantages and the policy gradient are not zero.
    scorer = tmp_path / "scorer.py"
    scorer.write_text("def reward(prompt, completion, answer):\n    return (len(completion) % 4) / 3\n")

    def raw(name: str) -> dict:
        r = grpo_raw(tiny_model_dir, data, runs, name, rewards=[{"type": "python", "file": str(scorer)}])
        r["training"].update(max_steps=6, eval_every=0)
        return r

    whole = run_training(config_from_dict(raw("whole")), console=False)
    expected = {e["step"]: e for e in whole.events() if e["event"] == "step"}
    assert sorted(expected) == list(range(1, 7))
    assert len({e["reward_mean"] for e in expected.values()}) > 1  # the curve is not flat
    assert all(e["reward_std"] > 0 for e in expected.values())

    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(raw("term")))
    proc = _start(["--config", str(cfg)], tmp_path / "term.log")
    run = RunDir(runs / "term")
    deadline = time.monotonic() + 300
    while not any(e["event"] == "step" and e["step"] >= 2 for e in read_events(run.events_path)):
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "term.log").read_text()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    assert proc.returncode == 130, (tmp_path / "term.log").read_text()
    stopped = run.events()[-1]
    assert stopped["event"] == "stopped" and 2 <= stopped["step"] < 6 and run_status(run) == "stopped"

    proc = _start(["--resume", str(run.path)], tmp_path / "resume.log")
    proc.wait(timeout=300)
    assert proc.returncode == 0, (tmp_path / "resume.log").read_text()
    events = run.events()
    resumed = [e for e in events if e["event"] == "run_started"][-1]
    assert resumed["resumed_from"] == stopped["step"]
    after = [e for e in events[events.index(resumed) :] if e["event"] == "step"]
    assert [e["step"] for e in after] == list(range(stopped["step"] + 1, 7))
    figures = ("loss", "grad_norm", *GRPO_STEP_FIELDS, "reward_mean/scorer", "reward_std/scorer")
    for e in after:
        for key in figures:
            assert e[key] == expected[e["step"]][key], (e["step"], key)
    assert run_status(run) == "finished"
