"""``tunedesk data from-folder DIR --out FILE.jsonl [--mode text|qa]``: a dataset from a folder.

Walk (``walk``) -> read (``extract``) -> scrub secrets (``secrets``) -> chunk (``chunks``) ->
drop duplicates (``dedup``) -> write JSONL rows (``skeleton``: ``{"text"}`` in text mode, a
prompt/completion skeleton with the chunk as ``context`` in qa mode).

``build_dataset`` returns the report (a JSON-ready dict, ``--json`` prints it): ``out``, ``mode``,
``files_taken`` (count), ``taken`` ([{path, chunks}]), ``skipped`` ([{path, reason, detail}]),
``skipped_by_reason`` ({reason: count}), ``secrets`` ([{path, line, kind}], never the value),
``secrets_by_kind``, ``duplicates`` ([{source, same_as, kind, similarity}]), ``duplicates_exact``,
``duplicates_near``, ``chunks`` (rows written), ``tokens`` (their total), ``token_count`` (how tokens
were counted), ``chunk_tokens`` (the limit per chunk).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backends.data.folder.chunks import Chunk, estimate_tokens, split_text, tokenizer_counter
from backends.data.folder.chunks import Counter as TokenCounter
from backends.data.folder.dedup import dedupe
from backends.data.folder.extract import extract_text
from backends.data.folder.secrets import scrub_secrets, secret_scanner
from backends.data.folder.skeleton import qa_row
from backends.data.folder.walk import MAX_FILE_BYTES, REASONS, Skipped, walk_folder
from backends.errors import EXIT_OK, UserInputError

MODES = ("text", "qa")
CHUNK_TOKENS = 512
MIN_CHUNK_TOKENS = 8
SHOWN = 20


def _row(chunk: Chunk, mode: str) -> dict[str, str]:
    return {"text": chunk.text()} if mode == "text" else qa_row(chunk.text(), chunk.source)


def build_dataset(
    root: str | Path,
    out: str | Path,
    mode: str = "text",
    *,
    tokenizer: Any | None = None,
    chunk_tokens: int = CHUNK_TOKENS,
    max_file_bytes: int = MAX_FILE_BYTES,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write the dataset of folder ``root`` to ``out`` (JSONL, replaced atomically) and return the
    report (module docstring). ``tokenizer``: count tokens with it (else ``estimate_tokens``).
    Raises UserInputError (exit 1) when ``root`` is not a folder, ``mode`` is unknown, or no text
    is left (the message gives the skip reasons)."""
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise UserInputError(
            "no such folder" if not root.exists() else "not a folder", file=root, field="DIR"
        )
    if mode not in MODES:
        raise UserInputError(f"unknown mode {mode!r}; use text or qa", field="--mode")
    if chunk_tokens < 32:
        raise UserInputError("must be at least 32", field="--chunk-tokens")
    count: TokenCounter = tokenizer_counter(tokenizer) if tokenizer is not None else estimate_tokens
    walk = walk_folder(root, max_file_bytes=max_file_bytes, exclude=out)
    skipped = list(walk.skipped)
    chunks: list[Chunk] = []
    findings = []
    taken: dict[str, int] = {}
    with secret_scanner() as scratch:
        for k, (rel, kind) in enumerate(walk.files, start=1):
            if progress and (k % 50 == 0 or k == len(walk.files)):
                progress(f"read {k}/{len(walk.files)} files")
            text, failure = extract_text(root / rel, kind)
            if failure is not None:
                skipped.append(Skipped(rel, *failure))
                continue
            assert text is not None
            text, found = scrub_secrets(text, rel, scratch)
            findings += found
            own = [
                c
                for c in split_text(text, rel, "code" if kind == "code" else "doc", chunk_tokens, count)
                if count(c.body) >= MIN_CHUNK_TOKENS
            ]
            if not own:
                skipped.append(Skipped(rel, "empty", f"no text (fewer than {MIN_CHUNK_TOKENS} tokens)"))
                continue
            taken[rel] = len(own)
            chunks += own
    kept, duplicates = dedupe(chunks)
    if not kept:
        reasons = ", ".join(f"{n} {REASONS[r]}" for r, n in Counter(s.reason for s in skipped).most_common())
        raise UserInputError(
            f"no text to train on: {len(skipped)} file(s) or folder(s) skipped ({reasons or 'the folder is empty'})",
            file=root,
        )
    per_file = Counter(c.path for c in kept)
    tokens = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for chunk in kept:
                tokens += count(chunk.text())
                fh.write(json.dumps(_row(chunk, mode), ensure_ascii=False) + "\n")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {
        "root": str(root),
        "out": str(out),
        "mode": mode,
        "files_taken": len(per_file),
        "taken": [{"path": p, "chunks": n} for p, n in per_file.items()],
        "skipped": [s.to_dict() for s in skipped],
        "skipped_by_reason": dict(Counter(s.reason for s in skipped).most_common()),
        "secrets": [f.to_dict() for f in findings],
        "secrets_by_kind": dict(Counter(f.kind for f in findings).most_common()),
        "duplicates": [d.to_dict() for d in duplicates],
        "duplicates_exact": sum(d.kind == "exact" for d in duplicates),
        "duplicates_near": sum(d.kind == "near" for d in duplicates),
        "chunks": len(kept),
        "tokens": tokens,
        "token_count": "tokenizer" if tokenizer is not None else "estimate (characters / 3)",
        "chunk_tokens": chunk_tokens,
    }


def format_report(report: dict[str, Any]) -> str:
    """The human-readable report: what was taken, skipped (with reasons) and scrubbed."""
    lines = [
        f"wrote {report['chunks']:,} rows ({report['mode']} mode, ~{report['tokens']:,} tokens by "
        f"{report['token_count']}) from {report['files_taken']} files to {report['out']}"
    ]
    skipped = report["skipped"]
    if skipped:
        by = ", ".join(f"{n} {REASONS.get(r, r)}" for r, n in report["skipped_by_reason"].items())
        lines.append(f"skipped {len(skipped)} files or folders: {by}")
        lines += [f"  {s['path']}: {s['detail']}" for s in skipped[:SHOWN]]
        if len(skipped) > SHOWN:
            lines.append(f"  ... and {len(skipped) - SHOWN} more (--json lists all)")
    secrets = report["secrets"]
    if secrets:
        by = ", ".join(f"{n} {k}" for k, n in report["secrets_by_kind"].items())
        lines.append(f"removed {len(secrets)} secret(s): {by}")
        lines += [f"  {s['path']}:{s['line']}: {s['kind']}" for s in secrets[:SHOWN]]
        if len(secrets) > SHOWN:
            lines.append(f"  ... and {len(secrets) - SHOWN} more (--json lists all)")
    else:
        lines.append("no secrets found")
    lines.append(
        f"dropped {report['duplicates_exact']} exact and {report['duplicates_near']} near-duplicate chunk(s)"
    )
    if report["mode"] == "qa":
        lines.append("next: fill in prompt and completion of each row (context holds the source text)")
    return "\n".join(lines)


def cli_from_folder(args: argparse.Namespace) -> int:
    """Entry of ``tunedesk data from-folder``: writes the dataset, prints the report."""
    tokenizer = None
    if args.model:
        from backends import models
        from backends.data.templates import load_tokenizer

        tokenizer = load_tokenizer(
            models.resolve_model(args.model, progress=lambda m: print(m, file=sys.stderr))
        )
    report = build_dataset(
        args.dir,
        args.out,
        args.mode,
        tokenizer=tokenizer,
        chunk_tokens=CHUNK_TOKENS if args.chunk_tokens is None else args.chunk_tokens,
        max_file_bytes=args.max_file_size or MAX_FILE_BYTES,
        progress=lambda m: print(m, file=sys.stderr),
    )
    print(json.dumps(report, ensure_ascii=False) if args.json else format_report(report))
    return EXIT_OK
