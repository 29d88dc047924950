"""The forgetting check's inputs: the general probe set and the general text sample under
``resources/forgetting/`` (written for TuneDesk; ``make_resources.py`` there writes the probes and
the replay examples of ``backends.data.replay``), and the two check sizes. No ML library is imported here (the desktop app uses it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from backends import paths
from backends.errors import UserInputError

FOLDER = Path("forgetting")
CATEGORIES = ("knowledge", "instructions", "arithmetic", "code", "writing", "refusal")


@dataclass(frozen=True)
class Probe:
    """One general prompt: ``id`` (e.g. ``arithmetic-03``), ``category`` and the user ``prompt``."""

    id: str
    category: str
    prompt: str

    @property
    def messages(self) -> list[dict[str, str]]:
        """The chat the probe sends: one user turn (no system prompt, as a user would chat)."""
        return [{"role": "user", "content": self.prompt}]


@dataclass(frozen=True)
class CheckSize:
    """How much of the check to run: ``probes`` prompts (spread over the categories), greedy answers
    of at most ``max_new_tokens`` tokens, and the first ``text_tokens`` tokens of the general text
    (0: all of it)."""

    name: str
    probes: int
    max_new_tokens: int
    text_tokens: int


# The command's default: every probe, longer answers, the whole text.
FULL = CheckSize("full", probes=100, max_new_tokens=48, text_tokens=0)
# At the end of training and at eval steps: two probes per category and short answers, to cost
# about a tenth of a short run's time (README, "Forgetting check").
QUICK = CheckSize("quick", probes=12, max_new_tokens=16, text_tokens=256)


def resource(name: str) -> Path:
    """A file of ``resources/forgetting/``."""
    return paths.resources_dir() / FOLDER / name


def load_probes() -> list[Probe]:
    """Every probe, in file order. Raises UserInputError naming the file and line when it is
    missing or a row is malformed."""
    path = resource("probes.jsonl")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UserInputError(f"cannot read the probe set: {exc.strerror}", file=path) from None
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out.append(Probe(str(row["id"]), str(row["category"]), str(row["prompt"])))
        except (ValueError, KeyError, TypeError):
            raise UserInputError("not a probe row (id, category, prompt)", file=path, line=number) from None
    return out


def select_probes(probes: list[Probe], n: int) -> list[Probe]:
    """``n`` probes taken in turn from each category (file order within one), so a short check still
    covers every kind of ability; all of them when ``n`` is at least their number."""
    if n >= len(probes):
        return list(probes)
    groups: dict[str, list[Probe]] = {}
    for probe in probes:
        groups.setdefault(probe.category, []).append(probe)
    out: list[Probe] = []
    depth = 0
    while len(out) < n:
        for group in groups.values():
            if depth < len(group) and len(out) < n:
                out.append(group[depth])
        depth += 1
    return out


def general_text() -> str:
    """The general text sample whose perplexity is measured before and after tuning."""
    path = resource("general_text.txt")
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserInputError(f"cannot read the general text sample: {exc.strerror}", file=path) from None
