"""Exact and near-duplicate chunks removed, the first one in walk order kept.

- Exact: the same body once runs of whitespace are made one space.
- Near: MinHash (Broder 1997) over word 5-gram shingles with locality-sensitive hashing, both from
  ``datasketch`` (``MinHash``, ``MinHashLSH``): a chunk whose estimated Jaccard similarity to an
  earlier one is at least ``NEAR_THRESHOLD`` is a near duplicate (copied files, a README repeated
  in docs, licence headers with a different year). Chunks of fewer than ``SHINGLE`` words are
  only compared exactly.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from backends.data.folder.chunks import Chunk

NEAR_THRESHOLD = 0.85
SHINGLE = 5
NUM_PERM = 128
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Duplicate:
    """A dropped chunk: its ``source`` (path:lines), the kept one it repeats, 'exact' or 'near',
    and the estimated Jaccard similarity (1.0 for exact)."""

    source: str
    same_as: str
    kind: str
    similarity: float

    def to_dict(self) -> dict[str, object]:
        """The JSON form."""
        return {
            "source": self.source,
            "same_as": self.same_as,
            "kind": self.kind,
            "similarity": round(self.similarity, 3),
        }


def _shingles(body: str) -> set[bytes]:
    words = _WORD.findall(body.lower())
    return {" ".join(words[i : i + SHINGLE]).encode() for i in range(len(words) - SHINGLE + 1)}


def dedupe(chunks: list[Chunk], threshold: float = NEAR_THRESHOLD) -> tuple[list[Chunk], list[Duplicate]]:
    """The chunks without exact or near duplicates (order kept), and the ones dropped."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
    hashes: dict[str, MinHash] = {}
    exact: dict[str, Chunk] = {}
    kept: list[Chunk] = []
    dropped: list[Duplicate] = []
    for index, chunk in enumerate(chunks):
        key = hashlib.sha256(" ".join(chunk.body.split()).encode()).hexdigest()
        if key in exact:
            dropped.append(Duplicate(chunk.source, exact[key].source, "exact", 1.0))
            continue
        shingles = _shingles(chunk.body)
        if len(shingles) >= 1:
            mh = MinHash(num_perm=NUM_PERM, seed=1)
            mh.update_batch(list(shingles))
            best = max(
                ((mh.jaccard(hashes[c]), c) for c in lsh.query(mh)), default=(0.0, None), key=lambda t: t[0]
            )
            if best[1] is not None and best[0] >= threshold:
                dropped.append(Duplicate(chunk.source, best[1], "near", best[0]))
                continue
            name = f"{index}:{chunk.source}"
            lsh.insert(name, mh)
            hashes[name] = mh
        exact[key] = chunk
        kept.append(chunk)
    for i, d in enumerate(dropped):  # the LSH keys carry an index prefix: show the source only
        if d.kind == "near":
            dropped[i] = Duplicate(d.source, d.same_as.split(":", 1)[1], d.kind, d.similarity)
    return kept, dropped
