"""Training shared by both backends: the loop, schedule, events, checkpoints and the CLI command.

Entry points: ``run_training(config, *, json_stdout=False, resume_dir=None, stop=None,
console=None) -> RunDir`` (one run end to end), ``cli_train(args) -> int`` (``tunedesk train``),
``make_engine(config)`` (the backend for ``config.backend``). The loop itself is
``backends.training.loop.TrainingLoop``; backends implement ``backends.training.engine.Engine``.
"""

from backends.training.run import cli_train, make_engine, resolve_data_paths, run_training

__all__ = ["cli_train", "make_engine", "resolve_data_paths", "run_training"]
