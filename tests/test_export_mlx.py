"""`tunedesk export RUN_DIR --format mlx`: the fused folder opens in mlx_lm.load and gives the logits
of base + adapter in mlx-lm, from a PyTorch (PEFT) run and from an MLX run, with the run's chat
template and the end-of-turn token in its generation config."""

from __future__ import annotations

import json

import numpy as np
import pytest

from backends.cli import main
from tests.export_runs import PROMPT_IDS, make_run, peft_logits


@pytest.mark.parametrize(
    "backend,use_dora", [("torch", False), ("mlx", True)], ids=["torch-lora", "mlx-dora"]
)
def test_fused_mlx_folder_answers_like_base_plus_adapter(tiny_model_dir, tmp_path, backend, use_dora):
    mx = pytest.importorskip("mlx.core")
    from mlx_lm import generate, load

    run = make_run(tiny_model_dir, tmp_path / "run", backend=backend, use_dora=use_dora)
    assert main(["export", str(run), "--format", "mlx", "--out", str(tmp_path / "mlx")]) == 0
    fused, tokenizer = load(str(tmp_path / "mlx"))
    got = np.array(fused(mx.array(PROMPT_IDS)))
    if backend == "torch":
        want = peft_logits(tiny_model_dir, run / "adapter")
    else:
        model, _ = load(str(tiny_model_dir), adapter_path=str(run / "adapter"))
        want = np.array(model(mx.array(PROMPT_IDS)))
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert generate(fused, tokenizer, prompt="Hello", max_tokens=3)  # mlx_lm.generate runs on it
    assert (tmp_path / "mlx" / "chat_template.jinja").read_text() == (
        run / "adapter" / "chat_template.jinja"
    ).read_text()
    gen = json.loads((tmp_path / "mlx" / "generation_config.json").read_text())
    eos = gen["eos_token_id"] if isinstance(gen["eos_token_id"], list) else [gen["eos_token_id"]]
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in eos
