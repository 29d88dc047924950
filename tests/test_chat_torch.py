"""Chat on the PyTorch backend with the tiny Llama and LoRA adapters overfit with peft: the adapter
changes the greedy reply to the trained answer, the stored template is the one used, replies
match transformers' own ``generate``, side-by-side streaming changes nothing, adapters switch
without reloading the base, a misfit adapter is refused, and Stop ends a reply at once."""

from __future__ import annotations

import hashlib
import shutil
import threading
import time

import pytest
import torch

from backends.chat.loader import open_session
from backends.chat.session import ChatSession, Sampling, StreamRequest, render_prompt
from backends.chat.torch_generator import TorchChatEngine
from backends.data.encode import Encoder
from backends.data.types import IGNORE_INDEX
from backends.errors import UserInputError
from tests.chat_adapters import ANSWER, CUSTOM_TEMPLATE, PROMPT, make_mlx_run, make_peft_run
from tests.tiny_model import make_tiny_llama

OTHER_ANSWER = "The secret word is banana."


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    """Two finished runs on the tiny model: 'pineapple' with a custom template, 'banana' with the
    model's own."""
    base = tmp_path_factory.mktemp("chat-runs")
    return {
        "pineapple": make_peft_run(base / "pineapple", tiny_model_dir, template=CUSTOM_TEMPLATE),
        "banana": make_peft_run(base / "banana", tiny_model_dir, answer=OTHER_ANSWER),
    }


@pytest.fixture(scope="module")
def session(tiny_model_dir):
    return ChatSession(TorchChatEngine(tiny_model_dir, "cpu"), tiny_model_dir)


def answer_ids(tokenizer, answer=ANSWER):
    return tokenizer(answer, add_special_tokens=False)["input_ids"]


def reply(session, adapter, n, messages=PROMPT, **sampling):
    (r,) = session.generate(
        [StreamRequest("r", adapter, messages)], Sampling(max_new_tokens=n, **sampling), _drop
    )
    return r


def _drop(event, fields):
    pass


def test_adapter_reply_is_the_trained_answer_and_differs_from_base(session, runs):
    tok = session.engine.tokenizer
    n = len(answer_ids(tok))
    tuned = reply(session, str(runs["pineapple"]), n)
    base = reply(session, None, n)
    assert tuned.text == ANSWER and tuned.finish_reason == "length" and tuned.tokens == n
    assert base.text != tuned.text and "pineapple" not in base.text
    assert tuned.adapter == str(runs["pineapple"]) and base.adapter is None


def test_chat_prompt_is_exactly_the_training_prompt_of_the_stored_template(session, runs):
    """The prompt tokens chat feeds the model equal the data pipeline's training tokens up to the
    first trained token, rendered with the template stored next to the adapter (not the model's)."""
    tok = session.engine.tokenizer
    key = session.load_adapter(runs["pineapple"])
    stored = (runs["pineapple"] / "adapter" / "chat_template.jinja").read_text()
    assert stored == CUSTOM_TEMPLATE and session.template_for(key) == stored
    (enc,) = Encoder(tok, stored).encode_chat([(1, PROMPT + [{"role": "assistant", "content": ANSWER}])])
    first = next(i for i, label in enumerate(enc.example.labels) if label != IGNORE_INDEX)
    chat_ids = render_prompt(tok, PROMPT, session.template_for(key))
    assert chat_ids == enc.example.input_ids[:first]
    assert "TuneBot" in tok.decode(chat_ids)
    # The base model keeps its own template: a different prompt.
    assert render_prompt(tok, PROMPT, session.template_for(None)) != chat_ids
    events = []
    session.generate(
        [StreamRequest("r", key, PROMPT)], Sampling(max_new_tokens=2), lambda e, f: events.append(f)
    )
    assert events[-1]["template_sha256"] == hashlib.sha256(stored.encode()).hexdigest()
    assert events[-1]["prompt_tokens"] == len(chat_ids)


def test_greedy_reply_equals_transformers_generate(session, runs, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    tok = session.engine.tokenizer
    for adapter in (None, runs["banana"]):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        if adapter is not None:
            model = PeftModel.from_pretrained(model, adapter / "adapter")
        ids = render_prompt(tok, PROMPT, tok.chat_template)
        out = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, min_new_tokens=12)
        expected = tok.decode(out[0, len(ids) :], skip_special_tokens=True)
        got = reply(session, str(adapter) if adapter else None, 12)
        assert got.text == expected, adapter


def test_side_by_side_streams_interleave_and_equal_single_replies(session, runs):
    single = {
        "base": reply(session, None, 10).text,
        "tuned": reply(session, str(runs["pineapple"]), 10).text,
    }
    events = []
    replies = session.generate(
        [StreamRequest("base", None, PROMPT), StreamRequest("tuned", str(runs["pineapple"]), PROMPT)],
        Sampling(max_new_tokens=10),
        lambda e, f: events.append((e, f)),
    )
    assert {r.stream: r.text for r in replies} == single
    order = [f["stream"] for e, f in events if e == "token"]
    # Both stream together: the first tokens alternate instead of one reply after the other.
    assert order[:4] in (["base", "tuned"] * 2, ["tuned", "base"] * 2)
    for r in replies:
        assert "".join(f["text"] for e, f in events if e == "token" and f["stream"] == r.stream) == r.text


def test_switching_adapters_keeps_the_base_model_loaded(tiny_model_dir, runs):
    engine = TorchChatEngine(tiny_model_dir, "cpu")
    session = ChatSession(engine, tiny_model_dir)
    base_weight = engine.base.model.layers[0].self_attn.q_proj.weight
    n = len(answer_ids(engine.tokenizer))
    session.set_adapter(runs["pineapple"])
    assert reply(session, session.default_adapter, n).text == ANSWER
    session.set_adapter(runs["banana"])
    assert len(session.adapters) == 1  # the old one was unloaded
    assert reply(session, session.default_adapter, n).text == OTHER_ANSWER
    session.set_adapter(None)
    base_text = reply(session, None, n).text
    assert base_text not in (ANSWER, OTHER_ANSWER)
    # Same base weights all along (never reloaded, never merged into).
    q_proj = engine.model.get_submodule("model.layers.0.self_attn.q_proj")
    assert q_proj.weight is base_weight or q_proj.base_layer.weight is base_weight
    assert torch.equal(base_weight, engine.base.model.layers[0].self_attn.q_proj.weight)


def test_sampling_settings(session, runs):
    greedy = reply(session, None, 15).text
    a = reply(session, None, 15, temperature=1.0, seed=7)
    assert reply(session, None, 15, temperature=1.0, seed=7).text == a.text  # same seed, same reply
    samples = {reply(session, None, 15, temperature=1.0, seed=s).text for s in range(4)}
    assert len(samples) > 1 and greedy not in samples
    # The base model repeats "\n" greedily; a repetition penalty makes it write other tokens.
    tok = session.engine.tokenizer
    plain = tok(greedy, add_special_tokens=False)["input_ids"]
    penalised = tok(reply(session, None, 15, repetition_penalty=3.0).text, add_special_tokens=False)[
        "input_ids"
    ]
    assert len(set(penalised)) > len(set(plain))


def test_system_prompt_and_history_reach_the_template(session):
    tok = session.engine.tokenizer
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
    ]
    text = tok.decode(render_prompt(tok, messages, tok.chat_template))
    assert text.index("Be brief.") < text.index("Hi") < text.index("Hello!") < text.index("Bye")
    assert text.endswith("<|im_start|>assistant\n") and "SmolLM" not in text


def test_adapter_for_another_model_is_refused_by_shape(tmp_path, tiny_model_dir, runs, smollm2_dir):
    # A different tiny model (hidden 32) that shares the name recorded in tunedesk.json: the
    # name check passes, the weight-shape check must catch it.
    other = make_tiny_llama(tmp_path / tiny_model_dir.name, smollm2_dir, hidden=32)
    session = ChatSession(TorchChatEngine(other, "cpu"), other)
    with pytest.raises(UserInputError) as err:
        session.set_adapter(runs["banana"])
    assert str(runs["banana"] / "adapter") in str(err.value) and "different base model" in str(err.value)
    assert session.adapters == {} and session.engine.model is session.engine.base


def test_open_session_errors_name_the_path_before_loading(tmp_path, runs, smollm2_dir):
    missing = tmp_path / "nope"
    with pytest.raises(UserInputError, match=str(missing)):
        open_session(adapter=missing, backend="torch")
    broken = tmp_path / "broken"
    shutil.copytree(runs["banana"], broken)
    (broken / "adapter" / "adapter_config.json").unlink()
    with pytest.raises(UserInputError) as err:
        open_session(adapter=broken, backend="torch")
    assert str(broken / "adapter") in str(err.value) and "adapter_config.json" in str(err.value)
    with pytest.raises(UserInputError) as err:
        open_session(model=str(smollm2_dir), adapter=runs["banana"], backend="torch")
    assert "trained on base model" in str(err.value) and str(runs["banana"] / "adapter") in str(err.value)


def test_open_session_uses_the_adapters_base_model(runs, tiny_model_dir):
    said: list[str] = []
    session = open_session(adapter=runs["pineapple"], backend="torch", say=lambda level, m: said.append(m))
    assert session.model_dir == tiny_model_dir and session.default_adapter is not None
    assert f"adapter pineapple: {runs['pineapple'] / 'adapter'}" in said  # says which weights answer
    n = len(answer_ids(session.engine.tokenizer))
    assert reply(session, session.default_adapter, n).text == ANSWER


def test_mlx_adapter_is_converted_for_torch(tmp_path, tiny_model_dir):
    run = make_mlx_run(tmp_path / "mlx-run", tiny_model_dir, template=CUSTOM_TEMPLATE, steps=15)
    session = open_session(adapter=run, backend="torch")
    info = session.adapters[session.default_adapter]
    assert info.format == "peft" and info.run_dir == run and info.chat_template == CUSTOM_TEMPLATE
    n = len(answer_ids(session.engine.tokenizer))
    tuned = reply(session, session.default_adapter, n)
    assert tuned.text != reply(session, None, n).text


def test_stop_ends_a_long_reply_at_once(session):
    tokens = []
    result = {}

    def run():
        result["reply"] = reply_streaming()

    def reply_streaming():
        (r,) = session.generate(
            [StreamRequest("r", None, PROMPT)],
            Sampling(max_new_tokens=100_000),
            lambda e, f: tokens.append(time.perf_counter()) if e == "token" else None,
        )
        return r

    thread = threading.Thread(target=run)
    thread.start()
    while len(tokens) < 5:
        time.sleep(0.005)
    t0 = time.perf_counter()
    session.request_stop()
    thread.join(10)
    latency = time.perf_counter() - t0
    assert not thread.is_alive()
    assert result["reply"].finish_reason == "stop" and result["reply"].tokens < 100_000
    assert latency < 1.0, f"stop took {latency:.3f} s"


def test_open_session_warns_when_a_training_run_is_active_and_memory_is_short(
    tmp_path, runs, tiny_model_dir, monkeypatch
):
    import os
    import socket

    import backends.chat.memory as memory

    live = tmp_path / "runs" / "training-now"
    live.mkdir(parents=True)
    (live / "config.yaml").write_text("model: x\n")
    (live / "run.lock").write_text(f"{socket.gethostname()} {os.getpid()}\n")
    said = []
    monkeypatch.setattr(memory, "free_memory", lambda device, gpus=None: 10_000)
    session = open_session(
        adapter=runs["banana"], backend="torch", runs_dir=tmp_path / "runs", say=lambda *a: said.append(a)
    )
    warnings = [m for level, m in said if level == "warning"]
    assert len(warnings) == 1 and "training-now" in warnings[0] and "may not fit" in warnings[0]
    assert session.default_adapter is not None  # a warning, not a refusal
    said.clear()
    monkeypatch.setattr(memory, "free_memory", lambda device, gpus=None: 10**13)
    open_session(
        adapter=runs["banana"], backend="torch", runs_dir=tmp_path / "runs", say=lambda *a: said.append(a)
    )
    assert not [m for level, m in said if level == "warning"]
