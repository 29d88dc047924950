"""`tunedesk data check` on a large JSONL file: peak memory and time (issue 17: 1 GB under 1 GB RSS).

Writes a JSONL file of ``--size-mb`` megabytes of chat rows (``messages``, about 2 KB each, random
words; a few malformed lines and rows holding U+2028 / U+0085 / form feeds) to ``--out`` (default
under /tmp, never the repository), then runs ``tunedesk data check FILE --model MODEL --json`` in a
child process and reports its peak resident memory (the child's ``ru_maxrss``), the wall time,
the throughput, the number of ``data_progress`` events it printed on stderr, and the ratio of
peak memory to file size (the peer: reading the file into memory would cost more than 1x).

    python benchmarks/data_check_large.py --size-mb 1024 --model SmolLM2-135M-Instruct
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

WORDS = (
    "the model learns from examples written by people who know the domain well and it answers "
    "questions about invoices orders refunds shipping passwords accounts settings privacy export "
    "data tables columns rows values reports dashboards alerts errors logs servers deploys builds"
).split()


def write_file(path: Path, size: int, seed: int = 0) -> int:
    """Write about ``size`` bytes of JSONL chat rows to ``path``; returns the number of lines."""
    rng = random.Random(seed)
    lines = 0
    written = 0
    with open(path, "w", encoding="utf-8") as fh:
        while written < size:
            lines += 1
            if lines % 100_000 == 0:
                text = '{"messages": [broken line\n'
            else:
                question = " ".join(rng.choices(WORDS, k=60))
                answer = " ".join(rng.choices(WORDS, k=280))
                if lines % 1000 == 0:
                    answer += " \u2028 \u0085 \x0c end"
                row = {
                    "messages": [
                        {"role": "user", "content": question},
                        {"role": "assistant", "content": answer},
                    ]
                }
                text = json.dumps(row, ensure_ascii=False) + "\n"
            fh.write(text)
            written += len(text.encode("utf-8"))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=1024)
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--out", default="/tmp/tunedesk-bench/large.jsonl")
    parser.add_argument("--keep", action="store_true", help="keep the generated file")
    args = parser.parse_args()
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = int(args.size_mb * 2**20)
    if not path.exists() or abs(path.stat().st_size - size) > 2**20:
        start = time.monotonic()
        lines = write_file(path, size)
        print(
            f"wrote {path}: {path.stat().st_size / 2**20:.0f} MiB, {lines} lines in {time.monotonic() - start:.0f} s"
        )
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [sys.executable, "-m", "desktop", "data", "check", str(path), "--model", args.model, "--json"]
    start = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    took = time.monotonic() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux: KiB
    events = [line for line in proc.stderr.splitlines() if '"data_progress"' in line]
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        print(proc.stderr[-3000:])
        return 1
    result = json.loads(proc.stdout)
    file_size = path.stat().st_size
    print(
        json.dumps(
            {
                "file_bytes": file_size,
                "rows_read": result.get("rows_read"),
                "rows_kept": result.get("rows_kept"),
                "problem_count": result.get("problem_count"),
                "seconds": round(took, 1),
                "mb_per_second": round(file_size / 2**20 / took, 2),
                "peak_rss_bytes": peak,
                "peak_rss_over_file_size": round(peak / file_size, 3),
                "progress_events": len(events),
                "under_1_gib": peak < 2**30,
            }
        )
    )
    if not args.keep:
        path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
