"""Prompts from a run's own validation data, with their reference answers, for "compare on
validation prompts" (base reply vs tuned reply vs reference).

The rows are exactly the run's validation split: the data pipeline (``prepare_data``) is run again
with the run's ``config.yaml`` (same file, format, seed and fraction), and the examples it holds
out are mapped back to their source rows through ``Example.row``. The prompt is the conversation
before the row's last assistant turn (a preference row's prompt), the reference is that turn (the
chosen answer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backends.errors import UserInputError
from backends.runs import RunDir


def validation_prompts(run_dir: str | Path, tokenizer: Any, n: int = 5) -> dict[str, Any]:
    """Up to ``n`` prompts of the run's validation split, in the split's order.

    Returns ``{"source": "validation"|"train", "file": str, "prompts": [{"row": int,
    "messages": [...], "reference": str}, ...], "note": str|None}``; when the run has no
    validation split (fraction 0, too few rows) the first training rows are used and ``note`` says
    so. Raises UserInputError for a folder that is not a run, data that no longer reads, or plain
    text data (it has no prompts to answer).
    """
    from backends.data import prepare_data
    from backends.data.formats import Preference, parse_row
    from backends.data.pipeline import read_rows

    if n < 1:
        raise UserInputError(f"must be >= 1 (got {n})", field="n")
    run = RunDir(Path(run_dir).expanduser())
    config = run.load_config()
    data = prepare_data(config, tokenizer)
    note = None
    if data.validation:
        examples, source = data.validation, "validation"
        path = Path(config.data.validation_file or config.data.train_file)
    else:
        examples, source = data.train, "train"
        path = Path(config.data.train_file)
        note = "this run has no validation split; these are training prompts"
    fmt, rows = read_rows(path, config.data.format, config.data.columns)
    if fmt == "text":
        raise UserInputError(
            "this run trained on plain text, which has no prompts and answers to compare",
            file=path,
            field="data.format",
        )
    by_row = dict(rows)
    prompts = []
    for ex in examples[:n]:
        parsed = parse_row(fmt, by_row[ex.row], system_prompt=config.data.system_prompt)
        if isinstance(parsed, Preference):
            messages, reference = parsed.prompt, parsed.chosen
        else:
            last = max(i for i, m in enumerate(parsed) if m["role"] == "assistant")
            messages, reference = parsed[:last], parsed[last]["content"]
        prompts.append({"row": ex.row, "messages": [dict(m) for m in messages], "reference": reference})
    return {"source": source, "file": str(path), "prompts": prompts, "note": note}
