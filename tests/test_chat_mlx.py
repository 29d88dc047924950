"""Chat on the MLX backend (mlx[cpu] here) with the tiny Llama and mlx-lm LoRA adapters: the trained
answer comes back greedily with the adapter and not without, replies equal ``mlx_lm.generate``'s,
the stored template is used, base and tuned stream side by side from one model, adapters switch
without reloading the base, a misfit adapter is refused, and Stop ends a reply at once."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest

pytest.importorskip("mlx_lm")

from backends.chat.mlx_generator import MlxChatEngine  # noqa: E402
from backends.chat.session import ChatSession, Sampling, StreamRequest, render_prompt  # noqa: E402
from backends.errors import UserInputError  # noqa: E402
from tests.chat_adapters import ANSWER, CUSTOM_TEMPLATE, PROMPT, make_mlx_run  # noqa: E402
from tests.tiny_model import make_tiny_llama  # noqa: E402

OTHER_ANSWER = "The secret word is banana."


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    base = tmp_path_factory.mktemp("mlx-chat-runs")
    return {
        "pineapple": make_mlx_run(base / "pineapple", tiny_model_dir, template=CUSTOM_TEMPLATE),
        "banana": make_mlx_run(base / "banana", tiny_model_dir, answer=OTHER_ANSWER),
    }


@pytest.fixture(scope="module")
def session(tiny_model_dir):
    return ChatSession(MlxChatEngine(tiny_model_dir), tiny_model_dir)


def n_answer(session, answer=ANSWER):
    return len(session.engine.tokenizer(answer, add_special_tokens=False)["input_ids"])


def reply(session, adapter, n, messages=PROMPT, events=None, **sampling):
    sink = (lambda e, f: events.append((e, f))) if events is not None else (lambda e, f: None)
    (r,) = session.generate(
        [StreamRequest("r", adapter, messages)], Sampling(max_new_tokens=n, **sampling), sink
    )
    return r


def test_trained_answer_with_adapter_only_and_stored_template(session, runs):
    n = n_answer(session)
    events = []
    tuned = reply(session, str(runs["pineapple"]), n, events=events)
    base = reply(session, None, n)
    assert tuned.text == ANSWER
    assert base.text != ANSWER and "pineapple" not in base.text
    stored = (runs["pineapple"] / "adapter" / "chat_template.jinja").read_text()
    assert tuned.template_sha256 == hashlib.sha256(stored.encode()).hexdigest()
    tok = session.engine.tokenizer
    assert tuned.prompt_tokens == len(render_prompt(tok, PROMPT, stored))
    assert "".join(f["text"] for e, f in events if e == "token") == ANSWER


def test_replies_equal_mlx_lm_generate(session, runs, tiny_model_dir):
    import mlx_lm

    tok = session.engine.tokenizer
    for adapter, template in ((None, tok.chat_template), (runs["banana"], tok.chat_template)):
        model, wrapper = mlx_lm.load(
            str(tiny_model_dir), adapter_path=str(adapter / "adapter") if adapter else None
        )
        ids = render_prompt(tok, PROMPT, template)
        expected = mlx_lm.generate(model, wrapper, ids, max_tokens=12)
        got = reply(session, str(adapter) if adapter else None, 12).text
        assert got == expected, adapter


def test_side_by_side_equals_single_replies(session, runs):
    single = {"base": reply(session, None, 8).text, "tuned": reply(session, str(runs["pineapple"]), 8).text}
    events = []
    replies = session.generate(
        [StreamRequest("base", None, PROMPT), StreamRequest("tuned", str(runs["pineapple"]), PROMPT)],
        Sampling(max_new_tokens=8),
        lambda e, f: events.append((e, f)),
    )
    assert {r.stream: r.text for r in replies} == single
    order = [f["stream"] for e, f in events if e == "token"]
    assert order[:4] in (["base", "tuned"] * 2, ["tuned", "base"] * 2)


def test_switching_adapters_without_reloading_the_base(tiny_model_dir, runs):
    engine = MlxChatEngine(tiny_model_dir)
    session = ChatSession(engine, tiny_model_dir)
    q_proj = engine.model.layers[0].self_attn.q_proj
    n = n_answer(session)
    session.set_adapter(runs["pineapple"])
    assert reply(session, session.default_adapter, n).text == ANSWER
    session.set_adapter(runs["banana"])
    assert len(session.adapters) == 1
    assert reply(session, session.default_adapter, n).text == OTHER_ANSWER
    session.set_adapter(None)
    assert reply(session, None, n).text not in (ANSWER, OTHER_ANSWER)
    # The base layer object is the very one loaded at the start (swapped back in, never fused).
    assert engine.model.layers[0].self_attn.q_proj is q_proj


def test_misfit_adapter_is_refused_naming_the_path(tmp_path, tiny_model_dir, smollm2_dir, runs):
    other = make_tiny_llama(tmp_path / tiny_model_dir.name, smollm2_dir, hidden=32)
    session = ChatSession(MlxChatEngine(other), other)
    with pytest.raises(UserInputError) as err:
        session.set_adapter(runs["banana"])
    assert str(runs["banana"] / "adapter") in str(err.value)
    assert session.adapters == {}
    assert "lora_a" not in session.engine.model.layers[0].self_attn.q_proj  # no half-applied layers


def test_stop_ends_a_long_reply_at_once(session):
    stamps, result = [], {}

    def run():
        (result["reply"],) = session.generate(
            [StreamRequest("r", None, PROMPT)],
            Sampling(max_new_tokens=100_000),
            lambda e, f: stamps.append(time.perf_counter()) if e == "token" else None,
        )

    thread = threading.Thread(target=run)
    thread.start()
    while len(stamps) < 5:
        time.sleep(0.005)
    t0 = time.perf_counter()
    session.request_stop()
    thread.join(10)
    latency = time.perf_counter() - t0
    assert not thread.is_alive() and result["reply"].finish_reason == "stop"
    assert latency < 1.0, f"stop took {latency:.3f} s"


def test_peft_adapter_is_converted_for_mlx(tmp_path, tiny_model_dir):
    from backends.chat.loader import open_session
    from tests.chat_adapters import make_peft_run

    run = make_peft_run(tmp_path / "peft-run", tiny_model_dir, template=CUSTOM_TEMPLATE)
    session = open_session(adapter=run, backend="mlx")
    info = session.adapters[session.default_adapter]
    assert session.engine.name == "mlx" and info.format == "mlx" and info.run_dir == run
    assert reply(session, session.default_adapter, n_answer(session)).text == ANSWER
