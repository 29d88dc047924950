"""Plain text for continued pre-training, packed: documents joined end to end (each ends with EOS,
and starts with BOS where the tokenizer adds one) and cut into full sequences of ``max_seq_length``
tokens, so no token is lost to truncation.

This is the grouping of transformers' language-modelling example (``group_texts`` in
``examples/pytorch/language-modeling/run_clm.py``) with one difference: the last, shorter sequence
is kept instead of dropped. As there, attention runs across a document boundary inside a sequence
(the EOS between them marks it). Every token is a target except BOS (the batcher leaves each
sequence's first position untrained: nothing precedes it); within a sequence the first token of a
document is predicted from the EOS before it.
"""

from __future__ import annotations

from dataclasses import dataclass

from backends.data.types import IGNORE_INDEX, Example


@dataclass
class PackStats:
    """``documents`` joined, ``tokens_in`` (their tokens, BOS/EOS included), ``sequences`` cut,
    ``tokens_out`` (tokens in the sequences), ``targets`` (trained positions after the causal
    shift, i.e. all but each sequence's first)."""

    documents: int
    tokens_in: int
    sequences: int
    tokens_out: int
    targets: int

    @property
    def kept(self) -> float:
        """tokens_out / tokens_in (1.0 for nothing lost)."""
        return self.tokens_out / self.tokens_in if self.tokens_in else 1.0


def pack_documents(
    documents: list[Example], max_seq_length: int, bos_id: int | None = None
) -> tuple[list[Example], PackStats]:
    """``documents`` (untruncated, in order) as sequences of ``max_seq_length`` tokens, the last
    one shorter; a sequence's ``row`` is the source row of its first token. Labels: the token
    ids, ``IGNORE_INDEX`` on ``bos_id``. A final piece of a single token (no target) is dropped.
    Raises ValueError for ``max_seq_length`` below 2."""
    if max_seq_length < 2:
        raise ValueError("max_seq_length must be at least 2 to pack text")
    ids: list[int] = []
    rows: list[int] = []
    starts: list[int] = []  # stream position where each document starts
    for doc in documents:
        starts.append(len(ids))
        ids += doc.input_ids
        rows.append(doc.row)
    out: list[Example] = []
    doc = 0
    for begin in range(0, len(ids), max_seq_length):
        piece = ids[begin : begin + max_seq_length]
        if len(piece) < 2:
            break
        while doc + 1 < len(starts) and starts[doc + 1] <= begin:
            doc += 1
        labels = [IGNORE_INDEX if t == bos_id else t for t in piece]
        out.append(Example(piece, labels, rows[doc]))
    tokens_out = sum(len(e.input_ids) for e in out)
    targets = sum(1 for e in out for t in e.labels[1:] if t != IGNORE_INDEX)
    stats = PackStats(len(documents), len(ids), len(out), tokens_out, targets)
    return out, stats
