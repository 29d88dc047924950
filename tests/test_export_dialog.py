"""The Export step of the app: sizes expected before an export (from files alone), the dialog opened
from the Runs page driving a child export through its events (progress, finished, how to run it),
Cancel leaving nothing behind, a failure shown in words, and "Chat with this result" / "Export…"
offered on the Train page for a finished run.

The child here is a test double (tests/fake_export.py) that speaks the export command's events:
these are GUI tests of the page. The last test runs the real ``tunedesk export --format`` once that
command exists (skipped until then)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtGui import QGuiApplication

import desktop.worker
from backends.events import make_event
from backends.jobs.export.howto import run_commands
from backends.jobs.export.run import next_steps
from backends.jobs.export.source import plan_export
from desktop.export_dialog import ExportDialog
from desktop.main_window import MainWindow
from desktop.pages.model_page import format_bytes
from tests.chat_adapters import _write_run

ROOT = Path(__file__).resolve().parent.parent
FAKE = Path(__file__).with_name("fake_export.py")


def safetensors_zeros(path: Path, name: str, shape: list[int], dtype: str = "BF16") -> None:
    """A valid safetensors file holding one tensor of zeros (2-byte dtypes)."""
    n = 2 * shape[0] * shape[1]
    header = json.dumps({name: {"dtype": dtype, "shape": shape, "data_offsets": [0, n]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * n)


def fake_model(folder: Path, hidden: int = 576, inter: int = 1536, rows: int = 1000) -> Path:
    """A model folder with a config and one safetensors file of ``rows x hidden`` bf16 weights."""
    folder.mkdir(parents=True)
    config = {"hidden_size": hidden, "intermediate_size": inter, "torch_dtype": "bfloat16"}
    (folder / "config.json").write_text(json.dumps(config))
    safetensors_zeros(folder / "model.safetensors", "w", [rows, hidden])
    return folder


def fake_run(runs: Path, model_dir: Path, name: str = "support-bot") -> Path:
    """A finished run folder whose adapter names ``model_dir`` as its base model."""
    run = runs / name
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    safetensors_zeros(run / "adapter" / "adapter_model.safetensors", "lora_A.weight", [8, 4])
    _write_run(run, model_dir, "{{ messages }}", "torch")
    return run


@pytest.fixture
def run(tunedesk_home, tmp_path):
    return fake_run(tunedesk_home / "runs", fake_model(tmp_path / "base"))


@pytest.fixture
def fake_child(monkeypatch, tmp_path):
    """Make the app's child commands run tests/fake_export.py; returns the file of its arguments."""
    args_file = tmp_path / "fake-args.json"
    monkeypatch.setenv("FAKE_EXPORT_ARGS", str(args_file))
    monkeypatch.setenv("FAKE_EXPORT_MODE", "ok")
    monkeypatch.setattr(desktop.worker, "worker_command", lambda args: (sys.executable, [str(FAKE), *args]))
    return args_file


def test_default_quant_follows_the_layer_widths(qtbot, tunedesk_home, tmp_path):
    small = ExportDialog(fake_run(tunedesk_home / "runs", fake_model(tmp_path / "small"), "a"))
    wide_model = fake_model(tmp_path / "wide", hidden=2048, inter=8192, rows=10)
    wide = ExportDialog(fake_run(tunedesk_home / "runs", wide_model, "b"))
    qtbot.addWidget(small)
    qtbot.addWidget(wide)
    assert small.quant() == "q8_0" and wide.quant() == "q4_k_m"  # 576 is no multiple of 256
    small.set_choice("merged")
    assert small.quant() is None and not small.quant_box.isEnabled()
    assert "bf16 as the base model" in small.estimate_label.text()


def test_estimate_is_the_commands_own_and_matches_the_real_model(qtbot, smollm2_dir, tmp_path):
    run = fake_run(tmp_path / "runs", Path(smollm2_dir))
    dialog = ExportDialog(run)
    qtbot.addWidget(dialog)
    dialog.set_choice("merged")  # the base model's own precision (f32 in the model store)
    dry = subprocess.run(
        [sys.executable, "-m", "desktop", "export", str(run), "--format", "merged", "--dry-run", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert f"about <b>{format_bytes(plan['bytes'])}</b>" in dialog.estimate_label.text()
    assert dialog.out_dir() == Path(plan["path"])
    weights = sum(p.stat().st_size for p in Path(smollm2_dir).glob("*.safetensors"))
    assert abs(plan["bytes"] - weights) / weights < 0.02, (plan["bytes"], weights)


def test_how_to_run_commands_name_the_file(tmp_path):
    out = tmp_path / "My Run export"
    result = {"path": str(out), "format": "ollama", "file": str(out / "Modelfile"), "name": "my-run"}
    (out).mkdir()
    (out / "model.gguf").write_bytes(b"GGUF")
    steps = dict(run_commands(result))
    assert steps["Ollama"] == f"cd '{out}'\nollama create my-run -f Modelfile\nollama run my-run"
    assert dict(run_commands(result, registered=True))["Ollama"] == "ollama run my-run"
    assert f"lms import '{out / 'model.gguf'}'" in steps["LM Studio"]
    assert steps["llama.cpp"].startswith(f"cd '{out}'\nllama-cli -m model.gguf -cnv\n")
    assert "llama-server -m model.gguf" in steps["llama.cpp"]
    gguf = dict(run_commands({**result, "format": "gguf", "file": str(out / "model.gguf")}))
    assert set(gguf) == {"LM Studio", "llama.cpp"}
    assert "mlx_lm.chat --model" in dict(run_commands({**result, "format": "mlx"}))["mlx-lm"]
    assert "ollama run my-run" in "\n".join(next_steps(result))
    # The finished event carries the Ollama name as ``name``: a field, not the event's name.
    assert make_event("export_finished", **result, quant="q8_0", bytes=1)["name"] == "my-run"


def test_export_from_the_runs_page_with_progress_and_how_to_run(qtbot, run, fake_child):
    window = MainWindow(probe_hardware=False)
    qtbot.addWidget(window)
    window.show_page("runs")
    runs = window.runs_page
    runs.select_paths([str(run)])
    assert runs.export_button.isEnabled() and runs.chat_button.isEnabled()
    dialog = runs.export_selected()
    qtbot.addWidget(dialog)
    assert isinstance(dialog, ExportDialog) and dialog.quant() == "q8_0"  # 576-wide base
    dialog.set_choice("ollama", "q4_k_m")
    assert "Expected size: about <b>" in dialog.estimate_label.text()
    assert "free there" in dialog.estimate_label.text()
    out = run / "exports" / "ollama-q4_k_m"
    assert dialog.out_dir() == out
    progress: list[tuple[int, int]] = []
    dialog.progress.valueChanged.connect(lambda v: progress.append((v, dialog.progress.maximum())))
    assert dialog.start()
    qtbot.waitUntil(lambda: not dialog.is_running() and dialog.result is not None, timeout=60_000)
    args = json.loads(fake_child.read_text())
    assert args == [
        "export",
        str(run),
        "--format",
        "ollama",
        "--quant",
        "q4_k_m",
        "--out",
        str(out),
        "--json",
    ]
    assert (3, 4) in progress and dialog.progress.format() == "Done"
    assert dialog.result["path"] == str(out) and out.is_dir()
    assert "Exported to" in dialog.status.text()
    howto = dialog.howto_texts()
    assert set(howto) == {"Ollama", "LM Studio", "llama.cpp"} and "ollama run support-bot" in howto["Ollama"]
    assert dialog.howto.isVisible()
    copy = next(b for b in dialog.howto.findChildren(type(dialog.start_button)) if "llama.cpp" in b.toolTip())
    copy.click()
    assert QGuiApplication.clipboard().text() == howto["llama.cpp"]
    assert "already exists" not in dialog.estimate_label.text() and not dialog.start_button.isEnabled()
    # Another export into an existing folder is refused before anything runs.
    dialog.set_choice("gguf", "q8_0")
    assert dialog.start_button.isEnabled()
    dialog.out_edit.setText(str(out))
    dialog.out_edit.textEdited.emit(str(out))
    assert "already exists" in dialog.estimate_label.text() and not dialog.start_button.isEnabled()
    assert not dialog.start()


def test_cancel_stops_the_child_and_leaves_nothing(qtbot, run, fake_child, monkeypatch):
    monkeypatch.setenv("FAKE_EXPORT_MODE", "slow")
    dialog = ExportDialog(run)
    qtbot.addWidget(dialog)
    dialog.set_choice("gguf", "q8_0")
    assert dialog.start() and dialog.cancel_button.text() == "Cancel"
    qtbot.waitUntil(lambda: dialog.progress.maximum() == 4, timeout=30_000)
    pid = dialog.worker.pid()
    dialog.cancel_button.click()
    qtbot.waitUntil(lambda: not dialog.is_running(), timeout=30_000)
    assert dialog.status.text() == "Cancelled. Nothing was written."
    assert not dialog.out_dir().exists() and not list((run / "exports").glob(".*partial"))
    assert dialog.result is None and pid and not Path(f"/proc/{pid}").exists()
    assert dialog.start_button.isEnabled() and dialog.cancel_button.text() == "Close"


def test_a_failed_export_says_why(qtbot, run, fake_child, monkeypatch):
    monkeypatch.setenv("FAKE_EXPORT_MODE", "fail")
    dialog = ExportDialog(run)
    qtbot.addWidget(dialog)
    assert dialog.start()
    qtbot.waitUntil(lambda: not dialog.is_running(), timeout=30_000)
    assert "this run has no adapter" in dialog.status.text() and str(run) in dialog.status.text()
    assert not dialog.howto.isVisible()


def test_missing_base_model_is_said_before_starting(qtbot, tunedesk_home, tmp_path):
    run = fake_run(tunedesk_home / "runs", tmp_path / "gone")
    dialog = ExportDialog(run)
    qtbot.addWidget(dialog)
    assert "Cannot export" in dialog.estimate_label.text() and not dialog.start_button.isEnabled()
    assert not dialog.start()


def test_train_page_offers_chat_and_export_when_a_run_has_ended(qtbot, run):
    window = MainWindow(probe_hardware=False)
    qtbot.addWidget(window)
    window.show()
    window.show_page("train")
    steps = window.train_page.next_steps
    assert steps.isVisible() and steps.run_dir == str(run)
    steps.chat_button.click()
    assert window.current_page() == "chat"
    if hasattr(window.chat_page, "current_adapter"):
        assert window.chat_page.current_adapter() == str(run)


def _real_export_has_format() -> bool:
    out = subprocess.run(
        [sys.executable, "-m", "desktop", "export", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    return "--format" in out.stdout


@pytest.mark.slow
@pytest.mark.skipif(
    not _real_export_has_format(), reason="`tunedesk export RUN --format` is not in this build yet"
)
def test_real_export_command_from_the_dialog(qtbot, tmp_path, tiny_model_dir):
    from tests.chat_adapters import make_peft_run

    run = make_peft_run(tmp_path / "runs" / "tiny", tiny_model_dir, steps=5)
    dialog = ExportDialog(run)
    qtbot.addWidget(dialog)
    dialog.set_choice("merged")
    estimated = plan_export(run, "merged").bytes  # what the dialog shows before it starts
    assert f"about <b>{format_bytes(estimated)}</b>" in dialog.estimate_label.text()
    assert dialog.start()
    qtbot.waitUntil(lambda: not dialog.is_running(), timeout=600_000)
    assert dialog.result is not None, dialog.status.text()
    out = Path(dialog.result["path"])
    assert out.is_dir() and (out / "config.json").is_file() and dialog.result["format"] == "merged"
    assert dialog.result["bytes"] > 0 and "Exported to" in dialog.status.text()
    assert 0.8 < dialog.result["bytes"] / estimated < 1.25, (dialog.result["bytes"], estimated)


def test_closing_the_window_mid_export_stops_the_child_cleanly(qtbot, run, fake_child, monkeypatch):
    monkeypatch.setenv("FAKE_EXPORT_MODE", "slow")
    window = MainWindow(probe_hardware=False)
    qtbot.addWidget(window)
    window.show_page("runs")
    window.runs_page.select_paths([str(run)])
    dialog = window.runs_page.export_selected()
    assert dialog.start()
    qtbot.waitUntil(lambda: dialog.progress.maximum() == 4, timeout=30_000)
    window.close()
    assert not dialog.is_running() and not list((run / "exports").iterdir())  # no .partial left
