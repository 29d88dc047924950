"""A process that has imported TuneDesk's training stack once and forks a `tunedesk` command per
request, so a test can SIGKILL many real worker processes without paying the imports (~5 s on
a 2-core machine) each time. The forked child is an ordinary `tunedesk` process from then on:
``backends.cli.main(argv)`` with stdout and stderr in a file, ``os._exit`` with its exit code.

Protocol (JSON lines): the server says {"ready": true} after its imports; the test writes {"argv": [...], "log": PATH}; the server answers
{"pid": N} once the child runs and {"pid": N, "exit": CODE} when it ended (CODE is negative
for a signal, as in subprocess). One child at a time. POSIX only (fork).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def serve() -> None:
    import peft  # noqa: F401  (imported here once, shared with every forked child)
    import torch
    import transformers  # noqa: F401

    import backends.cli
    import backends.data  # noqa: F401
    import backends.torch_backend.engine  # noqa: F401
    import backends.training  # noqa: F401

    torch.set_num_threads(1)  # the same reduction order in every run: bit-identical results
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 3
            try:
                fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                code = backends.cli.main(request["argv"])
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"pid": pid, "exit": os.waitstatus_to_exitcode(status)}), flush=True)


class ForkServer:
    """The test side: ``start(argv, log)`` -> pid; ``wait()`` -> exit code (negative: signal)."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from tests.fork_server import serve; serve()"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        ready = self.proc.stdout.readline()  # after the imports, so runs are timed without them
        if not ready:
            raise RuntimeError(f"the fork server did not start (exit {self.proc.wait()})")

    def start(self, argv: list[str], log: Path) -> int:
        self.proc.stdin.write(json.dumps({"argv": argv, "log": str(log)}) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())["pid"]

    def wait(self) -> int:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the fork server died (exit {self.proc.wait()})")
        return json.loads(line)["exit"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
