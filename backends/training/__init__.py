"""Training shared by both backends: the loop, schedule, events, checkpoints and the CLI command."""
