"""TuneDesk desktop app (PySide6). Never imports torch, transformers, peft, trl, datasets or mlx:
training and chat run in child processes that speak JSON lines (``backends.events``)."""
