"""Replay against forgetting (``data.replay``): general examples mixed into the training examples.

Fine-tuning on a narrow dataset pulls a model away from what it could do before ("catastrophic
forgetting", McCloskey and Cohen 1989); mixing a share of general examples back into training
("rehearsal", Robins 1995) keeps more of it. ``data.replay: 0.1`` makes a tenth of the training
examples general ones: from ``data.replay_file`` (any format the pipeline reads), else TuneDesk's
own ``resources/forgetting/replay.jsonl`` (written for TuneDesk; none of its questions is a probe of
the forgetting check). They join the training split only, never validation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from backends import paths
from backends.data.types import DataReport

OWN_REPLAY = Path("forgetting") / "replay.jsonl"


def replay_source(replay_file: str | Path | None) -> Path:
    """The file general examples come from: ``replay_file``, else TuneDesk's own."""
    return Path(replay_file) if replay_file is not None else paths.resources_dir() / OWN_REPLAY


def replay_count(share: float, train_examples: int) -> int:
    """How many general examples make ``share`` of the mixed training set: n / (train + n) = share,
    so n = round(share / (1 - share) * train), at least 1 when ``share`` > 0."""
    if share <= 0 or train_examples <= 0:
        return 0
    return max(1, round(share / (1.0 - share) * train_examples))


def mix_replay(train: list, general: list, share: float, seed: int, report: DataReport, source: Path) -> list:
    """``train`` plus ``replay_count`` examples of ``general`` (a seeded shuffle, cycled when there
    are fewer than needed), noted in ``report``. The batcher shuffles the mixed list each epoch."""
    n = replay_count(share, len(train))
    if n == 0 or not general:
        return train
    order = np.random.default_rng(seed).permutation(len(general)).tolist()
    picked = [general[order[i % len(order)]] for i in range(n)]
    repeated = " (some repeated: the file has fewer)" if n > len(general) else ""
    report.notices.append(
        f"replay: {n} general examples from {source} mixed into {len(train)} training examples "
        f"(data.replay {share:g}){repeated}"
    )
    return train + picked
