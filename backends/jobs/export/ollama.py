"""``--format ollama``: a folder Ollama imports with ``ollama create NAME -f Modelfile``.

It holds the GGUF (``backends.jobs.export.gguf``) and a ``Modelfile``:

- ``FROM ./<file>.gguf``;
- ``TEMPLATE``: the run's chat template as a Go ``text/template`` over ``.Messages`` (the syntax
  Ollama reads), built by ``backends.jobs.export.template.go_template`` and checked to render what
  training rendered;
- ``PARAMETER stop`` for every end-of-turn token (``<|im_end|>``...), so replies stop;
- ``SYSTEM``: the run's ``data.system_prompt`` when it had one (Ollama puts it first when a chat
  has no system message, as training did);
- the default sampling (``temperature``, ``top_p``).

``--register NAME`` then runs ``ollama create NAME -f Modelfile`` when ``ollama`` is on PATH.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from backends.errors import RunFailed, UserInputError
from backends.jobs.export.source import ExportSource

Progress = Callable[[str, int, int], None]
MODELFILE = "Modelfile"
DEFAULT_SAMPLING = {"temperature": 0.7, "top_p": 0.9}


def _quoted(text: str, what: str) -> str:
    if '"""' in text:
        raise UserInputError(f'the {what} contains """, which a Modelfile cannot quote', field=what)
    return f'"""{text}"""'


def modelfile_text(source: ExportSource, gguf_name: str) -> str:
    """The Modelfile of ``source`` whose ``FROM`` is ``./gguf_name``. Raises UserInputError when the
    run's chat template cannot be written as an Ollama TEMPLATE."""
    from backends.data.templates import load_tokenizer, model_template
    from backends.jobs.export.template import (
        TemplateNotPerMessage,
        end_of_turn_tokens,
        go_template,
        turn_parts,
    )

    tokenizer = load_tokenizer(source.base_dir)
    template = source.chat_template or model_template(tokenizer)
    if not template:
        raise UserInputError(
            "the run has no chat template, so Ollama would not know the chat format",
            file=source.adapter.path,
            field="chat_template",
        )
    try:
        parts = turn_parts(tokenizer, template)
    except TemplateNotPerMessage as exc:
        raise UserInputError(
            f"{exc.reason}, so no Ollama TEMPLATE equals it",
            file=source.adapter.path / "chat_template.jinja",
            hint="export --format gguf: llama.cpp and LM Studio use the template inside the GGUF",
        ) from None
    lines = [
        "# Made by TuneDesk from run " + source.name,
        f"FROM ./{gguf_name}",
        "TEMPLATE " + _quoted(go_template(parts), "chat template"),
    ]
    if source.system_prompt:
        lines.append("SYSTEM " + _quoted(source.system_prompt, "data.system_prompt"))
    for token in end_of_turn_tokens(tokenizer, template):
        lines.append(f'PARAMETER stop "{token}"')
    for key, value in DEFAULT_SAMPLING.items():
        lines.append(f"PARAMETER {key} {value}")
    return "\n".join(lines) + "\n"


def write_ollama(source: ExportSource, out: Path, quant: str, progress: Progress | None = None) -> Path:
    """The GGUF and the Modelfile in the folder ``out``; returns the Modelfile's path. The Modelfile
    is made first, so a template Ollama cannot take fails before the long conversion."""
    from backends.jobs.export.gguf import write_gguf

    text = modelfile_text(source, f"{source.name}-{quant}.gguf")
    gguf = write_gguf(source, out, quant, progress)
    (out / MODELFILE).write_text(
        text.replace(f"FROM ./{source.name}-{quant}.gguf", f"FROM ./{gguf.name}"), encoding="utf-8"
    )
    return out / MODELFILE


def register(folder: Path, name: str) -> None:
    """``ollama create NAME -f Modelfile`` in ``folder``. UserInputError when ``ollama`` is not on
    PATH; RunFailed with its output when it fails."""
    exe = shutil.which("ollama")
    if exe is None:
        raise UserInputError(
            "ollama is not on PATH, so the model was exported but not registered",
            field="--register",
            hint=f"install Ollama, then: cd {folder} && ollama create {name} -f {MODELFILE}",
        )
    proc = subprocess.run([exe, "create", name, "-f", MODELFILE], cwd=folder, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RunFailed("model", f"ollama create failed: {(proc.stderr or proc.stdout).strip()[-2000:]}")
