"""Resources running out and runs that go wrong: the disk filling up during a checkpoint (a real
small tmpfs), the memory limit (RLIMIT_AS, as `ulimit -v`) reached while the model loads and in
the middle of a run, a loss that diverges, and a worker the kernel killed. Each ends with the
design's exit code and kind, a message in words, and the last good checkpoint intact."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from backends import cli
from backends.runs import RunDir
from tests.test_train_loop import ROOT, make_config, steps, write_config

VOCAB = 49152  # the tiny Llama's (SmolLM2's) vocabulary
PATIENCE = 10  # backends.training.divergence.PATIENCE (not imported: these tests also run on older code)


@pytest.fixture
def small_disk(tmp_path):
    """A 320 KiB tmpfs: room for the tiny run's config, events and one checkpoint (~172 KB), not two."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=320k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_during_a_checkpoint_is_kind_disk_and_keeps_the_last_one(
    tiny_model_dir, small_disk, tmp_path, capsys
):
    runs = small_disk / "runs"
    raw = make_config(tiny_model_dir, runs, "full", max_steps=6, save_every=1, keep_checkpoints=3)
    code = cli.main(["train", "--config", str(write_config(tmp_path / "full.yaml", raw))])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "run failed (disk)" in err and "no space left on device" in err and "bytes free" in err, err
    assert "Traceback" not in err
    run = RunDir(runs / "full")
    failed = run.events()[-1]
    assert failed["event"] == "run_failed" and failed["kind"] == "disk" and failed["step"] == 2
    assert "checkpoints/step-2" in failed["message"] and "needs about" in failed["message"]
    assert "free space" in failed["hint"]
    assert [s for s, _ in run.checkpoints()] == [1]  # the last checkpoint is intact ...
    assert not [p for p in run.checkpoints_dir.iterdir() if p.name != "step-1"]  # ... and no half one
    from safetensors.numpy import load_file

    assert load_file(run.latest_checkpoint() / "adapter_model.safetensors")


LIMITED = textwrap.dedent(
    """
    import resource, sys
    import peft, torch, transformers  # what a run imports before it loads the model
    from backends import cli
    import backends.torch_backend.engine as engine

    def vm_bytes():
        for line in open("/proc/self/status"):
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024

    def limit(extra):
        resource.setrlimit(resource.RLIMIT_AS, (vm_bytes() + extra, resource.RLIM_INFINITY))

    mode, config = sys.argv[1], sys.argv[2]
    if mode == "load":
        limit(250 * 2**20)  # the run's own bookkeeping fits; SmolLM2's 540 MB of weights do not
    else:
        real, calls = engine.TorchEngine.train_step, []
        def train_step(self, micro, lr):
            calls.append(1)
            if len(calls) == 3:
                limit(4 * 2**20)  # from step 3 on, this process may grow by 4 MB only
            return real(self, micro, lr)
        engine.TorchEngine.train_step = train_step
    sys.exit(cli.main(["train", "--config", config, "--json"]))
    """
)


def _limited_run(mode: str, config: Path, tmp_path: Path) -> tuple[int, str, list[dict]]:
    proc = subprocess.run(
        [sys.executable, "-c", LIMITED, mode, str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        # A fixed mmap threshold: glibc then maps every large tensor afresh instead of reusing freed
        # heap, so the step after the limit is set really asks the kernel for memory.
        env={**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "131072"},
    )
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, proc.stderr, events


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads VmSize from /proc")
def test_memory_limit_while_the_model_loads_is_kind_oom_exit_3(smollm2_dir, tmp_path):
    raw = make_config(smollm2_dir, tmp_path / "runs", "oomload", max_steps=2)
    code, err, events = _limited_run("load", write_config(tmp_path / "oom.yaml", raw), tmp_path)
    assert code == 3, err[-3000:]
    assert "run failed (oom)" in err and "out of memory while loading the model" in err, err[-3000:]
    assert "Traceback" not in err
    failed = events[-1]
    assert failed["event"] == "run_failed" and failed["kind"] == "oom" and failed["hint"]


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads VmSize from /proc")
def test_memory_limit_in_the_middle_of_a_run_is_kind_oom_with_checkpoints_kept(tiny_model_dir, tmp_path):
    runs = tmp_path / "runs"
    # Batches of 16: a step's activations are then large enough that glibc maps them afresh (above
    # the mmap threshold) each step, so the limit set at step 3 is met there (with batches of 2 the
    # chunked loss keeps every allocation on reused heap and nothing ever asks the kernel).
    raw = make_config(
        tiny_model_dir, runs, "oomrun", max_steps=6, save_every=1, keep_checkpoints=5, batch_size=16
    )
    code, err, events = _limited_run("run", write_config(tmp_path / "oom.yaml", raw), tmp_path)
    assert code == 3, err[-3000:]
    assert "run failed (oom)" in err and "Traceback" not in err, err[-3000:]
    failed = events[-1]
    assert failed["event"] == "run_failed" and failed["kind"] == "oom" and failed["step"] == 2
    assert "batch_size" in failed["hint"]
    assert [s for s, _ in RunDir(runs / "oomrun").checkpoints()] == [1, 2]


def test_a_learning_rate_of_1000_ends_as_diverged_keeping_the_last_good_checkpoint(
    tiny_model_dir, tmp_path, capsys
):
    """lr 1e3 wrecks the tiny model in two steps: its loss sits at ln(49152) = 10.8027 with a zero
    gradient. Before: exit 0 and an adapter. Now: exit 3, kind diverged, a hint to lower the
    learning rate, the checkpoints of the diverging stretch removed and the one before it kept."""
    runs = tmp_path / "runs"
    raw = make_config(
        tiny_model_dir,
        runs,
        "diverge",
        max_steps=40,
        save_every=1,
        keep_checkpoints=1,
        learning_rate=1000.0,
        lr_scheduler="constant",
        warmup_ratio=0.0,
    )
    code = cli.main(["train", "--config", str(write_config(tmp_path / "d.yaml", raw))])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "run failed (diverged)" in err and "learning_rate" in err
    run = RunDir(runs / "diverge")
    events = run.events()
    failed = events[-1]
    assert failed["event"] == "run_failed" and failed["kind"] == "diverged"
    losses = [e["loss"] for e in steps(events)]
    assert failed["step"] == len(losses) < 40
    assert all(abs(x - math.log(VOCAB)) < 1e-3 for x in losses[-PATIENCE:])
    first_bad = failed["step"] - PATIENCE + 1
    kept = [s for s, _ in run.checkpoints()]
    assert kept == [first_bad - 1], kept  # the last checkpoint before the loss went wrong
    assert f"checkpoints/step-{first_bad - 1}" in failed["message"]
    assert not run.adapter_dir.exists()


def test_divergence_rules_on_loss_curves():
    """The three rules of backends/training/divergence.py on synthetic curves, and no alarm on
    ordinary noisy training."""
    from backends.training.divergence import PATIENCE as patience
    from backends.training.divergence import DivergenceMonitor

    assert patience == PATIENCE
    u = math.log(VOCAB)

    def first_alarm(losses, grads=None):
        m = DivergenceMonitor(VOCAB)
        for i, loss in enumerate(losses, start=1):
            if m.observe(i, loss, (grads or [1.0] * len(losses))[i - 1]):
                return i
        return None

    # 1. learned (3.3), then back at the uniform guess (SmolLM2 at lr 1e3)
    assert first_alarm([3.3, 31.7] + [u - 0.01] * 20) == 2 + PATIENCE - 1
    # 2. far above the start for many steps
    assert first_alarm([2.0, 2.1, 1.9] + [7.5] * 20) == 3 + PATIENCE
    # 3. dead at the uniform guess with zero gradients (a model that started near it)
    assert first_alarm([u - 0.02, u] + [u] * 20, [0.3, 2.4] + [0.0] * 20) == 2 + PATIENCE
    # a random model slowly learning, with noise and single spikes: no alarm
    rng = __import__("random").Random(0)
    normal = [u - 0.2 * math.log1p(i) + rng.uniform(-0.3, 0.3) for i in range(200)]
    normal[50] = normal[120] = u + 5
    assert first_alarm(normal) is None
    # fine-tuning a pretrained model: noisy around 2, one bad stretch shorter than PATIENCE
    tune = [2.0 + rng.uniform(-0.5, 0.5) for _ in range(100)]
    tune[40 : 40 + PATIENCE - 1] = [8.0] * (PATIENCE - 1)
    assert first_alarm(tune) is None
    # the state survives a checkpoint
    m = DivergenceMonitor(VOCAB)
    for i, loss in enumerate([3.3, 31.7, u, u], start=1):
        m.observe(i, loss, 1.0)
    restored = DivergenceMonitor.from_dict(json.loads(json.dumps(m.to_dict())), VOCAB)
    assert restored == m and restored.suspicious


def test_a_worker_killed_by_the_system_gets_a_message_about_memory():
    """A kernel OOM kill leaves exit 137 (SIGKILL) and no output: the app says what most likely
    happened and what to change, instead of only 'crashed'."""
    from desktop.worker import WorkerResult

    for code, crashed in ((9, True), (137, False)):
        text = WorkerResult(
            exit_code=code, crashed=crashed, stop_requested=False, final_event=None, log_tail=["step 3"]
        ).error_text()
        assert "ran out of memory" in text and "batch_size" in text, text
    stopped = WorkerResult(exit_code=9, crashed=True, stop_requested=True, final_event=None, log_tail=[])
    assert stopped.error_text() == ""
