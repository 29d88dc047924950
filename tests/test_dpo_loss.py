"""DPO's framework-neutral parts: the loss formula against hand-computed values, the reward
statistics, the reference log-prob cache, and bad preference input (named per row, identical
pairs dropped with a notice)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from backends.config import RunConfig, config_from_dict
from backends.data import IGNORE_INDEX, PreferenceExample, make_preference_batches
from backends.data.encode import Encoder
from backends.data.formats import Preference
from backends.data.pipeline import analyze_file, prepare_data
from backends.data.templates import CHATML_TEMPLATE
from backends.errors import UserInputError
from backends.events import OPTIONAL, make_event
from backends.training.dpo import (
    REFERENCE_FILE,
    STEP_FIELDS,
    PreferenceStats,
    ReferenceCache,
    numpy_log_sigmoid,
    sigmoid_dpo_loss,
)
from tests.test_data_labels import toy_tokenizer


def loss_np(pc, pr, rc, rr, beta=0.1, eps=0.0):
    return sigmoid_dpo_loss(
        np.asarray(pc, float),
        np.asarray(pr, float),
        np.asarray(rc, float),
        np.asarray(rr, float),
        beta=beta,
        label_smoothing=eps,
        log_sigmoid=numpy_log_sigmoid,
    )


def test_sigmoid_loss_matches_the_paper_by_hand():
    # h = (pc - rc) - (pr - rr) = (-10 - -11) - (-20 - -19) = 2; beta h = 0.2
    losses, chosen, rejected = loss_np([-10.0], [-20.0], [-11.0], [-19.0], beta=0.1)
    assert losses[0] == pytest.approx(math.log(1 + math.exp(-0.2)), abs=1e-12)  # -log sigmoid(0.2)
    assert losses[0] == pytest.approx(0.598138869, abs=1e-9)
    assert chosen[0] == pytest.approx(0.1) and rejected[0] == pytest.approx(-0.1)
    # cDPO: -(1 - eps) log s(0.2) - eps log s(-0.2)
    smoothed, _, _ = loss_np([-10.0], [-20.0], [-11.0], [-19.0], beta=0.1, eps=0.1)
    assert smoothed[0] == pytest.approx(0.9 * 0.598138869 + 0.1 * 0.798138869, abs=1e-8)


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_policy_equal_to_reference_gives_ln2(eps):
    logps = np.array([-35.2, -7.0, -120.5])
    losses, chosen, rejected = loss_np(logps, logps - 3, logps, logps - 3, beta=0.5, eps=eps)
    np.testing.assert_allclose(losses, math.log(2), atol=1e-12)
    assert not chosen.any() and not rejected.any()


def test_loss_falls_as_the_chosen_answer_gains_over_the_rejected():
    gains = np.linspace(-5, 5, 11)
    losses, _, _ = loss_np(gains, np.zeros(11), np.zeros(11), np.zeros(11), beta=1.0)
    assert np.all(np.diff(losses) < 0)
    assert losses[5] == pytest.approx(math.log(2))


def test_preference_stats_means_and_strict_accuracy():
    stats = PreferenceStats()
    stats.add([0.5, 0.7], [0.2, 0.0], [0.1, 0.0])  # second pair: equal rewards is not "correct"
    stats.add([0.3], [-0.1], [0.3])
    m = stats.metrics()
    assert m["loss"] == pytest.approx(0.5)
    assert m["rewards_chosen"] == pytest.approx(0.1 / 3) and m["rewards_rejected"] == pytest.approx(0.4 / 3)
    assert m["reward_margin"] == pytest.approx(-0.3 / 3)
    assert m["reward_accuracy"] == pytest.approx(1 / 3)
    assert set(STEP_FIELDS) <= set(m)
    assert all(math.isnan(v) for v in PreferenceStats().metrics().values())


def test_dpo_fields_are_documented_optional_event_fields():
    assert set(STEP_FIELDS) <= set(OPTIONAL["step"])
    memory = {"rss": 1, "device_allocated": None, "device_peak": None}
    event = make_event(
        "step",
        step=1,
        epoch=0.1,
        loss=0.69,
        learning_rate=1e-4,
        grad_norm=1.0,
        tokens=10,
        tokens_per_second=5.0,
        elapsed=1.0,
        eta=1.0,
        memory=memory,
        **dict.fromkeys(STEP_FIELDS, 0.0),
    )
    assert all(event[k] == 0.0 for k in STEP_FIELDS)


def _pairs():
    return [
        PreferenceExample([1, 2, 3], [4, 5], [6], row=10),
        PreferenceExample([1, 2], [7, 8, 9], [6, 6], row=11),
        PreferenceExample([1], [4], [5, 5, 5], row=12),
    ]


def test_reference_cache_attaches_per_row_and_round_trips_through_a_checkpoint(tmp_path):
    pairs = _pairs()
    batches = make_preference_batches(pairs, batch_size=2, pad_token_id=0, seed=1, epoch=0)

    def fake_reference(batch):  # a distinct value per (row, chosen/rejected)
        n = batch.num_pairs
        rows = np.array(batch.rows[:n], float)
        return np.concatenate([-rows, -rows - 0.5])

    cache = ReferenceCache()
    cache.fingerprint = "abc"
    assert cache.compute("train", batches, fake_reference)
    other = make_preference_batches(pairs, batch_size=3, pad_token_id=0, seed=7, epoch=3)[0]
    cache.attach("train", other)
    n = other.num_pairs
    expected = np.concatenate([-np.array(other.rows[:n], float), -np.array(other.rows[:n], float) - 0.5])
    np.testing.assert_array_equal(other.reference_log_probs, expected)

    cache.save(tmp_path)
    assert (tmp_path / REFERENCE_FILE).is_file()
    loaded = ReferenceCache()
    assert not loaded.load(tmp_path, "other data")  # a different data fingerprint is not used
    assert loaded.load(tmp_path, "abc") and loaded.values == cache.values

    stopped = ReferenceCache()
    assert not stopped.compute("train", batches, fake_reference, should_stop=lambda: True)
    assert not stopped.has("train")


def test_preference_batches_refuse_packing():
    with pytest.raises(ValueError, match="not packed"):
        make_preference_batches(_pairs(), batch_size=2, pad_token_id=0, seed=0, epoch=0, packing=True)
    with pytest.raises(UserInputError, match="data.packing"):
        config_from_dict({"method": "dpo", "data": {"packing": True}})


BAD_ROWS = [
    {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"},
    {"prompt": "Capital of France?", "chosen": None, "rejected": "Lyon"},
    {"prompt": "Capital of Italy?", "chosen": "Rome", "rejected": ""},
    {"prompt": "Say hi", "chosen": "Hi!", "rejected": " Hi! "},
    {"chosen": "yes", "rejected": "no"},
    {"prompt": "Colour of the sky?", "chosen": "Blue", "rejected": "Green"},
    {"prompt": "  ", "chosen": "a", "rejected": "b"},
    {"prompt": "Largest planet?", "chosen": "   ", "rejected": "Mars"},
]


def _write(tmp_path, rows):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_bad_preference_rows_are_named_per_line_and_identical_pairs_dropped_with_a_notice(tmp_path):
    path = _write(tmp_path, BAD_ROWS)
    examples, report, _, method = analyze_file(
        path, toy_tokenizer(False), method="dpo", chat_template="chatml"
    )
    assert method == "dpo"
    problems = {(p.row, p.field): p.reason for p in report.problems}
    assert set(problems) == {
        (2, "chosen"),
        (3, "rejected"),
        (4, "rejected"),
        (5, "prompt"),
        (7, "prompt"),
        (8, "chosen"),
    }
    assert problems[(2, "chosen")] == "is null"
    assert problems[(3, "rejected")] == "empty answer"
    assert "identical to chosen" in problems[(4, "rejected")]
    assert problems[(5, "prompt")] == "missing"
    assert problems[(7, "prompt")] == "empty prompt"
    assert problems[(8, "chosen")] == "empty answer"
    assert all(p.where == "line" for p in report.problems)
    assert [e.row for e in examples] == [1, 6] and report.rows_kept == 2
    notice = next(n for n in report.notices if "identical" in n)
    assert "1 pair(s)" in notice and "lines 4" in notice
    assert str(report.problems[0]).startswith(f"{path}:2: chosen: is null")


def test_strict_mode_stops_at_the_first_bad_pair(tmp_path):
    config = RunConfig.model_validate(
        {
            "method": "dpo",
            "data": {
                "train_file": str(_write(tmp_path, BAD_ROWS)),
                "strict": True,
                "chat_template": "chatml",
            },
        }
    )
    with pytest.raises(UserInputError) as info:
        prepare_data(config, toy_tokenizer(False))
    assert info.value.line == 2 and info.value.field == "chosen"
    assert "and 5 more invalid row(s)" in str(info.value)


def test_answers_identical_once_cut_to_max_seq_length_are_dropped():
    tok = toy_tokenizer(False)
    enc = Encoder(tok, CHATML_TEMPLATE, max_seq_length=24)
    prompt = [{"role": "user", "content": "Hi"}]
    same_start = Preference(
        prompt, "Paris is the capital of France " * 3 + "yes", "Paris is the capital of France " * 3 + "no"
    )
    differs = Preference(prompt, "Paris", "France")
    cut, kept = enc.encode_preference([(1, same_start), (2, differs)])
    assert cut.example is None and cut.error.field == "rejected"
    assert "identical to chosen within max_seq_length 24" in cut.error.reason
    assert kept.example is not None and kept.example.chosen_ids != kept.example.rejected_ids
    # labels of the kept pair: the answers only, chosen row first
    (batch,) = make_preference_batches([kept.example], batch_size=1, pad_token_id=0, seed=0, epoch=0)
    n_prompt = len(kept.example.prompt_ids)
    assert (batch.labels[:, :n_prompt] == IGNORE_INDEX).all()
    assert (
        batch.labels[0, n_prompt : n_prompt + len(kept.example.chosen_ids)].tolist()
        == kept.example.chosen_ids
    )
