"""Chat's adapter checks and the framework-neutral pieces: every bad adapter path is an error naming
the path and what is wrong; which runs the picker offers; sampling and message validation; the
streaming detokeniser; the memory warning beside an active training run."""

from __future__ import annotations

import json
import os
import socket

import pytest

from backends.chat.adapters import chat_runs, check_base_model, read_adapter
from backends.chat.memory import chat_bytes, memory_warning
from backends.chat.session import Sampling, TextStream, check_messages, with_system
from backends.config import RunConfig, dump_config
from backends.errors import UserInputError
from backends.events import EventSink

PEFT_CONFIG = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]}


def _adapter(folder, base_name="tiny", base_path="/models/tiny", template="TEMPLATE"):
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps(PEFT_CONFIG))
    (folder / "adapter_model.safetensors").write_bytes(b"\0")
    (folder / "tunedesk.json").write_text(
        json.dumps(
            {"base_model": {"name": base_name, "path": base_path}, "backend": "torch", "method": "sft"}
        )
    )
    (folder / "chat_template.jinja").write_text(template)
    return folder


def _run(runs, name, *, final=None, adapter=True, checkpoint=False, lock=False):
    run = runs / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(dump_config(RunConfig(model="tiny")))
    with EventSink(run / "events.jsonl") as sink:
        sink.emit(
            "run_started",
            run_dir=str(run),
            backend="torch",
            device="cpu",
            model="tiny",
            method="sft",
            params_total=1000,
            params_trainable=10,
            max_steps=10,
        )
        if final == "finished":
            sink.emit("run_finished", step=10, adapter=str(run / "adapter"), train_loss=1.0, val_loss=None)
        elif final == "stopped":
            sink.emit("stopped", step=5, checkpoint=str(run / "checkpoints" / "step-5"))
        elif final == "failed":
            sink.emit("run_failed", step=3, kind="nan", message="nan", hint="")
    if adapter:
        _adapter(run / "adapter")
    if checkpoint:
        ck = run / "checkpoints" / "step-5"
        ck.mkdir(parents=True)
        (ck / "adapter_config.json").write_text(json.dumps(PEFT_CONFIG))
        (ck / "adapter_model.safetensors").write_bytes(b"\0")
        (ck / "COMPLETE").write_text("5\n")
    if lock:
        (run / "run.lock").write_text(f"{socket.gethostname()} {os.getpid()}\n")
    return run


def test_missing_adapter_folder_names_the_path(tmp_path):
    missing = tmp_path / "runs" / "no-such-run"
    with pytest.raises(UserInputError) as err:
        read_adapter(missing)
    assert str(missing) in str(err.value) and "not found" in str(err.value)


def test_folder_without_adapter_config_names_the_path(tmp_path):
    folder = tmp_path / "not-an-adapter"
    folder.mkdir()
    (folder / "weights.safetensors").write_bytes(b"\0")
    with pytest.raises(UserInputError) as err:
        read_adapter(folder)
    assert str(folder) in str(err.value) and "adapter_config.json" in str(err.value)


def test_unknown_config_kind_and_missing_weights_are_errors(tmp_path):
    folder = tmp_path / "a"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"something": 1}))
    with pytest.raises(UserInputError, match="neither a PEFT"):
        read_adapter(folder)
    (folder / "adapter_config.json").write_text(json.dumps(PEFT_CONFIG))
    with pytest.raises(UserInputError, match="adapter_model.safetensors") as err:
        read_adapter(folder)
    assert str(folder) in str(err.value)
    (folder / "adapter_config.json").write_text("{not json")
    with pytest.raises(UserInputError, match="not valid JSON"):
        read_adapter(folder)


def test_run_folder_resolves_to_its_adapter_and_template(tmp_path):
    run = _run(tmp_path / "runs", "r1", final="finished")
    info = read_adapter(run)
    assert info.path == run / "adapter" and info.run_dir == run and info.format == "peft"
    assert info.chat_template == "TEMPLATE" and info.base_model == {"name": "tiny", "path": "/models/tiny"}
    assert read_adapter(run / "adapter").run_dir == run


def test_run_without_adapter_says_its_status(tmp_path):
    run = _run(tmp_path / "runs", "r1", final="failed", adapter=False)
    with pytest.raises(UserInputError) as err:
        read_adapter(run)
    assert str(run) in str(err.value) and "status: failed" in str(err.value)


def test_stopped_run_uses_its_last_checkpoint_with_the_runs_template_choice(tmp_path):
    run = _run(tmp_path / "runs", "r1", final="stopped", adapter=False, checkpoint=True)
    info = read_adapter(run)
    assert info.path == run / "checkpoints" / "step-5" and info.run_dir == run
    assert info.chat_template is None and info.meta["template_choice"] == "model"
    assert info.base_model == {"name": "tiny", "path": None}
    assert info.name == "r1 (step-5)"


def test_adapter_of_another_base_model_is_refused(tmp_path):
    info = read_adapter(_adapter(tmp_path / "a", base_name="SmolLM2-135M-Instruct", base_path="/m/SmolLM2"))
    other = tmp_path / "models" / "Qwen2-0.5B"
    with pytest.raises(UserInputError) as err:
        check_base_model(info, other, "Qwen2-0.5B")
    msg = str(err.value)
    assert str(info.path) in msg and "SmolLM2-135M-Instruct" in msg and "Qwen2-0.5B" in msg
    # The same model by name (store) or by its folder passes.
    check_base_model(info, tmp_path / "models" / "SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct")
    (tmp_path / "m" / "SmolLM2").mkdir(parents=True)
    info2 = read_adapter(_adapter(tmp_path / "b", base_name="x", base_path=str(tmp_path / "m" / "SmolLM2")))
    check_base_model(info2, tmp_path / "m" / "SmolLM2", "some-name")


def test_peft_base_model_name_is_used_without_tunedesk_json(tmp_path):
    folder = tmp_path / "a"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(
        json.dumps({**PEFT_CONFIG, "base_model_name_or_path": "/x/Llama-3"})
    )
    (folder / "adapter_model.safetensors").write_bytes(b"\0")
    info = read_adapter(folder)
    assert info.base_model == {"name": "Llama-3", "path": "/x/Llama-3"} and info.chat_template is None
    with pytest.raises(UserInputError, match="Llama-3"):
        check_base_model(info, tmp_path / "SmolLM2", "SmolLM2")


def test_chat_runs_lists_finished_and_stopped_runs_only(tmp_path):
    runs = tmp_path / "runs"
    _run(runs, "done", final="finished")
    _run(runs, "paused", final="stopped", adapter=False, checkpoint=True)
    _run(runs, "broken", final="failed", adapter=False, checkpoint=True)
    _run(runs, "live", adapter=False, checkpoint=True, lock=True)
    _run(runs, "stopped-early", final="stopped", adapter=False)  # no checkpoint: nothing to load
    rows = {r["name"]: r for r in chat_runs(runs)}
    assert set(rows) == {"done", "paused"}
    assert rows["done"]["adapter"] == str(runs / "done" / "adapter")
    assert rows["done"]["base_model"] == "tiny" and rows["done"]["base_model_path"] == "/models/tiny"
    assert rows["paused"]["adapter"] == str(runs / "paused" / "checkpoints" / "step-5")


def test_sampling_and_messages_are_validated():
    assert Sampling.from_dict({"temperature": 0.7, "max_new_tokens": 12}) == Sampling(
        temperature=0.7, max_new_tokens=12
    )
    for bad, field in (
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": 2.5}, "max_new_tokens"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"seed": "x"}, "seed"),
    ):
        with pytest.raises(UserInputError) as err:
            Sampling.from_dict(bad)
        assert err.value.field == field
    with pytest.raises(UserInputError, match=r"messages\[1\].role"):
        check_messages([{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}])
    with pytest.raises(UserInputError, match="last message"):
        check_messages([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
    with pytest.raises(UserInputError, match="non-empty"):
        check_messages([])
    msgs = [{"role": "system", "content": "old"}, {"role": "user", "content": "hi"}]
    assert with_system(msgs, "new") == [
        {"role": "system", "content": "new"},
        {"role": "user", "content": "hi"},
    ]
    assert with_system(msgs, None) == msgs


def test_text_stream_pieces_add_up_to_the_decoded_text(smollm2_tokenizer):
    text = "Grüße! 東京 is big 🎉🎉.\nNew line ✓ and café\n\nend"
    ids = smollm2_tokenizer(text, add_special_tokens=False)["input_ids"]
    stream = TextStream(smollm2_tokenizer)
    pieces = [stream.add(i) for i in ids] + [stream.flush()]
    assert "".join(pieces) == smollm2_tokenizer.decode(ids, skip_special_tokens=True) == text
    # A multi-byte character split over byte tokens is held back, never shown half.
    assert not any("\ufffd" in p for p in pieces)
    assert sum(1 for p in pieces if p) > 10  # it really streamed


def test_memory_warning_only_when_a_run_is_active_and_memory_is_short(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    header = json.dumps(
        {"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4_000_000]}}
    ).encode()
    (model / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    need = chat_bytes(model, "cpu")
    assert need == int(1_000_000 * 4 * 1.2)
    assert chat_bytes(model, "cuda") == int(1_000_000 * 2 * 1.2)
    runs = tmp_path / "runs"
    _run(runs, "done", final="finished")
    assert memory_warning(model, "cpu", runs, free=1) is None  # nothing is training
    _run(runs, "live", adapter=False, lock=True)
    msg = memory_warning(model, "cpu", runs, free=need // 2)
    assert msg and "live" in msg and "training" in msg
    # The live run has not reported a step yet: its 1000 parameters (fp32) are reserved too.
    assert memory_warning(model, "cpu", runs, free=need + 4000) is None
    assert memory_warning(model, "cpu", runs, free=need + 3999) is not None
