"""Human-readable views of the training events: ``log.txt`` lines and the stderr progress bar.

Both are listeners of ``backends.events.EventSink``: they format events, they never compute
anything the events do not carry.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, TextIO


def format_duration(seconds: float | None) -> str:
    """``1h02m``, ``3m05s``, ``42s``; ``?`` for None."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def _num(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_event(event: dict[str, Any]) -> str:
    """One line describing an event, for ``log.txt`` and the console."""
    name = event["event"]
    if name == "step":
        mem = event.get("memory") or {}
        rss = mem.get("rss")
        dev = mem.get("device_allocated")
        return (
            f"step {event['step']}: loss {_num(event['loss'], '.4f')}, lr {_num(event['learning_rate'], '.3g')}, "
            f"grad norm {_num(event['grad_norm'], '.3f')}, epoch {_num(event['epoch'], '.2f')}, "
            f"{_num(event['tokens_per_second'], '.0f')} tokens/s, elapsed {format_duration(event['elapsed'])}, "
            f"ETA {format_duration(event['eta'])}, RSS {_num(rss and rss / 2**20, '.0f')} MiB"
            + (f", device {dev / 2**20:.0f} MiB" if dev is not None else "")
        )
    if name == "run_started":
        resumed = event.get("resumed_from")
        return (
            f"run started: {event['model']} ({event['method']}) on {event['backend']}/{event['device']}"
            f" {event.get('precision', '')}, {event['params_trainable']:,} of {event['params_total']:,} "
            f"parameters trainable, {event['max_steps']} steps"
            + (f", resumed from step {resumed}" if resumed is not None else "")
            + f"; run folder {event['run_dir']}"
        )
    if name == "eval":
        return f"eval at step {event['step']}: validation loss {_num(event['val_loss'], '.4f')}"
    if name == "forgetting":
        return (
            f"forgetting check at step {event.get('step')}: drift score {_num(event['score'], '.3f')} "
            f"({event['verdict']}), KL {_num(event['kl_mean'], '.4f')} nats/token, general-text perplexity "
            f"{_num(event['ppl_base'], '.2f')} -> {_num(event['ppl_tuned'], '.2f')}, "
            f"{event['answers_changed']} of {event.get('probes')} probe answers changed"
        )
    if name == "checkpoint":
        return f"checkpoint at step {event['step']}: {event['path']}"
    if name == "stopped":
        return f"stopped at step {event['step']}; checkpoint {event['checkpoint']}"
    if name == "run_finished":
        return (
            f"finished at step {event['step']}: train loss {_num(event['train_loss'], '.4f')}, "
            f"validation loss {_num(event['val_loss'], '.4f')}; adapter {event['adapter']}"
        )
    if name == "run_failed":
        return f"FAILED ({event['kind']}) at step {event['step']}: {event['message']} Hint: {event['hint']}"
    if name == "log":
        return f"{event['level']}: {event['message']}"
    return f"{name}: " + ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("v", "event", "time"))


class LogFile:
    """Appends one formatted, timestamped line per event to ``log.txt`` (flushed per line)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __call__(self, event: dict[str, Any]) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.get("time", time.time())))
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(f"{stamp} {format_event(event)}\n")


class ConsoleProgress:
    """The console view when events do not go to stdout: on a terminal, a tqdm bar with loss,
    tokens/s and ETA on ``stream`` (stderr) and the other events as lines above it; when the
    stream is not a terminal (a log file, a pipe, CI), plain lines instead of bar redraws, one
    every 5% of the steps and at the last one."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.bar: Any = None
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self.total = 0
        self.every = 1

    def __call__(self, event: dict[str, Any]) -> None:
        name = event["event"]
        if name == "run_started":
            self.close()
            self.total = int(event["max_steps"])
            self.every = max(1, self.total // 20)
            if self.interactive:
                from tqdm import tqdm

                self.bar = tqdm(
                    total=self.total,
                    initial=event.get("resumed_from") or 0,
                    file=self.stream,
                    unit="step",
                    dynamic_ncols=True,
                    bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt}{postfix}",
                )
            self._write(format_event(event))
        elif name == "step":
            status = (
                f"loss {_num(event['loss'], '.4f')}, {_num(event['tokens_per_second'], '.0f')} tok/s, "
                f"ETA {format_duration(event['eta'])}"
            )
            if self.bar is not None:
                self.bar.set_postfix_str(status, refresh=False)
                self.bar.update(event["step"] - self.bar.n)
            elif event["step"] % self.every == 0 or event["step"] >= self.total:
                percent = 100 * event["step"] / self.total if self.total else 100
                self._write(f"step {event['step']}/{self.total} ({percent:.0f}%), {status}")
        else:
            self._write(format_event(event))
            if name in ("run_finished", "run_failed", "stopped"):
                self.close()

    def _write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        """Close the bar (leaves its last state on screen)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
