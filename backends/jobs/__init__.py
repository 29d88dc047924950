"""Jobs: what a user starts (train, demo) orchestrated over the engines, one floor above them.

Floors, low to high (pyproject.toml's import-linter ``layers`` contract checks them):
``backends.data`` < ``backends.training`` (the shared loop and the ``Engine`` protocol) <
engines (``backends.torch_backend``, ``backends.mlx_backend``) < jobs (``backends.jobs``,
``backends.chat``) < ``backends.cli`` < ``desktop``.

Entry points: ``run_training(config, *, json_stdout=False, resume_dir=None, stop=None,
console=None) -> RunDir`` (one run end to end, ``backends.jobs.train``), ``cli_train(args)``
(``tunedesk train``), ``cli_demo(args)`` (``tunedesk demo``, ``backends.jobs.demo``),
``select_backend(requested) -> (backend, torch device or None)`` and ``make_engine(config)``
(``backends.jobs.backend``: the one place that turns ``backend: auto|torch|mlx`` into an engine,
for training and chat alike). ``tunedesk serve`` is ``backends.jobs.serve.cli_serve`` (the OpenAI
wire format: ``backends.jobs.openai_api``); ``tunedesk export --format`` is ``backends.jobs.export``.
"""

from backends.jobs.backend import make_engine, select_backend
from backends.jobs.train import cli_train, resolve_data_paths, run_training

__all__ = ["cli_train", "make_engine", "resolve_data_paths", "run_training", "select_backend"]
