"""The forgetting check (backends/forgetting/): exactness with the adapter off, the KL against an
independent computation, the probe set, the score, replay in the data pipeline, and the check at
the end of training and through `tunedesk forgetting`, on the tiny model (one SmolLM2 slow test)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from backends.config import config_from_dict
from backends.data.replay import mix_replay, replay_count, replay_source
from backends.data.types import DataReport
from backends.errors import UserInputError
from backends.forgetting.check import prepare, read_forgetting
from backends.forgetting.probes import CATEGORIES, FULL, QUICK, load_probes, select_probes
from backends.forgetting.render import run_renderer
from backends.forgetting.score import LARGE_FROM, LITTLE_BELOW, advice, drift_score, verdict

ROOT = Path(__file__).resolve().parent.parent
DEMO_DATA = ROOT / "resources" / "demo" / "support_train.jsonl"


def tiny_config(model_dir: Path, runs_dir: Path, name: str, **over) -> dict:
    return {
        "model": str(model_dir),
        "data": {"train_file": str(DEMO_DATA), "validation_fraction": 0.05, **over.pop("data", {})},
        "lora": {"rank": 4, "alpha": 8, "dropout": 0.0},
        "training": {
            "batch_size": 4,
            "max_seq_length": 128,
            "learning_rate": 1e-2,
            "precision": "fp32",
            "eval_every": 2,
            "max_steps": 4,
            "save_every": 0,
            **over.pop("training", {}),
        },
        "forgetting": over.pop("forgetting", {}),
        "output": {"runs_dir": str(runs_dir), "run_name": name},
    }


@pytest.fixture(scope="module")
def tuned_tiny(tiny_model_dir):
    """The tiny Llama with a LoRA adapter whose weights are random (so it changes the model)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    inputs = prepare(tokenizer, run_renderer(tokenizer, None), QUICK, probes=6)
    return model.eval(), tokenizer, inputs


def _check(model, tokenizer, inputs, **kw):
    from backends.forgetting.torch_check import run_check

    return run_check(
        model,
        inputs.prompts,
        inputs.text_ids,
        max_new_tokens=6,
        eos={tokenizer.eos_token_id},
        pad=tokenizer.pad_token_id,
        device="cpu",
        **kw,
    )


def test_adapter_off_gives_exactly_zero_kl_and_equal_perplexities(tuned_tiny):
    model, tokenizer, inputs = tuned_tiny
    off = _check(model, tokenizer, inputs, tuned=False, batch=4)
    assert off.kl_mean == 0.0 and off.tokens > 0
    assert off.ppl_base == off.ppl_tuned and math.isfinite(off.ppl_base)
    assert off.answers_changed == 0 and off.score == 0.0 and off.verdict == "little"
    on = _check(model, tokenizer, inputs, batch=4)
    assert on.kl_mean > 0.01 and on.ppl_tuned != on.ppl_base
    assert on.ppl_base == off.ppl_base  # the base side is the same computation either way
    assert model.training is False


def test_kl_matches_an_independent_unbatched_computation(tuned_tiny):
    """kl_mean equals torch's kl_div over each probe's base answer, one probe at a time."""
    import torch
    import torch.nn.functional as F

    from backends.forgetting.torch_check import greedy_answers

    model, tokenizer, inputs = tuned_tiny
    result = _check(model, tokenizer, inputs, batch=4)
    total, count, changed = 0.0, 0, 0
    with torch.no_grad():
        for prompt in inputs.prompts:
            with model.disable_adapter():
                (answer,) = greedy_answers(
                    model, [prompt], max_new_tokens=6, eos={tokenizer.eos_token_id}, pad=0, device="cpu"
                )
                ids = torch.tensor([prompt + answer])
                base = F.log_softmax(model(input_ids=ids).logits[0, len(prompt) - 1 : -1], -1)
            tuned = F.log_softmax(model(input_ids=ids).logits[0, len(prompt) - 1 : -1], -1)
            total += float(F.kl_div(tuned, base, log_target=True, reduction="sum"))
            count += len(answer)
            (own,) = greedy_answers(
                model, [prompt], max_new_tokens=len(answer), eos={tokenizer.eos_token_id}, pad=0, device="cpu"
            )
            changed += int(own != answer)
    assert result.tokens == count
    assert result.kl_mean == pytest.approx(total / count, rel=1e-4)
    assert result.answers_changed == changed


def test_probe_set_covers_every_category_and_replay_does_not_repeat_it():
    probes = load_probes()
    assert len(probes) == 100 and len({p.id for p in probes}) == 100
    assert {p.category for p in probes} == set(CATEGORIES)
    quick = select_probes(probes, QUICK.probes)
    assert len(quick) == QUICK.probes and {p.category for p in quick} == set(CATEGORIES)
    assert select_probes(probes, FULL.probes) == probes
    prompts = {p.prompt.lower() for p in probes}
    rows = [json.loads(line) for line in replay_source(None).read_text().splitlines()]
    assert len(rows) >= 50 and not any(r["messages"][0]["content"].lower() in prompts for r in rows)


def test_probes_are_rendered_as_chat_renders_them(smollm2_tokenizer):
    from backends.chat.session import render_prompt

    renderer = run_renderer(smollm2_tokenizer, None)
    inputs = prepare(smollm2_tokenizer, renderer, QUICK, probes=2)
    expected = render_prompt(
        smollm2_tokenizer, [{"role": "user", "content": inputs.probes[0].prompt}], renderer
    )
    assert inputs.prompts[0] == expected
    assert smollm2_tokenizer.decode(expected).endswith("<|im_start|>assistant\n")
    assert len(inputs.text_ids) == QUICK.text_tokens


def test_score_and_verdict():
    assert drift_score(0.0, 10.0, 10.0) == 0.0
    assert drift_score(0.1, 10.0, 10.0 * math.e) == pytest.approx(1.1)
    assert drift_score(0.1, 10.0, 5.0) == pytest.approx(0.1)  # a lower perplexity is no drift
    assert verdict(LITTLE_BELOW / 2) == "little"
    assert verdict((LITTLE_BELOW + LARGE_FROM) / 2) == "noticeable"
    assert verdict(LARGE_FROM) == "large"
    with pytest.raises(ValueError):
        drift_score(float("nan"), 1.0, 1.0)
    config = config_from_dict({"training": {"learning_rate": 1e-3, "epochs": 6}})
    tips = advice("large", config)
    assert tips == [
        "mix general examples into training: data.replay: 0.1",
        "a lower learning rate: training.learning_rate: 2.5e-04",
        "fewer epochs: training.epochs: 3",
    ]
    assert advice("noticeable", config) == []


def test_replay_count_and_mix():
    assert replay_count(0.1, 90) == 10 and replay_count(0.0, 90) == 0 and replay_count(0.5, 3) == 3
    report = DataReport(file="x", format="messages", rows_read=9)
    mixed = mix_replay(list(range(9)), ["a", "b"], 0.5, 0, report, Path("g.jsonl"))
    assert mixed[:9] == list(range(9)) and len(mixed) == 18
    assert sorted(mixed[9:].count(x) for x in "ab") == [4, 5]  # cycled through a seeded shuffle
    assert "9 general examples" in report.notices[-1] and "repeated" in report.notices[-1]


def test_config_switches_and_replay_only_for_sft():
    cfg = config_from_dict({"forgetting": {"at_end": True, "at_eval": True}, "data": {"replay": 0.1}})
    assert cfg.forgetting.at_end is True and cfg.data.replay == 0.1
    assert config_from_dict({}).forgetting.at_end == "auto"
    with pytest.raises(UserInputError, match="forgetting.at_end"):
        config_from_dict({"forgetting": {"at_end": "sometimes"}})
    with pytest.raises(UserInputError, match="replay"):
        config_from_dict({"method": "dpo", "data": {"replay": 0.1}})


def test_replay_joins_training_only(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from backends.data import prepare_data
    from backends.jobs import resolve_data_paths

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    raw = tiny_config(tiny_model_dir, tmp_path, "r", data={"replay": 0.2})
    plain = prepare_data(config_from_dict({**raw, "data": {**raw["data"], "replay": 0.0}}), tokenizer)
    mixed = prepare_data(resolve_data_paths(config_from_dict(raw)), tokenizer)
    n = replay_count(0.2, len(plain.train))
    assert len(mixed.train) == len(plain.train) + n
    assert [e.input_ids for e in mixed.validation] == [e.input_ids for e in plain.validation]
    answers = [
        json.loads(line)["messages"][1]["content"] for line in replay_source(None).read_text().splitlines()
    ]
    for example in mixed.train[len(plain.train) :]:
        text = tokenizer.decode(example.input_ids)
        assert any(a in text for a in answers), text
    own = tmp_path / "own.jsonl"
    own.write_text(json.dumps({"prompt": "Say hi.", "completion": "Hi!"}) + "\n")
    custom = prepare_data(
        config_from_dict({**raw, "data": {**raw["data"], "replay_file": str(own)}}), tokenizer
    )
    assert {tuple(e.input_ids) for e in custom.train[len(plain.train) :]} == {
        tuple(custom.train[-1].input_ids)
    }
    assert "Hi!" in tokenizer.decode(custom.train[-1].input_ids)


def test_check_at_eval_and_end_of_training_then_the_command(tiny_model_dir, tmp_path, capsys):
    from backends.cli import main
    from backends.jobs import run_training

    raw = tiny_config(
        tiny_model_dir, tmp_path / "runs", "drift", forgetting={"at_end": True, "at_eval": True}
    )
    run = run_training(config_from_dict(raw), console=False)
    events = run.events()
    drift = [e for e in events if e["event"] == "forgetting"]
    assert [e["step"] for e in drift] == [2, 4, 4]  # eval at 2, final eval at 4, then the end check
    names = [e["event"] for e in events]
    assert names.index("forgetting", names.index("eval")) < names.index("run_finished")
    saved = read_forgetting(run.path)
    assert saved is not None and saved["size"] == "quick" and saved["probes"] == QUICK.probes
    assert saved["score"] == pytest.approx(drift[-1]["score"]) and saved["verdict"] in (
        "little",
        "noticeable",
        "large",
    )
    assert saved["kl_mean"] > 0

    assert main(["forgetting", str(run.path), "--probes", "6", "--max-new-tokens", "4", "--json"]) == 0
    event = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert event["event"] == "forgetting" and event["probes"] == 6 and event["size"] == "full"
    saved = read_forgetting(run.path)
    assert saved["probes"] == 6 and len(saved["answers"]) == 6 and saved["answers"][0]["prompt"]
    assert [e["event"] for e in run.events()].count("forgetting") == 4


def test_command_on_a_folder_without_adapter_is_a_user_error(tmp_path, capsys):
    from backends.cli import main

    assert main(["forgetting", str(tmp_path / "nope")]) == 1
    assert "nope" in capsys.readouterr().err


@pytest.mark.slow
def test_smollm2_short_run_then_the_command(smollm2_dir, tmp_path, capsys):
    """A 3-step SmolLM2 run (default forgetting.at_end: auto), then `tunedesk forgetting --quick`
    on six probes: real model, real template, finite figures that add up to the score."""
    from backends.cli import main
    from backends.jobs import run_training

    raw = tiny_config(
        smollm2_dir,
        tmp_path / "runs",
        "smol",
        training={"max_steps": 3, "learning_rate": 1e-3, "eval_every": 0},
    )
    run = run_training(config_from_dict(raw), console=False)
    assert main(["forgetting", str(run.path), "--quick", "--probes", "6", "--json"]) == 0
    event = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert event["probes"] == 6 and event["size"] == "quick" and event["tokens"] > 20
    assert 1.0 < event["ppl_base"] < 100 and event["kl_mean"] > 0
    assert event["score"] == pytest.approx(
        drift_score(event["kl_mean"], event["ppl_base"], event["ppl_tuned"])
    )


def test_end_of_training_hook_skips_what_costs_too_much_or_is_not_built_in(smollm2_tokenizer, tmp_path):
    from types import SimpleNamespace

    from backends.events import EventSink
    from backends.forgetting.hook import BUDGET, ForgettingHook, estimated_seconds
    from backends.runs import RunDir

    calls = []

    class Engine:
        name = "torch"

        def forgetting_check(self, prompts, text_ids, **options):
            calls.append(options)
            raise RuntimeError("boom")

    config = config_from_dict({})
    renderer = run_renderer(smollm2_tokenizer, None)
    events = []
    sink = EventSink(None, listeners=[events.append])
    run = RunDir(tmp_path)
    ForgettingHook(SimpleNamespace(name="mlx"), config, smollm2_tokenizer, renderer).at_end(
        run, sink, step=5, tokens=1000, elapsed=10.0
    )
    assert (
        "not built into the mlx backend" in events[-1]["message"]
        and "tunedesk forgetting" in events[-1]["message"]
    )
    hook = ForgettingHook(Engine(), config, smollm2_tokenizer, renderer)
    estimate = estimated_seconds(hook._prepare(), 1000, 10.0)  # 100 trained tokens/s
    assert estimate > 0
    cheap = estimate / BUDGET * 1.01  # a run this long makes the check cost just under 10%
    hook.at_end(run, sink, step=5, tokens=int(100 * estimate / BUDGET / 2), elapsed=estimate / BUDGET / 2)
    assert "skipped" in events[-1]["message"] and not calls
    hook.at_end(run, sink, step=5, tokens=int(100 * cheap), elapsed=cheap)
    assert (
        len(calls) == 1 and calls[0]["size"] == "quick" and calls[0]["max_new_tokens"] == QUICK.max_new_tokens
    )
    assert events[-1]["level"] == "warning" and "forgetting check failed" in events[-1]["message"]
    assert not (tmp_path / "forgetting.json").exists()  # a failed check fails nothing and records nothing
