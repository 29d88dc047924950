"""Resume safety: a run continues only with the config its checkpoint was written with.

Each checkpoint holds the ``config.yaml`` it was written with (``backends.training.loop``). On
``tunedesk train --resume RUN_DIR`` the run folder's ``config.yaml`` (which a user may have edited)
is compared with it key by key: any change is refused (exit 1) listing the changed keys, unless
``--allow-config-change`` is given, in which case the change is applied and noted in the run's
events (a ``log`` event at level ``warning`` with ``changed_keys``). Checkpoints from before this
record carry no config and are resumed as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from backends.config import RunConfig, config_from_dict
from backends.errors import UserInputError

CHECKPOINT_CONFIG = "config.yaml"


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(_flat(inner, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


def config_changes(old: RunConfig, new: RunConfig) -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every setting that differs, in key order."""
    a, b = _flat(old.model_dump(mode="json")), _flat(new.model_dump(mode="json"))
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def checkpoint_config(checkpoint: Path) -> RunConfig | None:
    """The config a checkpoint was written with, or None for a checkpoint without one."""
    path = checkpoint / CHECKPOINT_CONFIG
    if not path.is_file():
        return None
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UserInputError(f"cannot read the checkpoint's config: {exc}", file=path) from None
    return config_from_dict(raw, source=str(path))


def check_resume_config(
    config: RunConfig, checkpoint: Path | None, config_path: Path, *, allow: bool
) -> list[tuple[str, Any, Any]]:
    """The changes between ``config`` (the run folder's) and ``checkpoint``'s; [] when none or
    no checkpoint config. Raises UserInputError (field ``--resume``) listing the changed keys
    when there are changes and ``allow`` is False."""
    if checkpoint is None:
        return []
    old = checkpoint_config(checkpoint)
    if old is None:
        return []
    changes = config_changes(old, config)
    if changes and not allow:
        shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changes[:8])
        more = f"; and {len(changes) - 8} more" if len(changes) > 8 else ""
        raise UserInputError(
            f"config.yaml changed since checkpoint {checkpoint.name}: {shown}{more}",
            file=config_path,
            field="--resume",
            hint="undo the edit, or resume with --allow-config-change to continue with the new values",
        )
    return changes
