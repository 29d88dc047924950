"""A test double of ``tunedesk export RUN --format F [--quant Q] --out DIR --json`` for the GUI tests
of the Export step: it speaks the design's events (``export_progress`` {stage, done, total},
``export_finished`` {path, format, quant, bytes} with the real command's ``file`` and ``name``) and writes like the real command (a temporary
folder renamed into place at the end), without any ML work. ``FAKE_EXPORT_MODE``: ``ok``,
``slow`` (waits between steps; SIGTERM removes the temporary folder and exits 130), ``fail``
(``export_failed`` and exit 1 with a message naming the run). Its arguments go to ``FAKE_EXPORT_ARGS`` (a file)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path


def emit(event: str, **fields) -> None:
    print(json.dumps({"v": 1, "event": event, "time": time.time(), **fields}), flush=True)


def main() -> int:
    args = sys.argv[1:]
    Path(os.environ["FAKE_EXPORT_ARGS"]).write_text(json.dumps(args))
    opts = dict(zip(args[2::2], args[3::2], strict=False))
    mode = os.environ.get("FAKE_EXPORT_MODE", "ok")
    if mode == "fail":
        message = f"{args[1]}: adapter: this run has no adapter"
        emit("export_failed", kind="input", message=message, hint="", exit_code=1)
        print(f"error: {message}", file=sys.stderr)
        return 1
    out = Path(opts["--out"])
    tmp = out.parent / f".{out.name}.partial"
    tmp.mkdir(parents=True)

    def stopped(*_) -> None:
        shutil.rmtree(tmp, ignore_errors=True)
        print("stopped", file=sys.stderr, flush=True)
        sys.exit(130)

    signal.signal(signal.SIGTERM, stopped)
    total = 4
    for done in range(total + 1):
        emit("export_progress", stage="quantize", done=done, total=total)
        (tmp / f"part-{done}").write_bytes(b"x" * 1000)
        time.sleep(0.6 if mode == "slow" else 0.02)
    fmt, quant = opts["--format"], opts.get("--quant")
    (tmp / "model.gguf").write_bytes(b"GGUF" + b"\0" * 4000)
    if fmt == "ollama":
        (tmp / "Modelfile").write_text("FROM ./model.gguf\n")
    tmp.rename(out)
    size = sum(p.stat().st_size for p in out.iterdir())
    main = out / ("Modelfile" if fmt == "ollama" else "model.gguf")
    name = Path(args[1]).name
    emit("export_finished", path=str(out), format=fmt, quant=quant, bytes=size, file=str(main), name=name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
