"""Durability of the run folder: files fsynced before the rename that marks a checkpoint or the
adapter complete; ``adapter/`` replaced without a moment of absence; a killed writer's leftovers
cleaned on the next start; the run lock taken (exclusively) before the model loads; a torn last
line of events.jsonl that does not swallow the next event."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from backends.config import config_from_dict
from backends.errors import RunStopped
from backends.events import read_events
from backends.jobs import run_training
from backends.runs import RunDir, atomic_dir
from tests.test_train_loop import ROOT, make_config

linux_only = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc/self/fd")


@linux_only
def test_checkpoint_and_adapter_files_are_fsynced_before_their_rename(tiny_model_dir, tmp_path, monkeypatch):
    """Every file of checkpoints/step-N and adapter/, and the folder itself, is fsynced before
    the rename that puts it in place (else a power cut can leave a 'complete' folder of empty
    files)."""
    log: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        log.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst, **kw):
        log.append(("rename", f"{src}\0{dst}"))
        return real_replace(src, dst, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    config = config_from_dict(
        make_config(tiny_model_dir, tmp_path / "runs", "sync", max_steps=2, save_every=1)
    )
    run = run_training(config, console=False)
    for final in (run.checkpoints_dir / "step-1", run.adapter_dir):
        i, tmp = next(
            (i, Path(v.split("\0")[0]))
            for i, (k, v) in enumerate(log)
            if k == "rename" and v.split("\0")[1] == str(final)
        )
        synced = {v for k, v in log[:i] if k == "fsync"}
        files = [p.relative_to(final) for p in final.rglob("*") if p.is_file()]
        assert files and len(files) >= 3
        missing = [str(f) for f in files if str(tmp / f) not in synced]
        assert not missing, f"{final.name}: not fsynced before the rename: {missing}"
        assert str(tmp) in synced, f"{final.name}: the folder itself was not fsynced"


def test_replacing_a_folder_never_leaves_a_moment_without_it(tmp_path, monkeypatch):
    """``adapter/`` (any atomic_dir target) exists at every instant of its replacement: after
    every rename the writer does, the folder is there, with the old or the new content."""
    final = tmp_path / "adapter"
    with atomic_dir(final) as tmp:
        (tmp / "weights").write_text("old")
    absent = []
    real_replace = os.replace

    def replace(src, dst, **kw):
        real_replace(src, dst, **kw)
        if not final.is_dir():
            absent.append((src, dst))

    monkeypatch.setattr(os, "replace", replace)
    for n in range(3):
        with atomic_dir(final) as tmp:
            (tmp / "weights").write_text(f"new {n}")
        assert (final / "weights").read_text() == f"new {n}"
    assert not absent, f"adapter/ was missing after these renames: {absent}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no .old-/.tmp- left


def _stopped_run(tiny_model_dir, tmp_path, name: str) -> RunDir:
    """A tiny run stopped (checkpoint saved) after its second step."""
    runs = tmp_path / "runs"
    config = config_from_dict(make_config(tiny_model_dir, runs, name, max_steps=5, save_every=0))
    stop = threading.Event()
    events = runs / name / "events.jsonl"

    def stop_after_step_2() -> None:
        while not any(e["event"] == "step" and e["step"] >= 2 for e in read_events(events)):
            time.sleep(0.02)
        stop.set()

    threading.Thread(target=stop_after_step_2, daemon=True).start()
    with pytest.raises(RunStopped):
        run_training(config, console=False, stop=stop)
    return RunDir(runs / name)


def test_resume_cleans_leftovers_keeps_a_torn_line_apart_and_locks_before_loading(
    tiny_model_dir, tmp_path, monkeypatch
):
    from backends.torch_backend.engine import TorchEngine

    run = _stopped_run(tiny_model_dir, tmp_path, "leftovers")
    stopped_step = run.events()[-1]["step"]
    # what a worker killed at the wrong moments leaves behind
    for leftover in (
        run.path / f".old-adapter-{os.getpid() + 1}",
        run.path / ".tmp-adapter-x1y2",
        run.checkpoints_dir / f".tmp-step-{stopped_step + 2}-abc",
    ):
        leftover.mkdir(parents=True)
        (leftover / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    with open(run.events_path, "a", encoding="utf-8") as fh:
        fh.write('{"v":1,"event":"step","time":1,"step":3,"lo')  # killed in the middle of a line

    # While the model loads, the run is already locked: a second process cannot take it.
    seen = {}
    real_setup = TorchEngine.setup

    def setup(self, config, model_dir):
        seen["holder"] = run.lock_holder()
        probe = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from pathlib import Path; from backends.runs import RunDir; RunDir(Path(sys.argv[1])).acquire_lock()",
                str(run.path),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        seen["second"] = (probe.returncode, probe.stderr)
        return real_setup(self, config, model_dir)

    monkeypatch.setattr(TorchEngine, "setup", setup)
    run_training(None, resume_dir=run.path, console=False)
    assert seen["holder"] == os.getpid()
    code, err = seen["second"]
    assert code != 0 and "already running" in err, err

    events = run.events()
    started = [e for e in events if e["event"] == "run_started"]
    assert [e["resumed_from"] for e in started] == [
        None,
        stopped_step,
    ]  # the event after the torn line survived
    assert events[-1]["event"] == "run_finished" and events[-1]["step"] == 5
    assert not [p.name for p in run.path.iterdir() if p.name.startswith((".old-", ".tmp-"))]
    assert not [p.name for p in run.checkpoints_dir.iterdir() if p.name.startswith((".old-", ".tmp-"))]
    assert not (run.path / "run.lock").exists()


def test_a_stale_lock_of_a_killed_worker_does_not_block_and_a_live_one_does(tmp_path):
    """The lock is the kernel's (flock), not the pid written in the file: a lock file left by a
    SIGKILLed worker whose pid now names another live process does not block a resume; a live
    holder does, by pid."""
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from backends.runs import RunDir; RunDir(Path(sys.argv[1])).acquire_lock(); "
            "print('held', flush=True); time.sleep(60)",
            str(run.path),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert run.lock_holder() == holder.pid
        with pytest.raises(Exception, match="already running"):
            run.acquire_lock()
    finally:
        holder.kill()
        holder.wait()
    # killed: the file still names its pid; write a live pid (pid reuse) into it: still free
    (run.path / "run.lock").write_text(f"{socket.gethostname()} {os.getppid()}\n")
    assert run.lock_holder() is None
    run.acquire_lock()
    try:
        assert run.lock_holder() == os.getpid()
    finally:
        run.release_lock()
    assert not (run.path / "run.lock").exists()
