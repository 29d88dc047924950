"""What the framework-neutral training loop needs from a run on several processes (``--nproc``).

An engine that trains as one of several processes carries a ``world`` attribute (``World``); an
engine without one is a single process (``SINGLE``). The loop then:
- builds micro-batches at the global batch size and hands the engine its share of each
  (``backends.data.shard``); counts tokens over the global batches;
- asks every process whether a stop was requested and stops all of them at the same step
  (``World.any``), so their collectives stay in step;
- writes events, the log, checkpoints and the adapter on rank 0 only;
- keeps each process's own RNG states and data position in the checkpoint (``rank-<R>.json``,
  written by rank 0 from what every rank sends, ``World.gather``) and restores them per rank.
The frameworks' implementations: ``backends.torch_backend.distributed`` (torch.distributed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from backends.errors import UserInputError


class World(Protocol):
    """The processes of one run: this one's ``rank`` of ``size``; rank 0 is the writer."""

    rank: int
    size: int

    def any(self, flag: bool) -> bool:
        """True on every process when ``flag`` is true on at least one (a collective)."""
        ...

    def sum(self, values: dict[str, float]) -> dict[str, float]:
        """The per-key sums of every process's ``values`` (same keys everywhere; a collective)."""
        ...

    def gather(self, obj: Any) -> list[Any] | None:
        """Every process's ``obj`` (JSON-like), in rank order, on rank 0; None elsewhere."""
        ...

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every process."""
        ...

    def barrier(self) -> None:
        """Return when every process got here."""
        ...


class SingleProcess:
    """The ``World`` of a run on one process: every collective is the identity."""

    rank = 0
    size = 1

    def any(self, flag: bool) -> bool:
        return bool(flag)

    def sum(self, values: dict[str, float]) -> dict[str, float]:
        return dict(values)

    def gather(self, obj: Any) -> list[Any] | None:
        return [obj]

    def broadcast(self, obj: Any) -> Any:
        return obj

    def barrier(self) -> None:
        return None


SINGLE = SingleProcess()


def world_of(engine: Any) -> World:
    """The engine's ``world``, or ``SINGLE`` for an engine that trains on one process."""
    return getattr(engine, "world", None) or SINGLE


def rank_file(checkpoint: Path, rank: int) -> Path:
    """Where a checkpoint keeps process ``rank``'s own state."""
    return Path(checkpoint) / f"rank-{rank}.json"


def write_rank_states(folder: Path, states: list[dict[str, Any]]) -> None:
    """Write each process's state (``states[r]`` -> ``rank-<r>.json``) into a checkpoint being
    written (the folder is renamed into place afterwards, so no atomic write is needed here)."""
    for rank, state in enumerate(states):
        rank_file(folder, rank).write_text(json.dumps(state), encoding="utf-8")


def checkpoint_world_size(checkpoint: Path | None) -> int:
    """How many processes wrote ``checkpoint`` (its ``trainer_state.json``); 1 when unknown."""
    from backends.training.state import STATE_FILE

    if checkpoint is None:
        return 1
    try:
        return int(
            json.loads((Path(checkpoint) / STATE_FILE).read_text(encoding="utf-8")).get("world_size", 1)
        )
    except (OSError, ValueError, AttributeError):
        return 1


def read_rank_state(checkpoint: Path, rank: int, world_size: int, saved_world_size: int) -> dict[str, Any]:
    """Process ``rank``'s state from ``checkpoint``; {} for a one-process checkpoint resumed on
    one process. Raises UserInputError when the checkpoint was written by a different number of
    processes (the data position counts global batches of that many processes) or lacks the file."""
    if saved_world_size != world_size:
        raise UserInputError(
            f"this run was checkpointed on {saved_world_size} process(es) and is resumed on {world_size}",
            file=checkpoint,
            field="--nproc",
            hint=f"resume with --nproc {saved_world_size} (the global batch and data position depend on it)",
        )
    path = rank_file(checkpoint, rank)
    if world_size == 1 and not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserInputError(f"checkpoint state of rank {rank} unreadable: {exc}", file=path) from None
