"""Plain text for continued pre-training is packed: documents joined with EOS and cut into full
sequences of max_seq_length, no token lost (issue 17), against the per-document cut it replaces."""

from __future__ import annotations

import json

import yaml

from backends.config import config_from_dict
from backends.data import prepare_data
from backends.data.check import check_file
from backends.data.pack import pack_documents, pack_examples
from backends.data.pipeline import analyze_file
from backends.data.types import IGNORE_INDEX, Example


def test_pack_documents_cuts_the_joined_stream_into_full_sequences():
    docs = [
        Example([1, 10, 11, 2], [IGNORE_INDEX, 10, 11, 2], 1),
        Example([1, 20, 2], [IGNORE_INDEX, 20, 2], 5),
    ]
    docs.append(Example([1, 30, 31, 32, 2], [IGNORE_INDEX, 30, 31, 32, 2], 9))
    packed, stats = pack_documents(docs, 5)
    assert [e.input_ids for e in packed] == [[1, 10, 11, 2, 1], [20, 2, 1, 30, 31], [32, 2]]
    assert [e.row for e in packed] == [1, 5, 9]  # the row of each sequence's first token
    assert packed[0].labels == [IGNORE_INDEX, 10, 11, 2, IGNORE_INDEX]
    assert packed[1].labels == [20, 2, IGNORE_INDEX, 30, 31]  # a document's first token is a target
    assert (stats.tokens_in, stats.tokens_out, stats.sequences, stats.kept) == (12, 12, 3, 1.0)
    assert stats.targets == 7  # 12 tokens less 3 BOS less the first positions of sequences 2 and 3
    one, stats = pack_documents([Example([5, 6, 7], [5, 6, 7], 1)], 2)
    assert [e.input_ids for e in one] == [[5, 6]] and stats.kept == 2 / 3  # a lone last token has no target


def reference_stream(tokenizer, texts: list[str]) -> list[int]:
    """Each document tokenised on its own, EOS after each: what training must see, in order."""
    stream: list[int] = []
    for text in texts:
        stream += tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    return stream


def test_packing_keeps_every_token_of_wikisql_and_of_long_documents(shared_data, smollm2_tokenizer, tmp_path):
    source = shared_data / "wikisql" / "train.jsonl"
    texts = [json.loads(line)["text"] for line in source.read_text().splitlines()]
    long_file = tmp_path / "long.jsonl"  # documents of ~2,800 tokens: 30 wikisql samples each
    long_texts = ["\n\n".join(texts[i : i + 30]) for i in range(0, len(texts), 30)]
    long_file.write_text("".join(json.dumps({"text": t}) + "\n" for t in long_texts))
    for path, docs, length in ((source, texts, 64), (long_file, long_texts, 1024)):
        stream = reference_stream(smollm2_tokenizer, docs)
        documents, report, _, _ = analyze_file(path, smollm2_tokenizer, max_seq_length=length)
        assert report.packed_text and len(documents) == len(docs)
        packed = pack_examples(documents, report, length, "training")
        joined = [t for e in packed for t in e.input_ids]
        assert joined == stream  # every token, in order, EOS between documents
        kept = len(joined) / len(stream)
        assert kept >= 0.99
        assert (
            all(len(e.input_ids) == length for e in packed[:-1]) and 2 <= len(packed[-1].input_ids) <= length
        )
        targets = sum(1 for e in packed for t in e.labels[1:] if t != IGNORE_INDEX)
        assert targets == len(stream) - len(packed)  # only each sequence's first position is untrained
        assert any(n.startswith(f"training text packed: {len(docs)} documents") for n in report.notices)
        cut, _, _, _ = analyze_file(path, smollm2_tokenizer, max_seq_length=length, pack_text=False)
        cut_kept = sum(len(e.input_ids) for e in cut) / len(stream)
        print(f"{path.name} at {length}: packed keeps {kept:.2%} of tokens, cut per document {cut_kept:.2%}")
        assert cut_kept < 0.7  # what packing replaces: wikisql at 64 keeps 68%, long documents ~36%
        if length == 1024:
            assert targets / len(stream) >= 0.99


def test_prepare_data_packs_text_by_default_and_data_check_says_so(
    shared_data, smollm2_dir, smollm2_tokenizer, tmp_path
):
    source = shared_data / "wikisql" / "valid.jsonl"
    raw = {"model": str(smollm2_dir), "data": {"train_file": str(source), "validation_fraction": 0.1}}
    raw["training"] = {"max_seq_length": 128}
    data = prepare_data(config_from_dict(raw), smollm2_tokenizer)
    sequences = data.train + data.validation
    assert (
        all(len(e.input_ids) <= 128 for e in sequences)
        and sum(len(e.input_ids) == 128 for e in sequences) >= len(sequences) - 2  # one short a split
    )
    raw["data"]["pack_text"] = False
    unpacked = prepare_data(config_from_dict(raw), smollm2_tokenizer)
    assert len(unpacked.train) + len(unpacked.validation) == 100 > len(sequences)
    result = check_file(source, smollm2_dir, max_seq_length=128)
    assert any(n.startswith("plain text packed: 100 documents") for n in result["notices"])
    assert (
        yaml.safe_load(yaml.safe_dump(config_from_dict(raw).model_dump(mode="json")))["data"]["pack_text"]
        is False
    )


def test_text_is_split_into_training_and_validation_documents_before_packing(tmp_path):
    """No document is in both splits: validation holds whole documents, each split packed alone."""
    from tests.test_data_labels import toy_tokenizer

    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": f"Hello {i} " * (i % 5 + 1)}) + "\n" for i in range(40)))
    raw = {"data": {"train_file": str(path), "validation_fraction": 0.25}, "training": {"max_seq_length": 16}}
    data = prepare_data(config_from_dict(raw), toy_tokenizer(False))
    documents, _, _, _ = analyze_file(path, toy_tokenizer(False), max_seq_length=16)
    assert all(len(e.input_ids) <= 16 for e in data.train + data.validation)
    tokens = sum(len(e.input_ids) for e in data.train + data.validation)
    assert tokens == sum(len(d.input_ids) for d in documents)  # every token, in one split or the other
    notes = " | ".join(data.report.notices)
    assert "validation: 10 of 40 rows held out" in notes
    assert "training text packed: 30 documents" in notes and "validation text packed: 10 documents" in notes


def test_data_check_packing_notice_from_counts_matches_packing_every_document(tmp_path):
    """``data check`` keeps only the first document (bounded memory); its packing notice, counted
    from the tally, says what packing all the documents says."""
    from tests.test_data_labels import toy_tokenizer

    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": f"Hello {i} " * (i % 7 + 1)}) + "\n" for i in range(30)))
    for length in (5, 16, 17):
        documents, report, _, _ = analyze_file(path, toy_tokenizer(False), max_seq_length=length)
        pack_examples(documents, report, length, "plain")
        result = check_file(path, tokenizer=toy_tokenizer(False), max_seq_length=length)
        assert [n for n in result["notices"] if "text packed" in n] == [report.notices[-1]]
        assert result["example"]["row"] == 1 and report.notices[-1].startswith(
            "plain text packed: 30 documents"
        )
