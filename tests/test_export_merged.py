"""`tunedesk export RUN_DIR --format merged` on the tiny Llama: the merged model's logits equal
base + adapter (peft for PEFT adapters, mlx-lm for MLX ones) within 1e-4 in fp32 for LoRA, DoRA and
rsLoRA; the bf16 export is the fp32 merge rounded to bf16; sharding, generation config, chat
template; and every bad input is exit 1 with nothing written."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from backends.cli import main
from tests.export_runs import PROMPT_IDS, hf_logits, make_run, peft_logits


def export(run, *extra):
    return main(["export", str(run), "--format", "merged", *extra])


@pytest.mark.parametrize("kind", ["lora", "dora", "rslora"], ids=["lora", "dora", "rslora"])
def test_merged_equals_peft_base_plus_adapter(tiny_model_dir, tmp_path, kind):
    run = make_run(tiny_model_dir, tmp_path / "run", use_dora=kind == "dora", use_rslora=kind == "rslora")
    assert export(run, "--quant", "f32", "--out", str(tmp_path / "f32")) == 0
    want = peft_logits(tiny_model_dir, run / "adapter")
    got = hf_logits(tmp_path / "f32")
    np.testing.assert_allclose(got, want, atol=1e-4)
    # The adapter matters: the base model's logits are far from the tuned ones.
    assert np.abs(hf_logits(tiny_model_dir) - want).max() > 1e-2
    # bf16: each weight is the fp32 merge rounded to bf16, nothing else.
    assert export(run, "--quant", "bf16", "--out", str(tmp_path / "bf16")) == 0
    from safetensors.torch import load_file

    f32, bf16 = (
        load_file(tmp_path / "f32" / "model.safetensors"),
        load_file(tmp_path / "bf16" / "model.safetensors"),
    )
    import torch

    assert set(f32) == set(bf16) and all(t.dtype == torch.bfloat16 for t in bf16.values())
    for key, value in f32.items():
        assert torch.equal(value.to(torch.bfloat16), bf16[key]), key
    cfg = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert cfg["dtype"] == "bfloat16"


@pytest.mark.parametrize("use_dora", [False, True], ids=["lora", "dora"])
def test_merged_from_an_mlx_adapter_equals_mlx_lm(tiny_model_dir, tmp_path, use_dora):
    mx = pytest.importorskip("mlx.core")
    from mlx_lm import load

    run = make_run(tiny_model_dir, tmp_path / "run", use_dora=use_dora, backend="mlx")
    model, _ = load(str(tiny_model_dir), adapter_path=str(run / "adapter"))
    want = np.array(model(mx.array(PROMPT_IDS)))
    assert export(run, "--out", str(tmp_path / "merged")) == 0  # the tiny base is fp32: so is the merge
    np.testing.assert_allclose(hf_logits(tmp_path / "merged"), want, atol=1e-4)


def test_shards_tokenizer_template_and_end_of_turn(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from backends.jobs.export.merged import write_merged
    from backends.jobs.export.source import resolve_source

    run = make_run(tiny_model_dir, tmp_path / "run")
    template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    )
    (run / "adapter" / "chat_template.jinja").write_text(template)
    out = tmp_path / "sharded"
    out.mkdir()
    merged_layers = write_merged(resolve_source(run), out, "f32", max_shard_bytes=2 * 2**20)
    assert merged_layers == 2 * 5
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(shards) >= 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    np.testing.assert_allclose(hf_logits(out), peft_logits(tiny_model_dir, run / "adapter"), atol=1e-4)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template == template
    gen = GenerationConfig.from_pretrained(out)
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    assert tok.convert_tokens_to_ids("<|im_end|>") in eos
    assert AutoModelForCausalLM.from_pretrained(out).config.tie_word_embeddings


def test_json_events_and_default_output(tiny_model_dir, tmp_path, capsys):
    from backends.events import parse_line
    from backends.model_store_info import folder_size

    run = make_run(tiny_model_dir, tmp_path / "run")
    assert export(run, "--json", "--dry-run") == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["quant"] == "f32" and not (run / "exports").exists()
    assert export(run, "--json") == 0
    events = [e for e in map(parse_line, capsys.readouterr().out.splitlines()) if e]
    progress = [e for e in events if e["event"] == "export_progress"]
    assert progress and progress[-1]["stage"] == "merge" and progress[-1]["done"] == progress[-1]["total"]
    finished = events[-1]
    assert finished["event"] == "export_finished" and finished["format"] == "merged"
    assert finished["quant"] == "f32"  # the tiny base model's own precision
    assert finished["path"] == str(run / "exports" / "merged-f32")
    assert finished["bytes"] == folder_size(run / "exports" / "merged-f32") > 1_000_000
    assert abs(plan["bytes"] - finished["bytes"]) < 0.1 * finished["bytes"]  # the estimate the app shows


def test_bad_inputs_exit_1_and_write_nothing(tiny_model_dir, tmp_path, capsys, monkeypatch):
    run = make_run(tiny_model_dir, tmp_path / "run")
    # An existing output folder.
    (tmp_path / "taken").mkdir()
    assert export(run, "--out", str(tmp_path / "taken")) == 1
    assert "already exists" in capsys.readouterr().err and not any((tmp_path / "taken").iterdir())
    # Too little disk space: the message states the bytes needed.
    import shutil as sh

    real = sh.disk_usage
    monkeypatch.setattr(sh, "disk_usage", lambda p: real(p)._replace(free=1000))
    assert export(run, "--out", str(tmp_path / "full")) == 1
    err = capsys.readouterr().err
    assert "not enough disk space" in err and "bytes" in err and not (tmp_path / "full").exists()
    monkeypatch.setattr(sh, "disk_usage", real)
    # A precision merged does not take.
    assert export(run, "--quant", "q4_k_m", "--out", str(tmp_path / "q")) == 1
    assert "bf16, f16 or f32" in capsys.readouterr().err
    # A run with no adapter yet.
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "config.yaml").write_text(f"model: {tiny_model_dir}\n")
    assert export(tmp_path / "new") == 1
    assert "no adapter" in capsys.readouterr().err
    # A base model that is gone (its folder deleted, not in the model store).
    gone = tmp_path / "gone-base"
    shutil.copytree(tiny_model_dir, gone)
    meta_file = run / "adapter" / "tunedesk.json"
    meta = json.loads(meta_file.read_text())
    meta["base_model"] = {"name": "gone-base", "path": str(gone)}
    meta_file.write_text(json.dumps(meta))
    shutil.rmtree(gone)
    assert export(run, "--out", str(tmp_path / "x")) == 1
    err = capsys.readouterr().err
    assert "base model 'gone-base' is missing" in err and not (tmp_path / "x").exists()


def test_register_without_ollama_is_refused_before_writing(tiny_model_dir, tmp_path, capsys, monkeypatch):
    run = make_run(tiny_model_dir, tmp_path / "run")
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools-here"))  # no `ollama` on PATH
    out = tmp_path / "ollama-out"
    code = main(["export", str(run), "--format", "ollama", "--register", "mine", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "needs ollama on PATH" in err and "nothing was exported" in err, err
    assert not out.exists()


def test_a_failure_midway_leaves_no_output(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import backends.jobs.export.merged as em

    run = make_run(tiny_model_dir, tmp_path / "run")

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(em, "write_model_files", boom)
    assert export(run, "--out", str(tmp_path / "out" / "merged")) == 130
    assert list((tmp_path / "out").iterdir()) == []  # neither the output nor its temporary folder


def test_json_ends_with_export_failed_on_every_failure(tiny_model_dir, tmp_path, capsys, monkeypatch):
    """With --json a reader always sees an end event: export_failed {kind, message, hint, exit_code}
    on bad input (exit 1), a tool failing midway (exit 3), a crash (exit 3) and a stop (130)."""
    import backends.jobs.export.merged as em
    from backends.errors import RunFailed
    from backends.events import parse_line

    def last_event():
        captured = capsys.readouterr()
        events = [e for e in map(parse_line, captured.out.splitlines()) if e]
        return events[-1], captured.err

    run = make_run(tiny_model_dir, tmp_path / "run")
    (tmp_path / "taken").mkdir()
    assert export(run, "--out", str(tmp_path / "taken"), "--json") == 1
    event, err = last_event()
    assert event["event"] == "export_failed" and event["kind"] == "input" and event["exit_code"] == 1
    assert str(tmp_path / "taken") in event["message"] and "already exists" in event["message"]
    assert event["message"] in err  # the same words on stderr
    assert export(run, "--out", str(tmp_path / "taken"), "--json", "--dry-run") == 1
    assert last_event()[0]["kind"] == "input"

    def fail_with(exc):
        def boom(*args, **kwargs):
            raise exc

        return boom

    for exc, kind, code in [
        (RunFailed("disk", "the disk filled up", "free some space"), "disk", 3),
        (RuntimeError("something broke"), "crash", 3),
        (KeyboardInterrupt(), "stopped", 130),
    ]:
        monkeypatch.setattr(em, "write_model_files", fail_with(exc))
        assert export(run, "--out", str(tmp_path / "out" / kind), "--json") == code
        event, _ = last_event()
        assert (event["event"], event["kind"], event["exit_code"]) == ("export_failed", kind, code)
        assert not (tmp_path / "out" / kind).exists()
    assert event["message"] == "stopped"
