"""Plain text for continued pre-training, packed: documents joined end to end (each ends with EOS,
and starts with BOS where the tokenizer adds one) and cut into full sequences of ``max_seq_length``
tokens, so no token is lost to truncation.

This is the grouping of transformers' language-modelling example (``group_texts`` in
``examples/pytorch/language-modeling/run_clm.py``) with one difference: the last, shorter sequence
is kept instead of dropped. As there, attention runs across a document boundary inside a sequence
(the EOS between them marks it). Every token is a target except BOS (the batcher leaves each
sequence's first position untrained: nothing precedes it); within a sequence the first token of a
document is predicted from the EOS before it. The documents are split into training and
validation before they are packed, so no document is in both.
"""

from __future__ import annotations

from dataclasses import dataclass

from backends.data.types import IGNORE_INDEX, DataReport, Example


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


def pack_documents(documents: list[Example], max_seq_length: int) -> tuple[list[Example], PackStats]:
    """``documents`` (untruncated, in order; their labels as they should be in the joined stream:
    the ids, ``IGNORE_INDEX`` on a BOS) as sequences of ``max_seq_length`` tokens, the last one
    shorter; a sequence's ``row`` is the source row of its first token. A final piece of a single
    token (no target) is dropped. Raises ValueError for ``max_seq_length`` below 2."""
    if max_seq_length < 2:
        raise ValueError("max_seq_length must be at least 2 to pack text")
    ids: list[int] = []
    labels: list[int] = []
    rows: list[int] = []
    starts: list[int] = []  # stream position where each document starts
    for doc in documents:
        starts.append(len(ids))
        ids += doc.input_ids
        labels += doc.labels
        rows.append(doc.row)
    out: list[Example] = []
    doc = 0
    for begin in range(0, len(ids), max_seq_length):
        piece = ids[begin : begin + max_seq_length]
        if len(piece) < 2:
            break
        while doc + 1 < len(starts) and starts[doc + 1] <= begin:
            doc += 1
        out.append(Example(piece, labels[begin : begin + max_seq_length], rows[doc]))
    tokens_out = sum(len(e.input_ids) for e in out)
    targets = sum(1 for e in out for t in e.labels[1:] if t != IGNORE_INDEX)
    stats = PackStats(len(documents), len(ids), len(out), tokens_out, targets)
    return out, stats


def packed_counts(tokens: int, max_seq_length: int) -> tuple[int, int]:
    """(sequences, tokens kept) when ``tokens`` joined tokens are cut as ``pack_documents`` cuts
    them (full sequences of ``max_seq_length``, a final one-token piece dropped), from the count
    alone: for a notice about a file whose documents are not all kept in memory."""
    last = tokens % max_seq_length
    return tokens // max_seq_length + (1 if last >= 2 else 0), tokens - (1 if last == 1 else 0)


def pack_examples(
    examples: list | None, report: DataReport, max_seq_length: int, what: str, *, counts_only: bool = False
) -> list | None:
    """``examples`` packed when they are plain-text documents (``report.packed_text``): joined and
    cut into full sequences of ``max_seq_length`` (``backends.data.pack``), with a notice naming
    ``what`` ('training', 'validation'); other examples unchanged. ``counts_only`` (``data check``,
    which keeps only the first document): the notice alone, from ``report.rows_kept`` and
    ``report.packed_tokens``, and ``examples`` returned as they are."""
    if not report.packed_text or not (examples or (counts_only and report.rows_kept)):
        return examples
    if counts_only:
        documents, tokens_in = report.rows_kept, report.packed_tokens
        sequences, tokens_out = packed_counts(tokens_in, max_seq_length)
        packed = examples
    else:
        packed, stats = pack_documents(examples or [], max_seq_length)
        documents, tokens_in, sequences, tokens_out = (
            stats.documents,
            stats.tokens_in,
            stats.sequences,
            stats.tokens_out,
        )
    kept = tokens_out / tokens_in if tokens_in else 1.0
    report.notices.append(
        f"{what} text packed: {documents} documents ({tokens_in:,} tokens) joined with EOS "
        f"into {sequences} sequences of up to {max_seq_length} tokens, {100 * kept:.1f}% of "
        "the tokens kept (data.pack_text)"
    )
    return packed
