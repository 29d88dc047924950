"""Chat with a base model and trained adapters, on the PyTorch or the MLX backend.

- ``adapters``: find and check an adapter from its files (no ML library; the app uses it too);
- ``session``: what both backends share (template, sampling, streaming decode, stop, statistics);
- ``torch_generator`` / ``mlx_generator``: the backends (adapters loaded beside the base weights,
  never merged; switching adapters never reloads the base);
- ``loader``: model, backend and adapter for a session; ``memory``: the warning when a training
  run is active; ``validation``: a run's validation prompts for the comparison table;
- ``worker``: ``tunedesk chat --serve``, the JSON-lines protocol the app talks to;
- ``cli``: ``tunedesk chat`` (``cli_chat``).

This package's ``__init__`` imports nothing heavy, so the app can import ``adapters`` and
``memory`` without torch or mlx.
"""

from __future__ import annotations

import argparse


def cli_chat(args: argparse.Namespace) -> int:
    """``tunedesk chat`` (see ``backends.chat.cli``)."""
    from backends.chat.cli import cli_chat as run

    return run(args)


__all__ = ["cli_chat"]
