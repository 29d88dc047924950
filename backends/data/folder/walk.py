"""Which files of a folder become training text, and why the others do not.

``walk_folder`` walks a code repository or a documents folder in a stable (sorted) order and
returns the files to read plus every file or folder it left out with a reason. Left out:

- whatever git would ignore: every ``.gitignore`` on the way down (nested ones included, read with
  ``pathspec``'s ``GitIgnoreSpec``, which follows git's rules: the deepest file with a matching
  pattern decides, a ``!pattern`` re-includes, an ignored folder is not entered) and
  ``.git/info/exclude``;
- vendored and generated folders (``VENDORED_DIRS``: node_modules, vendor, dist, build, .venv,
  __pycache__, ...), version-control folders, lockfiles (``LOCKFILES``), environment files
  (``.env``: secrets by design), symbolic links (they may leave the folder or loop);
- files that are neither a document nor source code (``kind_of``), and files over a size limit.

Binary content, generated markers and encodings are judged when a file is read
(``backends.data.folder.extract``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

# Folders of other people's code, build output, caches and environments.
VENDORED_DIRS = frozenset(
    {
        ".git", ".hg", ".svn", ".bzr", "node_modules", "bower_components", "jspm_packages", "vendor",
        "third_party", "dist", "build", "out", "target", ".venv", "venv", "env", ".env", "__pycache__",
        ".tox", ".nox", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".import_linter_cache",
        ".ipynb_checkpoints", ".eggs", "site-packages", ".next", ".nuxt", ".svelte-kit", ".gradle",
        ".idea", ".terraform", "Pods", "coverage", "htmlcov", ".cache", ".parcel-cache", ".yarn",
    }
)  # fmt: skip
# Dependency lockfiles: pinned versions and hashes, no language.
LOCKFILES = frozenset(
    {
        "package-lock.json", "npm-shrinkwrap.json", "yarn.lock", "pnpm-lock.yaml", "bun.lockb",
        "poetry.lock", "Pipfile.lock", "pdm.lock", "uv.lock", "Cargo.lock", "Gemfile.lock",
        "composer.lock", "go.sum", "flake.lock", "mix.lock", "packages.lock.json", "pubspec.lock",
        "Package.resolved", "conda-lock.yml",
    }
)  # fmt: skip
# Prose, read as it is.
DOC_SUFFIXES = frozenset({".md", ".markdown", ".txt", ".rst", ".adoc", ".org", ".tex"})
# Source code and configuration written by people.
CODE_SUFFIXES = frozenset(
    {
        ".py", ".pyi", ".js", ".mjs", ".cjs", ".jsx", ".ts", ".tsx", ".vue", ".svelte",
        ".go", ".rs", ".java", ".kt", ".kts", ".scala", ".c", ".h", ".cc", ".cpp", ".cxx", ".hpp",
        ".cs", ".fs", ".swift", ".m", ".mm", ".rb", ".php", ".pl", ".pm", ".lua", ".r", ".jl",
        ".hs", ".ml", ".mli", ".ex", ".exs", ".erl", ".clj", ".dart", ".zig", ".nim", ".sh",
        ".bash", ".zsh", ".fish", ".ps1", ".bat", ".sql", ".proto", ".graphql", ".css", ".scss",
        ".less", ".toml", ".yaml", ".yml", ".ini", ".cfg", ".conf", ".json", ".xml", ".cmake",
        ".gradle", ".tf", ".nix", ".jinja", ".j2", ".spec", ".mk",
    }
)  # fmt: skip
# Documents converted to text by an optional library (``pip install tunedesk[documents]``).
CONVERTED_SUFFIXES = {".pdf": "pdf", ".docx": "docx", ".html": "html", ".htm": "html"}
# Files without a suffix that are text by convention.
TEXT_NAMES = frozenset(
    {"readme", "license", "licence", "copying", "authors", "contributing", "changelog", "notice",
     "makefile", "dockerfile", "containerfile", "justfile", "procfile", "gemfile", "rakefile",
     "vagrantfile", "cmakelists.txt", "codeowners"}
)  # fmt: skip
MAX_FILE_BYTES = 1_000_000


def kind_of(path: Path) -> str | None:
    """'doc' (prose), 'code', 'pdf', 'docx', 'html', or None (not a document or source file)."""
    suffix = path.suffix.lower()
    if suffix in DOC_SUFFIXES:
        return "doc"
    if suffix in CODE_SUFFIXES:
        return "code"
    if suffix in CONVERTED_SUFFIXES:
        return CONVERTED_SUFFIXES[suffix]
    stem = path.name.lower()
    if stem in TEXT_NAMES or stem.split(".")[0] in ("readme", "license", "licence", "changelog"):
        return "doc"
    return None


@dataclass
class Skipped:
    """A file or folder left out: ``path`` relative to the root (a folder ends with '/'),
    ``reason`` a short key (see ``REASONS``) and ``detail`` in words."""

    path: str
    reason: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        """The JSON form."""
        return {"path": self.path, "reason": self.reason, "detail": self.detail}


REASONS = {
    "gitignore": "ignored by .gitignore",
    "vendored": "vendored or generated folder",
    "lockfile": "lockfile",
    "env_file": "environment file (holds secrets)",
    "symlink": "symbolic link",
    "not_text": "not a document or source file",
    "too_large": "too large",
    "binary": "binary content",
    "not_utf8": "not UTF-8 text",
    "generated": "generated or minified",
    "needs_library": "needs an optional library",
    "unreadable": "could not be read",
    "empty": "no text",
    "output": "the output file itself",
}


@dataclass
class Walk:
    """The outcome of ``walk_folder``: ``files`` as (relative path, kind) in walk order."""

    files: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


class _Ignores:
    """The stack of .gitignore specs from the root down to the current folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.specs: dict[str, tuple[pathspec.GitIgnoreSpec, str]] = {}
        exclude = root / ".git" / "info" / "exclude"
        if exclude.is_file():
            self.specs[""] = (self._read(exclude), ".git/info/exclude")

    @staticmethod
    def _read(file: Path) -> pathspec.GitIgnoreSpec:
        lines = file.read_text(encoding="utf-8", errors="replace").splitlines()
        return pathspec.GitIgnoreSpec.from_lines(lines)

    def enter(self, rel_dir: str) -> None:
        """Load ``rel_dir``'s own .gitignore, if any (``rel_dir`` '' is the root)."""
        file = self.root / rel_dir / ".gitignore"
        if file.is_file():
            spec = self._read(file)
            where = f"{rel_dir}/.gitignore" if rel_dir else ".gitignore"
            if rel_dir == "" and "" in self.specs:  # the root's file outranks info/exclude
                spec = pathspec.GitIgnoreSpec(list(self.specs[""][0].patterns) + list(spec.patterns))
            self.specs[rel_dir] = (spec, where)

    def why_ignored(self, rel_path: str, is_dir: bool) -> str | None:
        """The .gitignore file (and pattern) that ignores ``rel_path``, or None when none does."""
        parts = rel_path.split("/")
        for depth in range(len(parts) - 1, -1, -1):  # deepest folder first
            base = "/".join(parts[:depth])
            entry = self.specs.get(base)
            if entry is None:
                continue
            spec, where = entry
            sub = "/".join(parts[depth:]) + ("/" if is_dir else "")
            result = spec.check_file(sub)
            if result.include is None:
                continue
            if not result.include:
                return None
            pattern = (
                getattr(spec.patterns[result.index], "pattern", None) if result.index is not None else None
            )
            return f"{where}" + (f" (pattern {pattern!r})" if pattern else "")
        return None


def walk_folder(
    root: str | Path, *, max_file_bytes: int = MAX_FILE_BYTES, exclude: Path | None = None
) -> Walk:
    """The files under ``root`` worth reading, and what was left out (see the module docstring).

    ``exclude``: one more file to leave out (the output file when it lies inside ``root``).
    Paths are relative to ``root`` with '/' separators, sorted folder by folder.
    """
    root = Path(root)
    ignores = _Ignores(root)
    walk = Walk()
    excluded = exclude.resolve() if exclude is not None else None
    for current, dirs, files in os.walk(root, topdown=True, followlinks=False):
        rel_dir = Path(current).relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        ignores.enter(rel_dir)
        kept_dirs = []
        for name in sorted(dirs):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            full = Path(current) / name
            if full.is_symlink():
                walk.skipped.append(Skipped(rel + "/", "symlink", "symbolic link to a folder: not followed"))
            elif name in VENDORED_DIRS or name.endswith(".egg-info"):
                walk.skipped.append(Skipped(rel + "/", "vendored", f"{name}/: {REASONS['vendored']}"))
            elif (why := ignores.why_ignored(rel, is_dir=True)) is not None:
                walk.skipped.append(Skipped(rel + "/", "gitignore", f"ignored by {why}"))
            else:
                kept_dirs.append(name)
        dirs[:] = kept_dirs
        for name in sorted(files):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            full = Path(current) / name
            skipped = _judge(full, rel, name, ignores, max_file_bytes, excluded)
            if isinstance(skipped, Skipped):
                walk.skipped.append(skipped)
            else:
                walk.files.append((rel, skipped))
    return walk


def _judge(
    full: Path, rel: str, name: str, ignores: _Ignores, max_file_bytes: int, excluded: Path | None
) -> Skipped | str:
    """A file's kind, or why it is skipped."""
    if full.is_symlink():
        return Skipped(rel, "symlink", "symbolic link: not followed")
    if excluded is not None and full.resolve() == excluded:
        return Skipped(rel, "output", REASONS["output"])
    if (why := ignores.why_ignored(rel, is_dir=False)) is not None:
        return Skipped(rel, "gitignore", f"ignored by {why}")
    if name in LOCKFILES or name.endswith(".lock"):
        return Skipped(rel, "lockfile", "dependency lockfile: versions and hashes, no language")
    if name == ".env" or name.startswith(".env."):
        return Skipped(rel, "env_file", REASONS["env_file"])
    kind = kind_of(full)
    if kind is None:
        suffix = full.suffix.lower() or "no suffix"
        return Skipped(rel, "not_text", f"{REASONS['not_text']} ({suffix})")
    size = full.stat().st_size
    if size > max_file_bytes:
        return Skipped(rel, "too_large", f"{size:,} bytes, over the limit of {max_file_bytes:,}")
    return kind
