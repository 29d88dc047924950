"""Completion-only labels, end-of-turn, BOS, EOS, truncation and preference tokenisation.

Expected masks are computed independently of the code under test: from hand-written rendered
strings and the tokenizer's own character offsets of the jointly tokenised text, or from
transformers' ``apply_chat_template``. Tests on the real SmolLM2 tokenizer are marked slow (the
fixture imports the model once per session); toy tokenizers built here cover a tokenizer that
adds BOS and a SentencePiece-style one, in milliseconds.
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache

import numpy as np
import pytest

from backends.config import RunConfig
from backends.data import (
    CHATML_TEMPLATE,
    IGNORE_INDEX,
    make_batches,
    prepare_data,
    resolve_chat_template,
)
from backends.data.encode import Encoder
from backends.data.formats import Preference
from backends.errors import UserInputError

IM_START, IM_END = "<|im_start|>", "<|im_end|>"


def config_for(path, method="sft", **data):
    data = {"train_file": str(path), "validation_fraction": 0.0, **data}
    max_len = data.pop("max_seq_length", 1024)
    return RunConfig.model_validate({"method": method, "data": data, "training": {"max_seq_length": max_len}})


def write_rows(tmp_path, rows, name="d.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def msgs(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


def labelled_runs(tokenizer, ids, labels):
    """Decode each run of consecutive labelled positions."""
    runs, t = [], 0
    while t < len(ids):
        if labels[t] == IGNORE_INDEX:
            t += 1
            continue
        s = t
        while t < len(ids) and labels[t] != IGNORE_INDEX:
            assert labels[t] == ids[t]
            t += 1
        runs.append(tokenizer.decode(ids[s:t], skip_special_tokens=False, clean_up_tokenization_spaces=False))
    return runs


def mask_from_offsets(tokenizer, text, spans):
    """Expected mask: tokens of the jointly tokenised ``text`` that lie inside a char span."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [any(s <= a and b <= e and b > a for s, e in spans) for a, b in enc["offset_mapping"]]
    return enc["input_ids"], mask


# ---- the real SmolLM2 tokenizer ------------------------------------------------------------------


@pytest.mark.slow
def test_multi_turn_labels_are_exactly_the_assistant_contents_and_their_end_of_turn(
    tmp_path, smollm2_tokenizer
):
    tok = smollm2_tokenizer
    sys_, u1, a1, u2, a2 = (
        "You are terse.",
        "Capital of France?",
        "Paris.",
        "And of Italy? One word.",
        " Rome, of course!",
    )
    # The rendering of SmolLM2's ChatML template, written out by hand.
    text = f"{IM_START}system\n{sys_}{IM_END}\n{IM_START}user\n{u1}{IM_END}\n{IM_START}assistant\n"
    s1 = len(text)
    text += a1 + IM_END
    e1 = len(text)
    text += f"\n{IM_START}user\n{u2}{IM_END}\n{IM_START}assistant\n"
    s2 = len(text)
    text += a2 + IM_END
    e2 = len(text)
    text += "\n"
    expected_ids, expected_mask = mask_from_offsets(tok, text, [(s1, e1), (s2, e2)])

    path = write_rows(
        tmp_path,
        [
            {
                "messages": msgs(
                    ("system", sys_), ("user", u1), ("assistant", a1), ("user", u2), ("assistant", a2)
                )
            }
        ],
    )
    data = prepare_data(config_for(path), tok)
    (ex,) = data.train
    assert ex.input_ids == expected_ids
    assert [x != IGNORE_INDEX for x in ex.labels] == expected_mask
    assert labelled_runs(tok, ex.input_ids, ex.labels) == [a1 + IM_END, a2 + IM_END]
    # <|im_end|> is EOS and pad at once; every assistant turn's copy of it carries a label.
    assert tok.pad_token_id == tok.eos_token_id == tok.convert_tokens_to_ids(IM_END)
    im_end_labels = [i for i, x in enumerate(ex.labels) if x == tok.eos_token_id]
    assert len(im_end_labels) == 2
    # One BOS (SmolLM2's BOS is <|im_start|>, rendered by the template and not added again).
    assert ex.input_ids[0] == tok.bos_token_id and ex.input_ids[1] != tok.bos_token_id
    assert data.chat_template == tok.chat_template


@pytest.mark.slow
def test_train_on_last_turn_and_all(tmp_path, smollm2_tokenizer):
    tok = smollm2_tokenizer
    row = {
        "messages": msgs(
            ("user", "a b c"),
            ("assistant", "first answer"),
            ("user", "d e f"),
            ("assistant", "second answer"),
        )
    }
    path = write_rows(tmp_path, [row])
    (last,) = prepare_data(config_for(path, train_on="last_turn"), tok).train
    assert labelled_runs(tok, last.input_ids, last.labels) == ["second answer" + IM_END]
    (every,) = prepare_data(config_for(path, train_on="all"), tok).train
    assert every.input_ids == last.input_ids
    assert every.labels[0] == IGNORE_INDEX and every.labels[1:] == every.input_ids[1:]


@pytest.mark.slow
def test_alpaca_rows_match_apply_chat_template_and_label_the_output(shared_data, smollm2_tokenizer):
    tok = smollm2_tokenizer
    rows = json.loads((shared_data / "llamafactory" / "alpaca_en_demo.json").read_text())[:40]
    cfg = config_for(shared_data / "llamafactory" / "alpaca_en_demo.json", max_seq_length=4096)
    examples = {e.row: e for e in prepare_data(cfg, tok).train}
    for number, r in enumerate(rows, start=1):
        user = r["instruction"] + ("\n" + r["input"] if r["input"] else "")
        expected = tok.apply_chat_template(msgs(("user", user), ("assistant", r["output"])), tokenize=True)
        expected = expected["input_ids"] if hasattr(expected, "keys") else expected
        ex = examples[number]
        assert ex.input_ids == list(expected), number
        assert labelled_runs(tok, ex.input_ids, ex.labels) == [r["output"] + IM_END], number


@pytest.mark.slow
def test_text_rows_get_eos_appended_and_labelled(tmp_path, smollm2_tokenizer):
    tok = smollm2_tokenizer
    text = "table: t\nQ: how many?\nA: SELECT COUNT(*) FROM t"
    path = write_rows(tmp_path, [{"text": text}, {"text": "short one"}])
    data = prepare_data(config_for(path, pack_text=False), tok)  # one row (packing: tests/test_data_pack.py)
    ex = data.train[0]
    assert ex.input_ids == tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert ex.labels[-1] == tok.eos_token_id  # EOS labelled although it is also the pad token
    assert ex.labels[0] == IGNORE_INDEX and ex.labels[1:] == ex.input_ids[1:]


@pytest.mark.slow
def test_long_prompt_drops_the_row_with_a_notice_and_no_zero_label_batch(tmp_path, smollm2_tokenizer):
    tok = smollm2_tokenizer
    long_prompt = "tell me about this " * 40
    rows = [
        {"messages": msgs(("user", "hi"), ("assistant", "hello there"))},
        {"messages": msgs(("user", long_prompt), ("assistant", "ok"))},
        {"messages": msgs(("user", "yo"), ("assistant", "hey"))},
    ]
    path = write_rows(tmp_path, rows)
    data = prepare_data(config_for(path, max_seq_length=48), tok)
    assert [e.row for e in data.train] == [1, 3]
    (problem,) = data.report.problems
    assert (problem.row, problem.field) == (2, "(length)") and "max_seq_length 48" in problem.reason
    assert any("1 row(s) dropped" in n and "lines 2" in n for n in data.report.notices)
    assert data.report.rows_read == 3 and data.report.rows_kept == 2
    for batch in make_batches(data.train, batch_size=1, pad_token_id=data.pad_token_id, seed=0, epoch=0):
        assert batch.num_label_tokens > 0
        # a mean over label tokens (what the loss is) stays finite
        per_token = np.where(batch.labels[:, 1:] != IGNORE_INDEX, 1.0, 0.0)
        assert np.isfinite(per_token.sum() / batch.num_label_tokens)


@pytest.mark.slow
def test_truncation_keeps_the_first_tokens(tmp_path, smollm2_tokenizer):
    tok = smollm2_tokenizer
    answer = "one two three four five six seven eight nine ten " * 8
    path = write_rows(tmp_path, [{"messages": msgs(("user", "count"), ("assistant", answer))}])
    (full,) = prepare_data(config_for(path, max_seq_length=4096), tok).train
    data = prepare_data(config_for(path, max_seq_length=40), tok)
    (cut,) = data.train
    assert cut.input_ids == full.input_ids[:40] and cut.labels == full.labels[:40]
    assert cut.labels[-1] != IGNORE_INDEX
    assert any("cut from the right" in n for n in data.report.notices)
    assert data.report.lengths == [len(full.input_ids)]


@pytest.mark.slow
def test_padding_never_carries_a_label_when_pad_is_eos(tmp_path, smollm2_tokenizer):
    tok = smollm2_tokenizer
    rows = [{"messages": msgs(("user", "q" * n), ("assistant", "a " * n))} for n in (1, 5, 20, 3, 9)]
    data = prepare_data(config_for(write_rows(tmp_path, rows)), tok)
    assert data.pad_token_id == tok.eos_token_id
    for batch in make_batches(data.train, batch_size=3, pad_token_id=data.pad_token_id, seed=1, epoch=0):
        pad = batch.attention_mask == 0
        assert pad.any() or batch.input_ids.shape[0] == 1
        assert (batch.labels[pad] == IGNORE_INDEX).all()
        # the end-of-turn tokens (same id as pad) in real positions keep their labels
        real_eos = (
            (batch.input_ids == tok.eos_token_id)
            & (batch.attention_mask == 1)
            & (batch.labels != IGNORE_INDEX)
        )
        assert real_eos.sum() == len(batch.rows)


@pytest.mark.slow
def test_preference_pairs_prompt_once_answers_end_with_end_of_turn(tmp_path, smollm2_tokenizer):
    tok = smollm2_tokenizer
    row = {
        "conversations": [{"from": "system", "value": "S."}, {"from": "human", "value": "Is water wet?"}],
        "chosen": {"from": "gpt", "value": " Yes, it is."},
        "rejected": {"from": "gpt", "value": "No."},
    }
    data = prepare_data(config_for(write_rows(tmp_path, [row]), method="dpo"), tok)
    (ex,) = data.train
    prompt = f"{IM_START}system\nS.{IM_END}\n{IM_START}user\nIs water wet?{IM_END}\n{IM_START}assistant\n"
    assert ex.prompt_ids == tok(prompt, add_special_tokens=False)["input_ids"]
    im_end = tok.convert_tokens_to_ids(IM_END)
    # The answer keeps its own leading space (nothing merged into the prompt) and ends with <|im_end|>.
    assert ex.chosen_ids == tok(" Yes, it is.", add_special_tokens=False)["input_ids"] + [im_end]
    assert ex.rejected_ids == tok("No.", add_special_tokens=False)["input_ids"] + [im_end]
    assert data.method == "dpo"


@pytest.mark.slow
def test_chatml_choice_and_missing_template(smollm2_tokenizer):
    tok = copy.deepcopy(smollm2_tokenizer)
    assert resolve_chat_template(tok, "chatml") == CHATML_TEMPLATE
    tok.chat_template = None
    with pytest.raises(UserInputError) as exc:
        resolve_chat_template(tok, RunConfig())
    assert "data.chat_template: chatml" in str(exc.value) and exc.value.field == "data.chat_template"
    # With ChatML on a model whose EOS is <|im_end|>, turns end with <|im_end|> only.
    enc = Encoder(tok, CHATML_TEMPLATE)
    (r,) = enc.encode_chat([(1, msgs(("user", "hi"), ("assistant", "hello")))])
    assert labelled_runs(tok, r.example.input_ids, r.example.labels) == ["hello" + IM_END]


# ---- toy tokenizers: one that adds BOS, one SentencePiece-style --------------------------------

CORPUS = [
    "Hello there, how are you? I am fine. The capital of France is Paris.",
    "[INST] What is two plus two? [/INST] Four. Tell me a joke about cats and dogs.",
]
LLAMA2_LIKE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
    "{% else %}{{ ' ' + m['content'] + ' ' + eos_token }}{% endif %}{% endfor %}"
)


@lru_cache
def toy_tokenizer(sentencepiece: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    if sentencepiece:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
        tok.decoder = decoders.Metaspace(prepend_scheme="first")
        alphabet = []
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    specials = ["<s>", "</s>", "<pad>", IM_START, IM_END]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator([*CORPUS, "\n"], trainer)
    # Like Llama 2: the tokenizer itself adds BOS to every encoded text.
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=[IM_START, IM_END],
    )


def test_template_with_bos_and_tokenizer_adding_bos_give_one_bos_and_sentencepiece_spaces_stay_right():
    tok = toy_tokenizer(True)
    enc = Encoder(tok, LLAMA2_LIKE)
    assert enc.adds_bos and enc.mid_text_trick
    question, answer = "What is two plus two?", "Four."
    prefix = f"<s>[INST] {question} [/INST]"
    text = f"{prefix} {answer} </s>"
    expected_ids, expected_mask = mask_from_offsets(tok, text, [(len(prefix), len(text))])
    (r,) = enc.encode_chat([(1, msgs(("user", question), ("assistant", answer)))])
    ex = r.example
    assert ex.input_ids.count(tok.bos_token_id) == 1 and ex.input_ids[0] == tok.bos_token_id
    assert ex.input_ids == expected_ids  # no stray start-of-text spaces in the middle
    assert [x != IGNORE_INDEX for x in ex.labels] == expected_mask
    assert ex.labels[-1] == tok.eos_token_id


def test_tokenizer_adding_bos_with_a_template_without_it_gets_exactly_one():
    tok = toy_tokenizer(False)
    enc = Encoder(tok, CHATML_TEMPLATE)
    (r,) = enc.encode_chat([(7, msgs(("user", "Hello"), ("assistant", "Paris")))])
    ex = r.example
    assert ex.row == 7
    assert ex.input_ids[0] == tok.bos_token_id and ex.input_ids.count(tok.bos_token_id) == 1
    text = f"{IM_START}user\nHello{IM_END}\n{IM_START}assistant\nParis{IM_END}</s>\n"
    assert ex.input_ids[1:] == tok(text, add_special_tokens=False)["input_ids"]
    # ChatML on a model whose EOS is not <|im_end|>: the turn ends with <|im_end|> then EOS, both trained.
    assert labelled_runs(tok, ex.input_ids, ex.labels) == ["Paris" + IM_END + "</s>"]
    (t,) = enc.encode_text([(1, "Hello there")])
    assert t.example.input_ids == [
        tok.bos_token_id,
        *tok("Hello there", add_special_tokens=False)["input_ids"],
        tok.eos_token_id,
    ]
    assert t.example.labels[0] == IGNORE_INDEX and t.example.labels[-1] == tok.eos_token_id


def test_model_without_template_is_an_error_unless_chatml_or_plain_text(tmp_path):
    tok = toy_tokenizer(False)
    assert tok.chat_template is None
    chat_file = write_rows(tmp_path, [{"messages": msgs(("user", "a"), ("assistant", "b"))}])
    with pytest.raises(UserInputError, match="chatml"):
        prepare_data(config_for(chat_file), tok)
    assert prepare_data(config_for(chat_file, chat_template="chatml"), tok).chat_template == CHATML_TEMPLATE
    text_file = write_rows(tmp_path, [{"text": "Hello there"}], "t.jsonl")
    data = prepare_data(config_for(text_file), tok)
    assert data.chat_template is None and len(data.train) == 1


def test_preference_rows_that_cannot_fit_are_dropped_and_answers_cut():
    tok = toy_tokenizer(False)
    enc = Encoder(tok, CHATML_TEMPLATE, max_seq_length=30)
    long_prompt = Preference(msgs(("user", "Hello there " * 10)), "Paris", "France")
    short = Preference(msgs(("user", "Hi")), "Paris is the capital of France " * 3, "No")
    dropped, kept = enc.encode_preference([(1, long_prompt), (2, short)])
    assert dropped.example is None and dropped.error.field == "(length)"
    ex = kept.example
    assert len(ex.prompt_ids) + len(ex.chosen_ids) == 30 and len(ex.prompt_ids) < 30
    assert kept.length > 30 and dropped.length > 30
    assert ex.rejected_ids[-2:] == [tok.convert_tokens_to_ids(IM_END), tok.eos_token_id]


def test_only_invalid_rows_fail_prepare_data_with_the_reasons(tmp_path):
    rows = [
        {"messages": msgs(("user", "a"), ("assistant", ""))},
        {"messages": msgs(("user", "a"), ("user", "b"))},
    ]
    with pytest.raises(UserInputError) as exc:
        prepare_data(config_for(write_rows(tmp_path, rows), chat_template="chatml"), toy_tokenizer(False))
    text = str(exc.value)
    assert "no usable rows: 2 read" in text
    assert (
        ":1: messages[1].content: empty answer" in text
        and ":2: messages[1].role: roles must alternate" in text
    )


def test_validation_split_is_seeded_and_never_empty(tmp_path):
    tok = toy_tokenizer(False)
    rows = [{"text": f"Hello {i}"} for i in range(20)]
    path = write_rows(tmp_path, rows)
    data = {"train_file": str(path), "validation_fraction": 0.1, "pack_text": False}  # rows, not packed
    cfg = RunConfig.model_validate({"data": data, "training": {"seed": 3}})
    a, b = prepare_data(cfg, tok), prepare_data(cfg, tok)
    assert [e.row for e in a.validation] == [e.row for e in b.validation] and len(a.validation) == 2
    assert sorted(e.row for e in a.train + a.validation) == list(range(1, 21))
    other = prepare_data(
        cfg.model_copy(update={"training": cfg.training.model_copy(update={"seed": 4})}), tok
    )
    assert [e.row for e in other.validation] != [e.row for e in a.validation]
    tiny = prepare_data(
        config_for(write_rows(tmp_path, rows[:1], "one.jsonl"), validation_fraction=0.5, pack_text=False), tok
    )
    assert tiny.validation is None and any("validation is off" in n for n in tiny.report.notices)
    small = prepare_data(
        config_for(write_rows(tmp_path, rows[:3], "three.jsonl"), validation_fraction=0.01, pack_text=False),
        tok,
    )
    assert len(small.validation) == 1 and len(small.train) == 2
    off = prepare_data(config_for(path, pack_text=False), tok)
    assert off.validation is None and any("validation is off" in n for n in off.report.notices)
    val_file = write_rows(tmp_path, rows[:4], "val.jsonl")
    sep = prepare_data(config_for(path, validation_file=str(val_file), pack_text=False), tok)
    assert len(sep.train) == 20 and [e.row for e in sep.validation] == [1, 2, 3, 4]


def test_validation_is_capped_by_validation_max_rows(tmp_path):
    """A held-out share above ``data.validation_max_rows`` is cut to it and the rest trains; a
    validation file is sampled down to it in file order; 0 lifts the cap. (Rows, so unpacked.)"""
    tok = toy_tokenizer(False)
    path = write_rows(tmp_path, [{"text": f"Hello {i}"} for i in range(40)])
    capped = prepare_data(
        config_for(path, validation_fraction=0.5, validation_max_rows=3, pack_text=False), tok
    )
    assert len(capped.validation) == 3 and len(capped.train) == 37
    assert sorted(e.row for e in capped.train + capped.validation) == list(range(1, 41))
    assert any("at most data.validation_max_rows 3" in n for n in capped.report.notices)
    uncapped = prepare_data(
        config_for(path, validation_fraction=0.5, validation_max_rows=0, pack_text=False), tok
    )
    assert len(uncapped.validation) == 20 and len(uncapped.train) == 20
    val_file = write_rows(tmp_path, [{"text": f"Held {i}"} for i in range(10)], "val.jsonl")
    sampled = prepare_data(
        config_for(path, validation_file=str(val_file), validation_max_rows=4, pack_text=False), tok
    )
    rows = [e.row for e in sampled.validation]
    assert len(rows) == 4 and rows == sorted(rows) and set(rows) <= set(range(1, 11))
    assert len(sampled.train) == 40
    assert any("4 of 10 rows used" in n for n in sampled.report.notices)


def test_missing_sample_data_is_a_user_error(monkeypatch, tmp_path):
    from backends import paths

    monkeypatch.setattr(paths, "resources_dir", lambda: tmp_path)
    with pytest.raises(UserInputError, match="sample data"):
        prepare_data(RunConfig(), toy_tokenizer(False))


def test_template_whose_generation_prompt_differs_from_the_rendered_turn_falls_back_to_the_content():
    # Like Qwen3: the generation prompt opens an empty think block that the rendered history lacks.
    template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n' }}{% endif %}"
    )
    tok = toy_tokenizer(False)
    enc = Encoder(tok, template)
    conversation = msgs(
        ("user", "Hello"), ("assistant", "Paris"), ("user", "How are you?"), ("assistant", "I am fine.")
    )
    (r,) = enc.encode_chat([(1, conversation)])
    assert labelled_runs(tok, r.example.input_ids, r.example.labels) == [
        "Paris" + IM_END,
        "I am fine." + IM_END,
    ]
    assert enc.turns_without_stop == 0


def test_template_without_an_end_of_turn_token_is_noticed():
    template = (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
    )
    tok = toy_tokenizer(False)
    enc = Encoder(tok, template)
    (r,) = enc.encode_chat([(1, msgs(("user", "Hello"), ("assistant", "Paris")))])
    # Without a special token to stop at, the newline is the only end of the turn: it is trained.
    assert labelled_runs(tok, r.example.input_ids, r.example.labels) == ["Paris\n"]
    assert enc.turns_without_stop == 1


def test_fallback_does_not_match_an_answer_that_also_occurs_in_the_prompt():
    template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n<think></think>' }}{% endif %}"
    )
    tok = toy_tokenizer(False)
    enc = Encoder(tok, template)
    (r,) = enc.encode_chat([(1, msgs(("user", "Say Paris"), ("assistant", "Paris")))])
    ids, labels = r.example.input_ids, r.example.labels
    first = next(i for i, x in enumerate(labels) if x != IGNORE_INDEX)
    assert tok.decode(ids[:first]).endswith(f"Say Paris{IM_END}\n{IM_START}assistant\n")
    assert labelled_runs(tok, ids, labels) == ["Paris" + IM_END]
