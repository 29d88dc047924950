"""``tunedesk data from-folder``: a dataset from a folder, with .gitignore respected, vendored and
binary files skipped, secrets removed, duplicates dropped; qa skeletons reported as unfilled.

The fake secrets are made at run time from random characters (nothing key-shaped is committed)."""

from __future__ import annotations

import json
import random
import re
import shutil
import string
import subprocess
from pathlib import Path

import pytest
import yaml

from backends.cli import main
from backends.data.check import check_file
from backends.data.folder.build import build_dataset
from backends.data.folder.chunks import split_text

ROOT = Path(__file__).resolve().parent.parent
HEADER = re.compile(r"^File: (\S+) \(lines (\d+)-(\d+)\)")


def fake_secrets(seed: int = 0) -> dict[str, str]:
    """An AWS access key id, a GitHub token and an RSA private key block, random each seed."""
    rng = random.Random(seed)
    upper = string.ascii_uppercase + string.digits
    alnum = string.ascii_letters + string.digits
    body = ["".join(rng.choice(alnum + "+/") for _ in range(64)) for _ in range(6)]
    dash = "-" * 5
    key = "\n".join(
        [f"{dash}BEGIN RSA PRIVATE" + f" KEY{dash}", *body, f"{dash}END RSA PRIVATE" + f" KEY{dash}"]
    )
    return {
        "aws": "AKIA" + "".join(rng.choice(upper) for _ in range(16)),
        "github": "ghp_" + "".join(rng.choice(alnum) for _ in range(36)),
        "key": key,
        "key_line": body[3],
    }


def plant_secrets(path: Path, seed: int = 0) -> dict[str, str]:
    """A config module that leaks three secrets; returns them."""
    s = fake_secrets(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        '"""Settings of the deploy helper."""\n\n'
        f'AWS_ACCESS_KEY_ID = "{s["aws"]}"\n'
        f'GITHUB_TOKEN = "{s["github"]}"\n'
        "REGION = 'eu-west-1'\n\n"
        f'DEPLOY_KEY = """\n{s["key"]}\n"""\n\n\n'
        "def region() -> str:\n    return REGION\n"
    )
    return s


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def sources(rows: list[dict], field: str = "text") -> set[str]:
    return {HEADER.match(r[field]).group(1) for r in rows}


def bodies(rows: list[dict], field: str = "text") -> list[str]:
    return [r[field].split("\n\n", 1)[1] for r in rows]


@pytest.fixture
def project(tmp_path) -> Path:
    """A small repository: docs, code, nested .gitignore, vendored and build folders, a lockfile,
    a binary, an exact copy and a near copy of a document, and planted secrets."""
    root = tmp_path / "proj"
    (root / "docs").mkdir(parents=True)
    (root / ".gitignore").write_text("*.log\nsecret_notes/\nbuild/\n")
    (root / "docs" / ".gitignore").write_text("drafts/\n!keep.log\n")
    guide = "# Guide\n\nIntro paragraph about the widget factory and how it ships crates of widgets.\n\n"
    guide += "## Install\n\n" + " ".join(f"Step {i}: run the installer with option {i}." for i in range(40))
    guide += "\n\n## Usage\n\nCall make_widget with a size and a colour to get one widget back.\n"
    (root / "docs" / "guide.md").write_text(guide)
    (root / "docs" / "guide_copy.md").write_text(guide)  # exact duplicate
    near = " ".join(f"Release {i} notes: the widget factory grew by {i} percent." for i in range(12))
    (root / "docs" / "notes.txt").write_text(near + " Final remark one.\n")
    (root / "docs" / "notes_v2.txt").write_text(near + " Final remark two.\n")  # near duplicate
    (root / "docs" / "drafts").mkdir()
    (root / "docs" / "drafts" / "draft.md").write_text("# Draft\n\nUNRELEASED-DRAFT-TEXT here.\n")
    (root / "docs" / "debug.log").write_text("IGNORED-LOG-TEXT in a log file.\n")
    (root / "docs" / "keep.log").write_text("kept log is not a document type\n")
    (root / "secret_notes").mkdir()
    (root / "secret_notes" / "n.md").write_text("IGNORED-NOTES-TEXT\n")
    (root / "build").mkdir()
    (root / "build" / "out.md").write_text("IGNORED-BUILD-TEXT\n")
    (root / "node_modules" / "lib").mkdir(parents=True)
    (root / "node_modules" / "lib" / "index.js").write_text("VENDORED-JS-TEXT = 1;\n")
    (root / "package-lock.json").write_text('{"lockfileVersion": 3}\n')
    (root / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0")
    (root / "blob.py").write_bytes(b"x = 1\n\0\0binary")
    (root / "src").mkdir()
    code = "\n\n".join(
        f"def widget_{i}(size: int) -> int:\n    '''Widget {i}.'''\n    return size * {i} + {i * 7}\n"
        for i in range(60)
    )
    (root / "src" / "widgets.py").write_text('"""Widgets."""\n\n' + code)
    return root


def test_from_folder_takes_documents_and_code_and_reports_what_it_left_out(project, tmp_path):
    secrets = plant_secrets(project / "src" / "settings.py")
    out = tmp_path / "data.jsonl"
    report = build_dataset(project, out, chunk_tokens=400)
    rows = rows_of(out)
    assert len(rows) == report["chunks"] and rows and set(rows[0]) == {"text"}
    taken = sources(rows)
    assert taken == {"docs/guide.md", "docs/notes.txt", "src/widgets.py", "src/settings.py"}
    skipped = {s["path"]: s["reason"] for s in report["skipped"]}
    assert skipped["docs/drafts/"] == "gitignore" and skipped["docs/debug.log"] == "gitignore"
    assert skipped["secret_notes/"] == "gitignore" and skipped["build/"] in ("gitignore", "vendored")
    assert skipped["node_modules/"] == "vendored" and skipped["package-lock.json"] == "lockfile"
    assert skipped["logo.png"] == "not_text" and skipped["blob.py"] == "binary"
    assert skipped["docs/keep.log"] == "not_text"  # re-included by `!keep.log`, but a .log is no document
    dump = out.read_text()
    for marker in ("UNRELEASED-DRAFT", "IGNORED-LOG", "IGNORED-NOTES", "IGNORED-BUILD", "VENDORED-JS"):
        assert marker not in dump
    # secrets: gone from the data, listed by file:line and kind, the value never in the report
    for value in (secrets["aws"], secrets["github"], secrets["key_line"], "PRIVATE KEY-----"):
        assert value not in dump and value not in json.dumps(report)
    kinds = {(s["path"], s["line"], s["kind"]) for s in report["secrets"]}
    assert ("src/settings.py", 3, "AWS Access Key") in kinds
    assert ("src/settings.py", 4, "GitHub Token") in kinds
    assert ("src/settings.py", 8, "Private Key") in kinds
    assert "def region() -> str:" in dump and "REGION = 'eu-west-1'" in dump
    # duplicates: the exact copy and the near copy are dropped, the first of each kept
    dups = {(d["source"].split(":")[0], d["kind"]) for d in report["duplicates"]}
    assert ("docs/guide_copy.md", "exact") in dups and ("docs/notes_v2.txt", "near") in dups
    found = bodies(rows)
    assert len(found) == len({" ".join(b.split()) for b in found})


def test_chunks_split_on_headings_and_definitions_and_keep_within_the_limit():
    doc = "# Guide\n\nIntro.\n\n## Install\n\n" + "word " * 400 + "\n\n## Usage\n\nUse it.\n"
    chunks = split_text(doc, "docs/guide.md", "doc", 100, lambda t: len(t.split()))
    assert [c.title for c in chunks][:2] == ["Guide", "Guide > Install"]
    assert chunks[-1].title == "Guide > Usage" and chunks[-1].body.startswith("## Usage")
    assert all(len(c.text().split()) <= 100 for c in chunks)
    code = "import os\nimport sys\n\n\ndef first():\n    return one + two + three + four + five\n\n\n"
    code += "class Second:\n    x = alpha + beta + gamma + delta + epsilon\n"
    chunks = split_text(code, "a.py", "code", 25, lambda t: len(t.split()))
    assert [c.title for c in chunks] == ["", "def first()", "class Second"]
    assert [(c.first_line, c.last_line) for c in chunks] == [(1, 2), (5, 6), (9, 10)]
    assert chunks[1].body == "def first():\n    return one + two + three + four + five"


def test_qa_mode_writes_a_skeleton_that_data_check_reports_as_unfilled(project, tmp_path):
    out = tmp_path / "qa.jsonl"
    report = build_dataset(project, out, "qa", chunk_tokens=128)
    rows = rows_of(out)
    assert set(rows[0]) == {"prompt", "completion", "context", "source"}
    assert rows[0]["prompt"] == rows[0]["completion"] == ""
    assert rows[0]["source"].split(":")[0] in rows[0]["context"]
    result = check_file(out)
    assert not result["ok"] and result["rows_read"] == report["chunks"]
    assert {p["field"] for p in result["problems"]} == {"completion"}
    assert all(p["reason"].startswith("unfilled") for p in result["problems"])
    rows[1].update(prompt="What does make_widget take?", completion="A size and a colour.")
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = check_file(out)
    assert result["ok"] and result["rows_kept"] == 1 and result["format"] == "prompt_completion"
    assert any(
        n.startswith(f"{report['chunks'] - 1} unfilled question-and-answer row") for n in result["notices"]
    )


def test_cli_from_folder_exit_codes(project, tmp_path, capsys):
    out = tmp_path / "d.jsonl"
    assert main(["data", "from-folder", str(project), "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["chunks"] == len(rows_of(out)) and report["token_count"].startswith("estimate")
    assert main(["data", "from-folder", str(project), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"to {out}" in text and "lockfile" in text
    assert main(["data", "from-folder", str(tmp_path / "nope"), "--out", str(out)]) == 1
    assert "nope: DIR: no such folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    (empty / "node_modules").mkdir(parents=True)
    assert main(["data", "from-folder", str(empty), "--out", str(out)]) == 1
    assert "no text to train on" in capsys.readouterr().err


@pytest.mark.slow
def test_from_folder_on_this_repository_leaves_no_secret_duplicate_or_ignored_file_and_trains(
    tmp_path, tiny_model_dir, capsys
):
    """The done-when of issue 17: this project's own repository, with a planted secret."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT, repo, ignore=shutil.ignore_patterns(".git", ".venv"), symlinks=True)
    planted = plant_secrets(repo / "tests" / "fixtures" / "deploy_settings.py", seed=17)
    marker = f"scratch-{random.Random().getrandbits(64):016x}"  # made here: this file is in the repo
    (repo / ".scratch").mkdir(exist_ok=True)
    (repo / ".scratch" / "notes.md").write_text(f"# Scratch\n\n{marker}\n")
    out = tmp_path / "repo.jsonl"
    assert main(["data", "from-folder", str(repo), "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = rows_of(out)
    dump = out.read_text()
    for value in (planted["aws"], planted["github"], planted["key_line"]):
        assert value not in dump
    assert {s["kind"] for s in report["secrets"] if s["path"] == "tests/fixtures/deploy_settings.py"} >= {
        "AWS Access Key",
        "GitHub Token",
        "Private Key",
    }
    found = bodies(rows)
    assert len(found) == len({" ".join(b.split()) for b in found}), "a duplicate chunk was written"
    assert marker not in dump
    # git itself is the judge of what .gitignore ignores
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    paths = sorted(sources(rows))
    check = subprocess.run(
        ["git", "-C", str(repo), "check-ignore", "--no-index", *paths], capture_output=True, text=True
    )
    assert check.stdout == "", f"ignored files in the dataset: {check.stdout}"
    assert "backends/data/pipeline.py" in paths and "README.md" in paths
    config = {
        "model": str(tiny_model_dir),
        "backend": "torch",
        "data": {"train_file": str(out), "validation_fraction": 0.0},
        "lora": {"rank": 2, "alpha": 4, "dropout": 0.0},
        "training": {
            "batch_size": 2,
            "max_seq_length": 128,
            "precision": "fp32",
            "eval_every": 0,
            "max_steps": 2,
        },
        "output": {"runs_dir": str(tmp_path / "runs"), "run_name": "repo"},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--json"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    steps = [e for e in events if e["event"] == "step"]
    assert len(steps) == 2 and all(e["loss"] > 0 for e in steps)
    assert events[-1]["event"] == "run_finished"


def test_word_and_html_are_read_as_text_and_a_missing_library_is_a_reason(tmp_path, monkeypatch):
    import docx

    folder = tmp_path / "docs"
    folder.mkdir()
    document = docx.Document()
    document.add_heading("Returns policy", level=1)
    document.add_paragraph("Parcels come back within thirty days, unopened, with the receipt.")
    document.save(folder / "policy.docx")
    (folder / "page.html").write_text(
        "<html><head><style>p{color:red}</style><script>var tracking = 1;</script></head><body>"
        "<h2>Opening hours</h2><p>Monday to Friday, nine to five.</p></body></html>"
    )
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 not really a pdf")
    out = tmp_path / "d.jsonl"
    report = build_dataset(folder, out)
    texts = {HEADER.match(r["text"]).group(1): r["text"] for r in rows_of(out)}
    assert "# Returns policy" in texts["policy.docx"] and "thirty days, unopened" in texts["policy.docx"]
    assert "## Opening hours" in texts["page.html"] and "Monday to Friday" in texts["page.html"]
    assert "tracking" not in texts["page.html"] and "color:red" not in texts["page.html"]
    assert {s["path"]: s["reason"] for s in report["skipped"]} == {"broken.pdf": "unreadable"}
    monkeypatch.setitem(__import__("sys").modules, "pypdf", None)  # as if the extra were not installed
    monkeypatch.setitem(__import__("sys").modules, "docx", None)
    report = build_dataset(folder, out)
    details = {s["path"]: s["detail"] for s in report["skipped"]}
    assert (
        details["broken.pdf"]
        == "a PDF needs the optional package 'pypdf' (pip install 'tunedesk[documents]')"
    )
    assert "python-docx" in details["policy.docx"] and report["files_taken"] == 1


def test_chunk_tokens_zero_is_refused_like_any_value_below_32(tmp_path, capsys):
    """`--chunk-tokens 0` is not taken as "the default": it is refused as -5 is, exit 1."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.md").write_text("# A\n\nSome words here.\n")
    rc = main(
        [
            "data",
            "from-folder",
            str(tmp_path / "src"),
            "--out",
            str(tmp_path / "o.jsonl"),
            "--chunk-tokens",
            "0",
        ]
    )
    assert rc == 1
    assert "at least 32" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()
