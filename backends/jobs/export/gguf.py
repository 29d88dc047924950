"""``--format gguf``: the merged model as one GGUF file, by llama.cpp's own tools.

Pipeline (every file inside the export's temporary folder, the 16-bit ones removed at the end):

1. ``backends.jobs.export.merged.write_merged`` in f16 (bf16 for ``--quant bf16``);
2. llama.cpp's converter ``convert_hf_to_gguf.py`` (run as a child process with its own
   ``conversion`` package and ``gguf-py``) writes an F16/BF16 GGUF carrying the tokenizer, the
   special tokens and the run's chat template (``tokenizer.chat_template``), so llama.cpp's chat
   formats a conversation as training did;
3. for q8_0, q4_k_m, q5_k_m, q6_k: ``llama_model_quantize`` of llama-cpp-python (the llama.cpp
   library, in this process).

The converter is not part of the llama-cpp-python wheel: ``bash packaging/install.sh export``
unpacks it from the llama-cpp-python source package of the installed version into
``.venv/share/tunedesk/llama.cpp/`` (``TUNEDESK_LLAMA_CONVERTER`` points elsewhere).
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from backends.errors import RunFailed, UserInputError
from backends.jobs.export.source import ExportSource

Progress = Callable[[str, int, int], None]
CONVERTER_ENV = "TUNEDESK_LLAMA_CONVERTER"
CONVERTER_SCRIPT = "convert_hf_to_gguf.py"
INSTALL_HINT = (
    "install the export tools: `bash packaging/install.sh export` (builds llama.cpp from source: "
    "about 7 minutes on 2 idle cores, more on a busy machine)"
)
FTYPES = {"f16": 1, "q8_0": 7, "q4_k_m": 15, "q5_k_m": 17, "q6_k": 18, "bf16": 32}  # llama.h llama_ftype


def converter_dir() -> Path:
    """The folder holding ``convert_hf_to_gguf.py``, ``conversion/`` and ``gguf-py/``:
    ``$TUNEDESK_LLAMA_CONVERTER``, else ``<venv>/share/tunedesk/llama.cpp``. UserInputError with the
    install command when it is missing."""
    folder = Path(os.environ.get(CONVERTER_ENV) or Path(sys.prefix) / "share" / "tunedesk" / "llama.cpp")
    if not (folder / CONVERTER_SCRIPT).is_file() or not (folder / "gguf-py").is_dir():
        raise UserInputError(
            f"llama.cpp's GGUF converter is not installed (looked in {folder})", hint=INSTALL_HINT
        )
    return folder


@lru_cache(maxsize=4)
def known_architectures(folder: Path) -> frozenset[str]:
    """The Hugging Face architectures (``LlamaForCausalLM``...) the converter in ``folder`` knows,
    read from ``conversion/__init__.py``'s ``TEXT_MODEL_MAP`` without importing it."""
    source = (folder / "conversion" / "__init__.py").read_text(encoding="utf-8")
    for node in ast.parse(source).body:
        target = (
            node.target
            if isinstance(node, ast.AnnAssign)
            else (node.targets[0] if isinstance(node, ast.Assign) else None)
        )
        if isinstance(target, ast.Name) and target.id == "TEXT_MODEL_MAP" and node.value is not None:
            return frozenset(ast.literal_eval(node.value))
    raise UserInputError("cannot read the converter's list of architectures", file=folder / "conversion")


def check_ready(source: ExportSource) -> None:
    """Before writing: llama-cpp-python imports, the converter is installed and knows the base
    model's architecture. UserInputError naming what is missing."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        raise UserInputError(
            "GGUF export needs llama-cpp-python, which is not installed", hint=INSTALL_HINT
        ) from None
    folder = converter_dir()
    arch = source.architecture
    if arch not in known_architectures(folder):
        raise UserInputError(
            f"llama.cpp's GGUF converter does not know the architecture {arch!r} of this base model",
            file=source.base_dir / "config.json",
            field="architectures",
            hint="export --format merged instead (Hugging Face safetensors)",
        )


def convert(
    hf_dir: Path, outfile: Path, outtype: str, tensors: int, progress: Progress | None = None
) -> None:
    """Run llama.cpp's converter on the HF folder ``hf_dir`` into ``outfile`` (``outtype`` f16,
    bf16 or f32). ``tensors``: the expected count, for progress. RunFailed with the converter's last
    lines when it fails."""
    folder = converter_dir()
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(folder), str(folder / "gguf-py")]), TQDM_DISABLE="1"
    )
    env.pop("NO_LOCAL_GGUF", None)
    cmd = [
        sys.executable,
        str(folder / CONVERTER_SCRIPT),
        str(hf_dir),
        "--outfile",
        str(outfile),
        "--outtype",
        outtype,
    ]
    done = 0

    def count(line: str) -> None:
        nonlocal done
        if re.search(r"-->\s*\w+, shape", line):
            done += 1
            if progress is not None and done % 8 == 0:
                progress("convert", min(done, tensors), tensors)

    rc, tail = run_child(cmd, env, count)
    if rc != 0 or not outfile.is_file():
        raise RunFailed("model", "llama.cpp's GGUF converter failed:\n" + "\n".join(tail))
    if progress is not None:
        progress("convert", tensors, tensors)


# llama.cpp's quantiser in a child process: a stop (Ctrl-C, the app's Cancel = SIGTERM) ends it at
# once, which a ctypes call in this process would not allow, and its per-tensor log stays out of
# the user's terminal (its last lines are shown when it fails).
_QUANTIZE_CHILD = """
import ctypes, os, sys
import llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = int(sys.argv[3])
params.nthread = max(1, os.cpu_count() or 1)
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(params)))
"""


def run_child(
    cmd: list[str], env: dict[str, str] | None = None, on_line: Callable[[str], None] | None = None
) -> tuple[int, list[str]]:
    """Run ``cmd`` with its output captured line by line (``on_line`` sees each); returns (exit
    code, its last 15 lines). The child is killed when this process is stopped meanwhile."""
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    )
    tail: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail = (tail + [line.rstrip()])[-15:]
            if on_line is not None:
                on_line(line)
        rc = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return rc, tail


def quantize(src: Path, dst: Path, quant: str) -> None:
    """``llama_model_quantize`` of ``src`` (an F16/BF16 GGUF) into ``dst`` as ``quant``, in a child
    process. RunFailed with llama.cpp's last lines when it reports an error."""
    rc, tail = run_child([sys.executable, "-c", _QUANTIZE_CHILD, str(src), str(dst), str(FTYPES[quant])])
    if rc != 0 or not dst.is_file():
        raise RunFailed(
            "model", f"llama.cpp could not quantise the model to {quant} (code {rc}):\n" + "\n".join(tail)
        )


def write_gguf(source: ExportSource, out: Path, quant: str, progress: Progress | None = None) -> Path:
    """Write ``<name>-<quant>.gguf`` into the folder ``out``; returns its path (steps in the module
    docstring). ``quant``: f16, bf16, q8_0, q4_k_m, q5_k_m or q6_k."""
    from backends.jobs.export.merged import write_merged

    float_type = "bf16" if quant == "bf16" else "f16"
    merged = out / ".merged"
    merged.mkdir()
    write_merged(source, merged, float_type, progress)
    tensors = len(_tensor_names(merged))
    stem = re.sub(r"\s+", "-", source.name)  # no spaces: a Modelfile's FROM and shell commands take it bare
    final = out / f"{stem}-{quant}.gguf"
    base_gguf = final if quant == float_type else out / f".{stem}-{float_type}.gguf"
    convert(merged, base_gguf, float_type, tensors, progress)
    shutil.rmtree(merged)
    if base_gguf != final:
        if progress is not None:
            progress("quantize", 0, 1)
        quantize(base_gguf, final, quant)
        base_gguf.unlink()
        if progress is not None:
            progress("quantize", 1, 1)
    return final


def _tensor_names(folder: Path) -> list[str]:
    from backends.jobs.export.merged import _header

    return [k for f in sorted(folder.glob("*.safetensors")) for k in _header(f)]
