"""``tunedesk train --nproc N [--nnodes M --node-rank R --master HOST:PORT]``: the same run on
several processes through torch.distributed's launcher (torchrun, ``python -m
torch.distributed.run``), each running ``tunedesk train`` as one rank (``backends.jobs.dist_worker``).

What this process (the launcher) does:
- starts torchrun in a session of its own (``--standalone`` on one machine; a static rendezvous at
  ``--master`` on several) with ``--max-restarts 0``, OMP threads split between the processes
  unless ``OMP_NUM_THREADS`` is set, and a private folder for the ranks' statuses;
- SIGINT/SIGTERM: asks every rank to stop (``stop.request``): they stop at the same step, rank 0
  saves the checkpoint, and this process exits 130; a second signal kills them without one; if
  this process itself is killed, torchrun gets SIGTERM (Linux: ``PR_SET_PDEATHSIG``) and stops them;
- when a rank fails or dies, torchrun ends the others (its monitor notices a dead process within
  a second; those still running get SIGTERM and, 30 s later, SIGKILL). The launcher then names the
  rank that went first: one killed without a word (kind ``oom`` when the kernel's out-of-memory
  killer counted a kill in this cgroup meanwhile, else ``crash``) before one that failed by itself,
  before one that failed because it lost a peer. It writes that ``run_failed`` event, with
  ``rank``, into the run's ``events.jsonl`` and ``log.txt`` (and stdout with ``--json``), and
  exits 3. The last complete checkpoint is untouched (a checkpoint is written after every rank
  sent its state, so a rank lost on the way leaves no partial one).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from backends.errors import EXIT_OK, EXIT_RUN_FAILED, EXIT_STOPPED, EXIT_USER_INPUT, UserInputError
from backends.events import encode, make_event
from backends.jobs.dist_worker import DIST_DIR_ENV, FINAL_OUTCOMES, STOP_REQUEST, status_path

ROOT = Path(__file__).resolve().parents[2]  # the folder holding backends/ and desktop/
POLL_SECONDS = 0.25


def parse_master(master: str | None, nnodes: int) -> tuple[str, int] | None:
    """(host, port) of ``--master HOST:PORT``; None on one machine without it. Raises
    UserInputError when several machines are asked for without it, or for a bad address."""
    if master is None:
        if nnodes > 1:
            raise UserInputError(
                "--nnodes above 1 needs --master HOST:PORT (machine 0's address)", field="--master"
            )
        return None
    host, _, port = master.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserInputError(f"--master {master!r} is not HOST:PORT", field="--master")
    return host.strip("[]"), int(port)


def worker_args(args: argparse.Namespace) -> list[str]:
    """The ``tunedesk train`` arguments each rank gets: the user's, without the launch options."""
    out = ["--resume", str(args.resume)] if args.resume else ["--config", str(args.config)]
    for item in args.overrides or []:
        out += ["--set", item]
    if args.preset:
        out += ["--preset", args.preset]
    if args.json:
        out.append("--json")
    if getattr(args, "allow_config_change", False):
        out.append("--allow-config-change")
    return out


def torchrun_command(args: argparse.Namespace) -> list[str]:
    """``python -m torch.distributed.run ... -m desktop train ...`` for ``args`` (validated)."""
    nproc, nnodes = args.nproc or 1, args.nnodes or 1
    node_rank = args.node_rank or 0
    if nproc < 1 or nnodes < 1:
        raise UserInputError("--nproc and --nnodes must be at least 1", field="--nproc")
    if not 0 <= node_rank < nnodes:
        raise UserInputError(f"--node-rank must be 0..{nnodes - 1}", field="--node-rank")
    master = parse_master(args.master, nnodes)
    if getattr(sys, "frozen", False):
        raise UserInputError(
            "--nproc needs TuneDesk installed with Python (packaging/install.sh): the app bundle "
            "cannot start torchrun",
            field="--nproc",
        )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc)]
    if master is None:
        cmd += ["--standalone"]
    else:
        cmd += ["--nnodes", str(nnodes), "--node-rank", str(node_rank)]
        cmd += ["--master-addr", master[0], "--master-port", str(master[1])]
    cmd += ["--max-restarts", "0", "--monitor-interval", "0.5", "-m", "desktop", "train"]
    return cmd + worker_args(args)


def worker_env(folder: Path, nproc: int) -> dict[str, str]:
    """The ranks' environment: the status folder, this checkout importable, and the CPU threads
    shared out (``OMP_NUM_THREADS`` = cores / processes unless set: oversubscribed threads make
    every rank many times slower)."""
    env = dict(os.environ)
    env[DIST_DIR_ENV] = str(folder)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return env


def _end_with_parent() -> None:
    """In torchrun's process, before it starts (Linux): SIGTERM when this launcher dies, even by
    SIGKILL (the app's "End now"), so torchrun stops its ranks (they checkpoint and stop; 30 s later
    it kills them) instead of training on unwatched."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def oom_kills() -> int | None:
    """The kernel's out-of-memory kills counted in this process's memory cgroup (cgroup v2
    ``memory.events``, v1 ``memory.oom_control``, key ``oom_kill``), or None where not readable."""
    candidates: list[Path] = []
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == "":
                candidates.append(Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.events")
            elif "memory" in controllers.split(","):
                candidates.append(Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.oom_control")
    except (OSError, ValueError):
        pass
    # In a container the cgroup's own folder is mounted at the root.
    candidates += [Path("/sys/fs/cgroup/memory.events"), Path("/sys/fs/cgroup/memory/memory.oom_control")]
    for path in candidates:
        try:
            for row in path.read_text().splitlines():
                key, _, value = row.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            continue
    return None


def read_statuses(folder: Path, ranks: range) -> dict[int, dict[str, Any]]:
    """Each rank's last status (``backends.jobs.dist_worker.RankStatus``); absent when it wrote none."""
    out: dict[int, dict[str, Any]] = {}
    for rank in ranks:
        with contextlib.suppress(OSError, ValueError):
            out[rank] = json.loads(status_path(folder, rank).read_text(encoding="utf-8"))
    return out


def pid_alive(pid: int) -> bool:
    """``pid`` runs (and is not a zombie waiting for torchrun to reap it)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def launch(args: argparse.Namespace) -> int:
    """Run ``args`` (``tunedesk train`` with ``--nproc``/``--nnodes``) through torchrun; returns the
    exit code: 0 finished, 1 bad input, 3 a rank failed or died (``run_failed`` with ``rank``
    written), 130 stopped (see module docstring)."""
    cmd = torchrun_command(args)
    nproc, node_rank = args.nproc or 1, args.node_rank or 0
    ranks = range(node_rank * nproc, (node_rank + 1) * nproc)
    folder = Path(tempfile.mkdtemp(prefix="tunedesk-dist-"))
    signals = {"count": 0}
    proc: subprocess.Popen | None = None

    def on_signal(signum: int, frame: object) -> None:
        signals["count"] += 1
        (folder / STOP_REQUEST).touch()
        if signals["count"] > 1 and proc is not None:  # a second Ctrl-C: no checkpoint, at once
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    oom_before = oom_kills()
    gone_at: dict[int, float] = {}
    try:
        proc = subprocess.Popen(
            cmd, env=worker_env(folder, nproc), start_new_session=True, preexec_fn=_end_with_parent
        )
        while proc.poll() is None:
            for rank, status in read_statuses(folder, ranks).items():
                if "outcome" not in status and rank not in gone_at and not pid_alive(int(status["pid"])):
                    gone_at[rank] = time.time()
            time.sleep(POLL_SECONDS)
        statuses = read_statuses(folder, ranks)
        return outcome(args, statuses, ranks, gone_at, proc.returncode, oom_before, signals["count"] > 0)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        shutil.rmtree(folder, ignore_errors=True)


def outcome(
    args: argparse.Namespace,
    statuses: dict[int, dict[str, Any]],
    ranks: range,
    gone_at: dict[int, float],
    torchrun_exit: int,
    oom_before: int | None,
    stop_asked: bool,
) -> int:
    """The launcher's exit code from the ranks' statuses; writes the ``run_failed`` event naming
    the rank that failed first (see module docstring)."""
    ends = {r: statuses.get(r, {}).get("outcome") for r in ranks}
    if all(e == "finished" for e in ends.values()) and torchrun_exit == 0:
        return EXIT_OK
    if not statuses:
        print(
            f"run failed (crash): torchrun ended with exit {torchrun_exit} before any rank started; see above",
            file=sys.stderr,
        )
        return EXIT_RUN_FAILED
    culprit = first_failure(statuses, ranks, gone_at)
    run_dir = next((s.get("run_dir") for s in statuses.values() if s.get("run_dir")), None)
    if culprit is None:
        if any(e == "input" for e in ends.values()):
            return EXIT_USER_INPUT  # the ranks printed the message
        if stop_asked or any(e == "stopped" for e in ends.values()):
            if run_dir:
                print(
                    f"stopped at step {last_step(run_dir)}; resume with {resume_command(run_dir, args)}",
                    file=sys.stderr,
                )
            return EXIT_STOPPED
        print(f"run failed (crash): torchrun ended with exit {torchrun_exit}; see above", file=sys.stderr)
        return EXIT_RUN_FAILED
    rank, status = culprit
    event = failure_event(rank, status, run_dir, oom_kills(), oom_before, args)
    publish(event, run_dir, json_stdout=args.json)
    print(f"run failed ({event['kind']}) on rank {rank}: {event['message']}", file=sys.stderr)
    if event["hint"]:
        print(f"hint: {event['hint']}", file=sys.stderr)
    return EXIT_USER_INPUT if status.get("outcome") == "input" else EXIT_RUN_FAILED


def first_failure(
    statuses: dict[int, dict[str, Any]], ranks: range, gone_at: dict[int, float]
) -> tuple[int, dict[str, Any]] | None:
    """(rank, status) of the rank that failed first: one that ended without an outcome (killed),
    earliest gone first; else one that failed by itself (not kind ``crash``, which is what losing a
    peer looks like), earliest first; else any failure, earliest first. None when none failed."""
    killed = [r for r in ranks if statuses.get(r, {}).get("outcome") not in FINAL_OUTCOMES]
    if killed:
        rank = min(killed, key=lambda r: gone_at.get(r, float("inf")))
        return rank, statuses.get(rank, {"rank": rank})
    failed = [
        r for r in ranks if statuses[r]["outcome"] == "failed" or statuses[r].get("failure") is not None
    ]
    if not failed:
        return None
    failed.sort(key=lambda r: (statuses[r].get("kind") == "crash", statuses[r].get("ended", 0.0)))
    return failed[0], statuses[failed[0]]


def failure_event(
    rank: int,
    status: dict[str, Any],
    run_dir: str | None,
    oom_after: int | None,
    oom_before: int | None,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """The ``run_failed`` event for ``rank`` (its own, or for a killed rank one made here)."""
    step = last_step(run_dir)
    resume = resume_command(run_dir, args) if run_dir else "again"
    own = status.get("failure")
    if own is not None:
        fields = {k: own[k] for k in ("step", "kind", "message", "hint")}
        return make_event("run_failed", **fields, rank=rank)
    if status.get("outcome") == "failed":
        return make_event(
            "run_failed",
            step=step,
            kind=status.get("kind", "crash"),
            message=status.get("message", ""),
            hint=status.get("hint") or "",
            rank=rank,
        )
    oom = oom_after is not None and oom_before is not None and oom_after > oom_before
    pid = status.get("pid")
    who = f"the process of rank {rank}" + (f" (pid {pid})" if pid else "")
    why = (
        "killed by the kernel's out-of-memory killer"
        if oom
        else "ended without a word (killed by a signal, e.g. kill -9 or the out-of-memory killer)"
    )
    latest = _latest_checkpoint(run_dir)
    return make_event(
        "run_failed",
        step=step,
        kind="oom" if oom else "crash",
        message=f"{who} {why} after step {step}; torchrun ended the others",
        hint=(f"the last checkpoint ({latest}) is intact; " if latest else "")
        + f"resume with {resume}"
        + ("; lower training.batch_size or max_seq_length first" if oom else ""),
        rank=rank,
    )


def resume_command(run_dir: str, args: argparse.Namespace) -> str:
    """The command that resumes ``run_dir`` on the same processes (quoted for a message)."""
    cmd = f"tunedesk train --resume {run_dir} --nproc {args.nproc or 1}"
    if (args.nnodes or 1) > 1:
        cmd += f" --nnodes {args.nnodes} --node-rank {args.node_rank or 0} --master {args.master}"
    return f"`{cmd}`"


def last_step(run_dir: str | None) -> int:
    """The last ``step`` event's step in ``run_dir``'s events (0 when none)."""
    from backends.events import read_events

    if not run_dir:
        return 0
    steps = [e["step"] for e in read_events(Path(run_dir) / "events.jsonl") if e.get("event") == "step"]
    return int(steps[-1]) if steps else 0


def _latest_checkpoint(run_dir: str | None) -> Path | None:
    from backends.runs import RunDir

    return RunDir(Path(run_dir)).latest_checkpoint() if run_dir else None


def publish(event: dict[str, Any], run_dir: str | None, *, json_stdout: bool) -> None:
    """Append ``event`` to the run's ``events.jsonl`` and ``log.txt`` (when the folder exists on
    this machine) and print it on stdout with ``--json``."""
    line = encode(event)
    if run_dir and Path(run_dir).is_dir():
        from backends.durable import repair_torn_tail
        from backends.training.progress import LogFile

        events = Path(run_dir) / "events.jsonl"
        repair_torn_tail(events)
        with open(events, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        LogFile(Path(run_dir) / "log.txt")(event)
    if json_stdout:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
