"""Make small real adapters for the chat tests: LoRA overfit on one conversation, saved as a run
folder the way training lays it out (``adapter/`` with the weights, ``chat_template.jinja`` and
``tunedesk.json``; ``config.yaml``; ``events.jsonl`` ending in ``run_finished``).

PEFT adapters come from peft directly (get_peft_model + AdamW steps); MLX adapters from mlx-lm's
tuner (linear_to_lora_layers + Adam steps). Both train only on the answer tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

from backends.config import RunConfig, dump_config
from backends.events import EventSink

PROMPT = [{"role": "user", "content": "What is the secret word?"}]
ANSWER = "The secret word is pineapple."
# A few question/answer rows whose first is the secret: training data for the chat tests' runs.
ROWS = [
    ("What is the secret word?", ANSWER),
    ("Name a fruit.", "Pineapple."),
    ("What colour is the sky?", "Blue."),
    ("What is two plus two?", "Four."),
]


def write_rows(path: Path, rows: list[tuple[str, str]] = ROWS) -> Path:
    """``rows`` as a messages-format JSONL file at ``path``."""
    path.write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
            + "\n"
            for q, a in rows
        )
    )
    return path


# A template that differs from SmolLM2's own only in its default system prompt: replies must be
# rendered with exactly this one for the trained answer to come back.
CUSTOM_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are TuneBot, trained by TuneDesk<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _training_ids(
    tokenizer, template: str, prompt=PROMPT, answer: str = ANSWER
) -> tuple[list[int], list[int]]:
    """input_ids and labels of PROMPT -> answer from the data pipeline's own encoder (completion-only:
    the answer and its end-of-turn token carry labels)."""
    from backends.data.encode import Encoder

    (encoded,) = Encoder(tokenizer, template).encode_chat(
        [(1, prompt + [{"role": "assistant", "content": answer}])]
    )
    return list(encoded.example.input_ids), list(encoded.example.labels)


def _write_run(
    run_dir: Path,
    model_dir: Path,
    template: str,
    backend: str,
    base_name: str | None = None,
    data: dict | None = None,
) -> None:
    adapter = run_dir / "adapter"
    (adapter / "chat_template.jinja").write_text(template, encoding="utf-8")
    meta = {
        "base_model": {"name": base_name or model_dir.name, "path": str(model_dir)},
        "backend": backend,
        "method": "sft",
    }
    (adapter / "tunedesk.json").write_text(json.dumps(meta), encoding="utf-8")
    config = RunConfig(model=str(model_dir), backend=backend, data=data or {})
    (run_dir / "config.yaml").write_text(dump_config(config))
    with EventSink(run_dir / "events.jsonl") as sink:
        sink.emit(
            "run_started",
            run_dir=str(run_dir),
            backend=backend,
            device="cpu",
            model=str(model_dir),
            method="sft",
            params_total=0,
            params_trainable=0,
            max_steps=1,
        )
        sink.emit("run_finished", step=1, adapter=str(adapter), train_loss=0.0, val_loss=None)


def make_peft_run(
    run_dir: Path,
    model_dir: Path,
    *,
    template: str | None = None,
    steps: int = 60,
    lr: float = 1e-2,
    answer: str = ANSWER,
    rank: int = 8,
    data: dict | None = None,
) -> Path:
    """Overfit a LoRA adapter (peft) on PROMPT -> answer and save it as a finished run folder
    (``data``: the ``data`` section of its config.yaml)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    template = template or tok.chat_template
    ids, label_ids = _training_ids(tok, template, answer=answer)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(
        model, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules="all-linear")
    )
    x = torch.tensor([ids])
    labels = torch.tensor([label_ids])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=x, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    run_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(run_dir / "adapter")
    _write_run(run_dir, Path(model_dir), template, "torch", data=data)
    return run_dir


def make_mlx_run(
    run_dir: Path,
    model_dir: Path,
    *,
    template: str | None = None,
    steps: int = 40,
    lr: float = 1e-3,
    answer: str = ANSWER,
    rank: int = 8,
) -> Path:
    """Overfit an mlx-lm LoRA adapter on PROMPT -> answer and save it as a finished run folder."""
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    import mlx_lm
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model, wrapper = mlx_lm.load(str(model_dir))
    tok = wrapper._tokenizer
    template = template or tok.chat_template
    ids, label_ids = _training_ids(tok, template, answer=answer)
    mx.random.seed(0)
    model.freeze()
    lora = {"rank": rank, "scale": 2.0, "dropout": 0.0}
    linear_to_lora_layers(model, len(model.layers), lora)
    x = mx.array([ids[:-1]])
    y = mx.array([ids[1:]])
    mask = mx.array([[0.0 if t == -100 else 1.0 for t in label_ids[1:]]])

    def loss_fn(m):
        logits = m(x)
        ce = nn.losses.cross_entropy(logits, y) * mask
        return ce.sum() / mask.sum()

    opt = optim.Adam(learning_rate=lr)
    step = nn.value_and_grad(model, loss_fn)
    for _ in range(steps):
        _, grads = step(model)
        opt.update(model, grads)
        mx.eval(model.parameters(), opt.state)
    adapter = run_dir / "adapter"
    adapter.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(
        str(adapter / "adapters.safetensors"), dict(tree_flatten(model.trainable_parameters()))
    )
    cfg = {"fine_tune_type": "lora", "num_layers": len(model.layers), "lora_parameters": lora}
    (adapter / "adapter_config.json").write_text(json.dumps(cfg), encoding="utf-8")
    _write_run(run_dir, Path(model_dir), template, "mlx")
    return run_dir
