"""No network: training, chat and adapter export run under strace, which records every connect()
of the process and its children; any one outside loopback and AF_UNIX fails the test. The hub's
offline switches are removed from the environment, so this proves the code itself asks for no
download (local files only), not the switches. strace comes from `bash packaging/install.sh
test` (apt-get, when missing and run as root); Linux only."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_train_loop import DEMO_DATA, ROOT, make_config, write_config

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="strace is Linux only"),
]

LOOPBACK = re.compile(r'inet_addr\("127\.|inet_pton\(AF_INET6, "::1"|sa_family=AF_UNIX|sa_family=AF_NETLINK')


def outside_connects(trace: Path) -> list[str]:
    """The connect() calls in an strace log that reach beyond this machine."""
    calls = [line for line in trace.read_text(errors="replace").splitlines() if "connect(" in line]
    return [line for line in calls if "sa_family=" in line and not LOOPBACK.search(line)]


def test_outside_connects_are_recognised(tmp_path):
    trace = tmp_path / "t.log"
    trace.write_text(
        '12 connect(3, {sa_family=AF_UNIX, sun_path="/run/x"}, 110) = 0\n'
        '12 connect(4, {sa_family=AF_INET, sin_port=htons(8000), sin_addr=inet_addr("127.0.0.1")}, 16) = 0\n'
        '12 connect(5, {sa_family=AF_INET, sin_port=htons(443), sin_addr=inet_addr("18.1.2.3")}, 16) = -1\n'
        '12 connect(6, {sa_family=AF_INET6, sin6_port=htons(443), inet_pton(AF_INET6, "2600::1", &sin6_addr)}, 28)\n'
    )
    assert [line.split("(")[1][0] for line in outside_connects(trace)] == ["5", "6"]


def test_train_chat_and_export_connect_to_nothing_outside(tiny_model_dir, tmp_path):
    strace = shutil.which("strace")
    assert strace, "strace is missing: `bash packaging/install.sh test` installs it (apt-get install strace)"
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(OMP_NUM_THREADS="1", TUNEDESK_HOME=str(tmp_path / "home"))
    data = tmp_path / "rows.jsonl"
    data.write_text(
        "\n".join(DEMO_DATA.read_text(encoding="utf-8").splitlines()[:8]) + "\n", encoding="utf-8"
    )
    raw = make_config(tiny_model_dir, tmp_path / "runs", "net", max_steps=2, data={"train_file": str(data)})
    config = write_config(tmp_path / "net.yaml", raw)
    run = tmp_path / "runs" / "net"
    commands = {
        "train": ["train", "--config", str(config)],
        "chat": [
            "chat",
            "--model",
            str(tiny_model_dir),
            "--adapter",
            str(run),
            "--prompt",
            "hi",
            "--max-new-tokens",
            "3",
        ],
        "export": ["export", "adapter", str(run), "--to", "mlx"],
    }
    for name, argv in commands.items():
        trace = tmp_path / f"{name}.strace"
        done = subprocess.run(
            [
                strace,
                "-f",
                "--seccomp-bpf",
                "-qq",
                "-e",
                "trace=connect",
                "-o",
                str(trace),
                sys.executable,
                "-m",
                "desktop",
                *argv,
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, f"{name}: {done.stderr[-3000:]}"
        assert trace.is_file()
        assert not outside_connects(trace), f"{name} tried the network: {outside_connects(trace)}"
    assert (run / "adapter-mlx" / "adapters.safetensors").is_file()
