"""The rows ``data from-folder`` writes, and how ``data check`` / training tell an unfilled one.

- ``text`` mode (continued pre-training): ``{"text": CHUNK}``;
- ``qa`` mode (a skeleton to fill in): ``{"prompt": "", "completion": "", "context": CHUNK,
  "source": "PATH:A-B"}``: a question goes in ``prompt``, its answer in ``completion``, with the
  source text in ``context`` at hand (``context`` and ``source`` are not trained on).

CHUNK is ``Chunk.text()``: "File: PATH (lines A-B)", "Section: TITLE" where there is one, a blank
line, then the file's text.
"""

from __future__ import annotations

from typing import Any

UNFILLED_REASON = (
    "unfilled: a question-and-answer skeleton row (from `data from-folder --mode qa`); write a "
    "question in prompt and its answer in completion (its context field holds the source text), "
    "or delete the row"
)


def qa_row(text: str, source: str) -> dict[str, str]:
    """A skeleton row for the chunk ``text`` from ``source`` (``PATH:A-B``)."""
    return {"prompt": "", "completion": "", "context": text, "source": source}


def is_unfilled(obj: Any) -> bool:
    """True for a qa skeleton row nobody filled in yet: a ``context`` field and an empty (or
    missing) ``completion``: ``data check`` and training list it as unfilled, not as invalid."""
    if not isinstance(obj, dict) or not isinstance(obj.get("context"), str):
        return False
    completion = obj.get("completion", "")
    return isinstance(completion, str) and not completion.strip()
