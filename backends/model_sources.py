"""Models already on this machine in other tools' folders, found and named without a download.

- Hugging Face cache: ``$HF_HUB_CACHE`` or ``$HF_HOME/hub`` or ``~/.cache/huggingface/hub``, one
  ``models--ORG--NAME/snapshots/REV/`` folder per revision (``refs/main`` names the current one).
  Reference: ``hf:ORG/NAME`` (optionally ``@REV``).
- LM Studio: ``~/.lmstudio/models`` and ``~/.cache/lm-studio/models``, ``PUBLISHER/REPO/`` holding
  GGUF files (or an MLX/HF folder). Reference: ``lmstudio:PUBLISHER/REPO[/FILE.gguf]``.
- Ollama: ``$OLLAMA_MODELS`` or ``~/.ollama/models``; ``manifests/registry.ollama.ai/NAMESPACE/NAME/TAG``
  is a JSON image manifest whose layer of media type ``application/vnd.ollama.image.model`` names the
  GGUF blob by digest (``sha256:HEX`` -> ``blobs/sha256-HEX``). Reference: ``ollama:NAME[:TAG]``
  (tag ``latest`` by default; ``ollama:USER/NAME:TAG`` outside the ``library`` namespace).

A Hub download (``hf:ORG/NAME`` with ``download=True``) goes through huggingface_hub's
``snapshot_download`` into the same cache (resumable: interrupted files are continued), and only
when the user asks for it. This module imports no ML library.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from backends.errors import UserInputError

SCHEMES = ("hf", "lmstudio", "ollama")
OLLAMA_REGISTRY = "registry.ollama.ai"
OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
# Files a download fetches: weights as safetensors only (never pickle), config and tokenizer.
DOWNLOAD_PATTERNS = [
    "*.safetensors",
    "*.safetensors.index.json",
    "*.json",
    "*.jinja",
    "tokenizer.model",
    "merges.txt",
    "vocab.json",
    "*.tiktoken",
]


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache folder (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else the default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"
    return Path(home).expanduser() / "hub"


def lmstudio_dirs() -> list[Path]:
    """LM Studio's model folders (current and older default)."""
    return [Path.home() / ".lmstudio" / "models", Path.home() / ".cache" / "lm-studio" / "models"]


def ollama_dir() -> Path:
    """Ollama's model folder (``OLLAMA_MODELS`` or ``~/.ollama/models``)."""
    return Path(os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models").expanduser()


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def _hf_snapshot(repo_dir: Path, revision: str | None) -> Path | None:
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return None
    if revision is None:
        ref = repo_dir / "refs" / "main"
        revision = ref.read_text(encoding="utf-8").strip() if ref.is_file() else None
    if revision is not None:
        candidate = snapshots / revision
        return candidate if (candidate / "config.json").is_file() else None
    found = [s for s in snapshots.iterdir() if (s / "config.json").is_file()]
    return max(found, key=lambda s: s.stat().st_mtime) if found else None


def _find_hf() -> Iterator[dict[str, Any]]:
    root = hf_cache_dir()
    if not root.is_dir():
        return
    for repo_dir in sorted(root.glob("models--*")):
        snapshot = _hf_snapshot(repo_dir, None)
        if snapshot is None or not any(snapshot.glob("*.safetensors")):
            continue
        repo = repo_dir.name[len("models--") :].replace("--", "/", 1)
        yield {"ref": f"hf:{repo}", "source": "Hugging Face cache", "kind": "hf", "path": str(snapshot)}


def _find_lmstudio() -> Iterator[dict[str, Any]]:
    for root in lmstudio_dirs():
        if not root.is_dir():
            continue
        for repo_dir in sorted(p for p in root.glob("*/*") if p.is_dir()):
            repo = f"{repo_dir.parent.name}/{repo_dir.name}"
            if (repo_dir / "config.json").is_file() and any(repo_dir.glob("*.safetensors")):
                yield {"ref": f"lmstudio:{repo}", "source": "LM Studio", "kind": "hf", "path": str(repo_dir)}
            for gguf in sorted(repo_dir.glob("*.gguf")):
                if gguf.name.startswith("mmproj"):  # vision projector, not a language model
                    continue
                yield {
                    "ref": f"lmstudio:{repo}/{gguf.name}",
                    "source": "LM Studio",
                    "kind": "gguf",
                    "path": str(gguf),
                }


def _ollama_blob(manifest: Path) -> Path | None:
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for layer in data.get("layers") or []:
        if isinstance(layer, dict) and layer.get("mediaType") == OLLAMA_MODEL_LAYER:
            digest = str(layer.get("digest", ""))
            return ollama_dir() / "blobs" / digest.replace(":", "-", 1)
    return None


def _find_ollama() -> Iterator[dict[str, Any]]:
    root = ollama_dir() / "manifests" / OLLAMA_REGISTRY
    if not root.is_dir():
        return
    for manifest in sorted(root.glob("*/*/*")):
        blob = _ollama_blob(manifest) if manifest.is_file() else None
        if blob is None or not blob.is_file():
            continue
        namespace, name, tag = manifest.parent.parent.name, manifest.parent.name, manifest.name
        ref = f"{name}:{tag}" if namespace == "library" else f"{namespace}/{name}:{tag}"
        yield {"ref": f"ollama:{ref}", "source": "Ollama", "kind": "gguf", "path": str(blob)}


def find_models() -> list[dict[str, Any]]:
    """Models in the HF cache, LM Studio's and Ollama's folders: ``ref`` (what ``models import``
    takes), ``source``, ``kind`` (``gguf`` | ``hf``), ``path`` and ``size`` (bytes)."""
    found = [*_find_hf(), *_find_lmstudio(), *_find_ollama()]
    for item in found:
        item["size"] = _size(Path(item["path"]))
    return found


def is_reference(text: str) -> bool:
    """True for ``hf:...``, ``lmstudio:...`` or ``ollama:...`` (not a Windows drive like ``C:``)."""
    scheme, sep, _ = text.partition(":")
    return bool(sep) and scheme in SCHEMES


def resolve_reference(ref: str, *, download: bool = False) -> tuple[Path, str]:
    """The local file or folder a reference names and a default store name for it.

    Raises UserInputError naming the folder searched when the model is not there (with a hint to
    ``--download`` for ``hf:``), or when a download is asked for while offline.
    """
    scheme, _, rest = ref.partition(":")
    rest = rest.strip()
    if not rest:
        raise UserInputError(f"empty model reference {ref!r}", hint="e.g. hf:ORG/NAME or ollama:NAME:TAG")
    if scheme == "hf":
        return _resolve_hf(rest, download)
    if scheme == "ollama":
        return _resolve_ollama(rest)
    return _resolve_lmstudio(rest)


def _resolve_hf(rest: str, download: bool) -> tuple[Path, str]:
    repo, _, revision = rest.partition("@")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise UserInputError(f"not a Hugging Face repository id: {repo!r}", hint="hf:ORG/NAME")
    repo_dir = hf_cache_dir() / f"models--{repo.replace('/', '--')}"
    snapshot = _hf_snapshot(repo_dir, revision or None)
    if download:
        snapshot = download_snapshot(repo, revision or None)
    if snapshot is None:
        raise UserInputError(
            f"{repo} is not in the Hugging Face cache",
            file=repo_dir,
            hint="pass --download to fetch it from the Hub (needs a connection)",
        )
    return snapshot, repo.split("/")[1]


def _resolve_ollama(rest: str) -> tuple[Path, str]:
    name, _, tag = rest.partition(":")
    tag = tag or "latest"
    namespace, _, short = name.rpartition("/")
    manifest = ollama_dir() / "manifests" / OLLAMA_REGISTRY / (namespace or "library") / short / tag
    if not manifest.is_file():
        raise UserInputError(f"Ollama has no model {name}:{tag} here", file=manifest, hint="`ollama pull` it")
    blob = _ollama_blob(manifest)
    if blob is None or not blob.is_file():
        raise UserInputError(f"the Ollama manifest names no model blob that exists ({blob})", file=manifest)
    return blob, short if tag == "latest" else f"{short}-{tag}"


def _resolve_lmstudio(rest: str) -> tuple[Path, str]:
    parts = rest.split("/")
    roots = [r for r in lmstudio_dirs() if r.is_dir()]
    for root in roots:
        target = root.joinpath(*parts)
        if target.is_file():
            return target, target.stem
        if target.is_dir():
            if (target / "config.json").is_file():
                return target, target.name
            ggufs = sorted(g for g in target.glob("*.gguf") if not g.name.startswith("mmproj"))
            if len(ggufs) == 1:
                return ggufs[0], ggufs[0].stem
            if ggufs:
                raise UserInputError(
                    f"LM Studio holds {len(ggufs)} GGUF files for {rest}; name one",
                    file=target,
                    hint=f"e.g. lmstudio:{rest}/{ggufs[0].name}",
                )
    raise UserInputError(
        f"LM Studio has no model {rest}", file=(roots or lmstudio_dirs())[0], hint="`tunedesk models find`"
    )


def _refuse_offline(repo: str, what: str) -> None:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise UserInputError(
            f"cannot {what} {repo}: HF_HUB_OFFLINE is set", hint="unset HF_HUB_OFFLINE to allow downloads"
        )


def hub_files(repo: str, revision: str | None = None) -> tuple[list[dict[str, Any]], Path]:
    """What a download of ``repo`` would fetch, without fetching the weights: the files matching
    ``DOWNLOAD_PATTERNS`` as ``{"path", "size"}`` (bytes, from the Hub's file list), and the local
    path of its ``config.json`` (fetched into the HF cache: a few KB, enough for the memory plan).
    Raises UserInputError when offline, or when the Hub does not know the repository."""
    _refuse_offline(repo, "look up")
    from fnmatch import fnmatch

    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        tree = list(HfApi().list_repo_tree(repo, recursive=True, revision=revision))
        config = hf_hub_download(repo, "config.json", revision=revision, cache_dir=hf_cache_dir())
    except HfHubHTTPError as exc:
        if getattr(exc.response, "status_code", None) in (401, 404):
            raise UserInputError(
                f"the Hugging Face Hub has no model {repo} (or it is private or gated)",
                hint="check the name on huggingface.co (ORG/NAME)",
            ) from None
        raise UserInputError(f"cannot look up {repo}: {exc}", hint="check the connection") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:  # no connection, a malformed answer
        raise UserInputError(
            f"cannot look up {repo}: {exc}", hint="check the name and the connection"
        ) from None
    files = [
        {"path": f.path, "size": int(f.size)}
        for f in tree
        if getattr(f, "size", None) is not None and any(fnmatch(f.path, p) for p in DOWNLOAD_PATTERNS)
    ]
    return files, Path(config)


def download_snapshot(repo: str, revision: str | None = None) -> Path:
    """Fetch ``repo``'s safetensors weights, config and tokenizer from the Hub into the HF cache with
    huggingface_hub (progress bars on stderr; an interrupted download resumes); returns the
    snapshot folder. Raises UserInputError when offline (``HF_HUB_OFFLINE``) or the Hub refuses."""
    _refuse_offline(repo, "download")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        path = snapshot_download(
            repo, revision=revision, allow_patterns=DOWNLOAD_PATTERNS, cache_dir=hf_cache_dir()
        )
    except (HfHubHTTPError, OSError, ValueError, KeyError, TypeError) as exc:  # also a malformed answer
        raise UserInputError(
            f"download of {repo} failed: {exc}", hint="check the name and the connection"
        ) from None
    return Path(path)
