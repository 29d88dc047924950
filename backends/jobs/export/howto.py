"""How to run an export in other tools: the commands a user types next (Ollama, LM Studio,
llama.cpp, mlx-lm, transformers), from the ``export_finished`` fields alone. No ML library and no
Qt: the CLI prints them (``run.next_steps``), the app shows each with a Copy button."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any


def ollama_name(run_name: str) -> str:
    """A model name Ollama accepts (lower-case letters, digits, ``-``, ``_``, ``.``) from a run's."""
    return re.sub(r"[^a-z0-9._-]+", "-", run_name.lower()).strip("-.") or "tuned"


def run_commands(result: dict[str, Any], registered: bool = False) -> list[tuple[str, str]]:
    """(tool, commands) a user types next to run the export described by ``result`` (the
    ``export_finished`` fields: ``path``, ``format``, ``file``, ``name``) in another tool; the
    app shows each with a Copy button. ``registered``: ``ollama create`` already ran."""
    path, fmt, q = Path(result["path"]), result["format"], shlex.quote
    if fmt in ("gguf", "ollama"):
        gguf = Path(result.get("file") or path)
        if gguf.suffix != ".gguf":  # ollama: ``file`` is the Modelfile
            gguf = next(iter(sorted(path.glob("*.gguf"))), path / "model.gguf")
        cd = f"cd {q(str(gguf.parent))}\n"
        steps = []
        if fmt == "ollama":
            name = result.get("ollama_name") or result.get("name") or ollama_name(path.name)
            create = "" if registered else f"{cd}ollama create {name} -f Modelfile\n"
            steps.append(("Ollama", f"{create}ollama run {name}"))
        return [
            *steps,
            ("LM Studio", f"lms import {q(str(gguf))}\n# or copy the file into ~/.lmstudio/models/tunedesk/"),
            (
                "llama.cpp",
                f"{cd}llama-cli -m {q(gguf.name)} -cnv\nllama-server -m {q(gguf.name)} --port 8080",
            ),
        ]
    if fmt == "mlx":
        where = q(str(path))
        return [("mlx-lm", f"mlx_lm.chat --model {where}\nmlx_lm.generate --model {where} --prompt 'Hello'")]
    return [
        ("TuneDesk", f"tunedesk serve --model {q(str(path))}"),
        (
            "transformers",
            "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
            f"model = AutoModelForCausalLM.from_pretrained({str(path)!r})\n"
            f"tokenizer = AutoTokenizer.from_pretrained({str(path)!r})",
        ),
    ]
