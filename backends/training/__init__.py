"""Training shared by both backends: the loop, schedule, DPO math, progress and the Engine protocol.

The loop is ``backends.training.loop.TrainingLoop``; backends implement
``backends.training.engine.Engine``. A whole run (config -> model -> data -> engine -> run folder
-> loop) is a job, one floor up: ``backends.jobs.run_training`` / ``backends.jobs.cli_train``.
"""
