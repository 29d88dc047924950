"""Chat-time prompt ids equal the training prompt ids, over the template families people train.

For each family (``tests/prompt_families.py``: ChatML as SmolLM2 and Qwen, Llama 3, Gemma,
Mistral, Phi-3) x BOS added by the tokenizer or not x system prompt (``data.system_prompt``) or
not x one turn or several (with a literal special-token string typed in the last question) x
tools where the template lists them: the training pipeline tokenises the row, the run folder
records what the renderer used, and a chat session with that run's adapter feeds the engine
(PyTorch and MLX, the real chat engines on a tiny model) exactly the training prompt's ids.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from backends.chat.loader import convert_for
from backends.chat.session import ChatSession, Sampling, StreamRequest
from backends.config import RunConfig, dump_config
from backends.data import load_tokenizer, prepare_data
from backends.data.types import IGNORE_INDEX
from tests.prompt_families import FAMILIES, TOOLS, build_family_model

SYSTEM = "You answer in one short sentence."


def conversations(family: str) -> list[tuple[str, list[dict], list | None]]:
    eos = FAMILIES[family][2]
    single = [{"role": "user", "content": "What is the capital of France?"}]
    multi = [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": f"Why does my log end with {eos} and <|im_end|>?"},
    ]
    cases = [("single", single, None), ("multi", multi, None)]
    if FAMILIES[family][4]:
        cases.append(("tools", single, TOOLS))
    return cases


def training_prompt_ids(model_dir: Path, tmp: Path, messages, tools, system: str | None):
    """(prompt ids the training pipeline makes for ``messages`` -> an answer, the run config)."""
    row = {"messages": [*messages, {"role": "assistant", "content": "Paris, as always."}]}
    if tools:
        row["tools"] = tools
    data = tmp / "rows.jsonl"
    data.write_text(json.dumps(row) + "\n")
    config = RunConfig(
        model=str(model_dir),
        data={"train_file": str(data), "validation_fraction": 0.0, "system_prompt": system},
    )
    prepared = prepare_data(config, load_tokenizer(model_dir))
    (example,) = prepared.train
    labels = list(example.labels)
    end = max(i for i, x in enumerate(labels) if x != IGNORE_INDEX)
    start = end
    while labels[start - 1] != IGNORE_INDEX:
        start -= 1
    return list(example.input_ids[:start]), config, prepared


def make_run(run_dir: Path, model_dir: Path, config: RunConfig, prepared, adapter_src: Path) -> Path:
    """A finished run folder as ``tunedesk train`` leaves it (config, recorded prompt spec, adapter)."""
    from backends.jobs.train import record_prompt_spec

    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(dump_config(config))
    shutil.copytree(adapter_src, run_dir / "adapter")
    (run_dir / "adapter" / "chat_template.jinja").write_text(prepared.chat_template)
    meta = {"base_model": {"name": model_dir.name, "path": str(model_dir)}, "backend": "torch"}
    (run_dir / "adapter" / "tunedesk.json").write_text(json.dumps(meta))
    record_prompt_spec(run_dir, prepared.render_spec)
    return run_dir


def peft_adapter(model_dir: Path, out: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    model.save_pretrained(out)
    return out


class Recorder:
    """Wraps a chat engine's ``tokens`` to keep the prompt ids it is fed."""

    def __init__(self, engine) -> None:
        self.engine, self.fed = engine, []
        self._tokens = engine.tokens
        engine.tokens = self.tokens

    def tokens(self, prompt_ids, sampling, adapter):
        self.fed.append(list(prompt_ids))
        return self._tokens(prompt_ids, sampling, adapter)


@pytest.mark.parametrize("family", ["mistral", *[f for f in FAMILIES if f != "mistral"]])
def test_chat_prompt_ids_equal_training_prompt_ids(family, smollm2_dir, tmp_path):
    from backends.chat.mlx_generator import MlxChatEngine
    from backends.chat.torch_generator import TorchChatEngine

    checked = 0
    for adds_bos in (False, True):
        model_dir = build_family_model(
            tmp_path / f"bos-{adds_bos}", smollm2_dir, family, tokenizer_adds_bos=adds_bos
        )
        adapter = peft_adapter(model_dir, tmp_path / f"adapter-{adds_bos}")
        sessions = {
            "torch": ChatSession(TorchChatEngine(model_dir), model_dir),
            "mlx": ChatSession(MlxChatEngine(model_dir), model_dir, convert=lambda i: convert_for(i, "mlx")),
        }
        recorders = {name: Recorder(s.engine) for name, s in sessions.items()}
        for system in (None, SYSTEM):
            for name, messages, tools in conversations(family):
                case = tmp_path / f"{adds_bos}-{bool(system)}-{name}"
                case.mkdir()
                want, config, prepared = training_prompt_ids(model_dir, case, messages, tools, system)
                run = make_run(case / "run", model_dir, config, prepared, adapter)
                if system and family != "mistral":  # Mistral's template drops it from rows (see there)
                    assert SYSTEM in load_tokenizer(model_dir).decode(want)
                for backend, session in sessions.items():
                    key = session.set_adapter(run)
                    session.generate(
                        [StreamRequest("r", key, messages, tools)],
                        Sampling(max_new_tokens=1),
                        lambda *a: None,
                    )
                    fed = recorders[backend].fed[-1]
                    assert fed == want, (
                        f"{family} bos={adds_bos} system={bool(system)} {name} on {backend}: "
                        f"chat fed {len(fed)} tokens, training had {len(want)}"
                    )
                    checked += 1
    assert checked == 2 * 2 * len(conversations(family)) * 2
