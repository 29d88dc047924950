"""Secrets found and removed from text before it becomes training data.

The finding is Yelp's ``detect-secrets`` (every plugin of its default settings: AWS, Azure, GitHub,
GitLab, OpenAI, Slack, Stripe, Twilio, JWT, private keys, basic-auth URLs, ``password = ...``
keywords, high-entropy base64 / hex strings, ...) with its false-positive filters on, run over a
file's text by its ``scan_file`` (the text is written to a private temporary file of the same
name, so converted documents are scanned as their text and file-type rules apply). TuneDesk only
decides what to cut:

- a line holding a secret is replaced by ``[REDACTED <kind>]`` (its indentation kept): the
  scanner's value is not always the whole secret (for a GitHub token it is the prefix), so the
  line goes;
- a private key drops every line from the flagged one to the matching ``-----END ...`` line (the
  scanner flags the first line only; the key's body is base64 lines), replaced by one line.

A ``Finding`` keeps the file, line and kind, never the value: reports and logs cannot leak it.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Finding:
    """One secret removed: ``path`` (relative), 1-based ``line`` in the file's text, ``kind``
    (detect-secrets' type name, e.g. 'AWS Access Key')."""

    path: str
    line: int
    kind: str

    def to_dict(self) -> dict[str, object]:
        """The JSON form (no secret value)."""
        return {"path": self.path, "line": self.line, "kind": self.kind}


@contextlib.contextmanager
def secret_scanner() -> Iterator[Path]:
    """detect-secrets' default settings (all plugins and filters) for the ``with`` block, and a
    private temporary folder for ``scrub_secrets``."""
    from detect_secrets.settings import default_settings

    with default_settings(), tempfile.TemporaryDirectory(prefix="tunedesk-secrets-") as tmp:
        yield Path(tmp)


def _scan(text: str, path: str, tmp: Path) -> dict[int, list[str]]:
    """{line: [kind, ...]} of the secrets detect-secrets finds in ``text`` (of file ``path``)."""
    from detect_secrets.core.scan import scan_file

    file = tmp / Path(path).name
    file.write_text(text, encoding="utf-8")
    found: dict[int, list[str]] = {}
    try:
        for secret in scan_file(str(file)):
            kinds = found.setdefault(secret.line_number, [])
            if secret.type not in kinds:
                kinds.append(secret.type)
    finally:
        file.unlink(missing_ok=True)
    return found


def scrub_secrets(text: str, path: str, tmp: Path) -> tuple[str, list[Finding]]:
    """``text`` of file ``path`` with its secrets removed (see the module docstring), and what was
    removed. ``tmp``: the folder ``secret_scanner()`` yields (call inside its ``with``)."""
    found = _scan(text, path, tmp)
    if not found:
        return text, []
    out: list[str] = []
    findings: list[Finding] = []
    in_key = False
    for number, line in enumerate(text.split("\n"), start=1):
        if in_key:  # the body of a private key (its base64 lines also count as high entropy)
            in_key = not ("-----END" in line and "KEY" in line)
            continue
        kinds = found.get(number, [])
        findings += [Finding(path, number, kind) for kind in kinds]
        if not kinds:
            out.append(line)
            continue
        indent = line[: len(line) - len(line.lstrip())]
        if "Private Key" in kinds:  # detect-secrets' name for its PrivateKeyDetector
            out.append(f"{indent}[REDACTED Private Key]")
            in_key = "-----END" not in line
            continue
        out.append(f"{indent}[REDACTED {', '.join(kinds)}]")
    return "\n".join(out), findings
