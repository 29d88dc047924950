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
from backends import export_plan
from backends.export_plan import default_quant, estimate, how_to_run
from desktop.export_dialog import ExportDialog
from desktop.main_window import MainWindow
from tests.chat_adapters import _write_run

ROOT = Path(__file__).resolve().parent.parent
FAKE = Path(__file__).with_name("fake_export.py")


def fake_model(folder: Path, hidden: int = 576, inter: int = 1536, rows: int = 1000) -> Path:
    """A model folder with a config and one safetensors file of ``rows x hidden`` f16 weights."""
    folder.mkdir(parents=True)
    config = {"hidden_size": hidden, "intermediate_size": inter, "torch_dtype": "bfloat16"}
    (folder / "config.json").write_text(json.dumps(config))
    header = json.dumps(
        {"w": {"dtype": "F16", "shape": [rows, hidden], "data_offsets": [0, rows * hidden * 2]}}
    )
    data = struct.pack("<Q", len(header)) + header.encode() + b"\0" * (rows * hidden * 2)
    (folder / "model.safetensors").write_bytes(data)
    return folder


def fake_run(runs: Path, model_dir: Path, name: str = "support-bot") -> Path:
    """A finished run folder whose adapter names ``model_dir`` as its base model."""
    run = runs / name
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    (run / "adapter" / "adapter_model.safetensors").write_bytes(b"\0" * 8)
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


def test_quant_default_and_size_estimate_follow_the_model(tmp_path):
    small = fake_model(tmp_path / "small")  # 576 wide: K-quants do not fit every layer
    wide = fake_model(tmp_path / "wide", hidden=2048, inter=8192, rows=10)
    assert default_quant(small) == "q8_0" and default_quant(wide) == "q4_k_m"
    params = 1000 * 576
    json_bytes = (small / "config.json").stat().st_size
    assert estimate(small, "gguf").bytes == int(params * 8.5 / 8) + json_bytes
    assert estimate(small, "ollama", "q4_k_m").bytes == int(params * 4.84 / 8) + json_bytes
    assert estimate(small, "merged").bytes == params * 2 + json_bytes  # bf16 kept
    assert estimate(small, "gguf", "f16").bytes == estimate(small, "mlx").bytes
    with pytest.raises(Exception, match="quantisation"):
        estimate(small, "gguf", "q3_x")


def test_unquantised_estimate_matches_the_real_model_on_disk(smollm2_dir):
    weights = sum(p.stat().st_size for p in Path(smollm2_dir).glob("*.safetensors"))
    est = estimate(smollm2_dir, "merged")  # the base's own precision (fp32 in the model store)
    assert abs(est.bytes - weights) / weights < 0.02, (est.bytes, weights)
    assert 130e6 < est.params < 140e6  # SmolLM2-135M
    assert estimate(smollm2_dir, "gguf", "f16").bytes == pytest.approx(est.bytes / 2, rel=0.02)


def test_how_to_run_commands_name_the_file(tmp_path):
    out = tmp_path / "My Run export"
    out.mkdir()
    (out / "model.gguf").write_bytes(b"GGUF")
    steps = dict(how_to_run("ollama", out, "My Run"))
    assert steps["Ollama"] == f"cd '{out}'\nollama create my-run -f Modelfile\nollama run my-run"
    assert f"lms import '{out / 'model.gguf'}'" in steps["LM Studio"]
    assert steps["llama.cpp"].startswith(f"cd '{out}'\nllama-cli -m model.gguf -cnv\n")
    assert "llama-server -m model.gguf" in steps["llama.cpp"]
    assert "Ollama" not in dict(how_to_run("gguf", out / "model.gguf", "x"))
    assert "mlx_lm.chat --model" in dict(how_to_run("mlx", out, "x"))["mlx-lm"]


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
    assert "Free space there" in dialog.estimate_label.text()
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
    assert dialog.start()
    qtbot.waitUntil(lambda: not dialog.is_running(), timeout=600_000)
    assert dialog.result is not None, dialog.status.text()
    out = Path(dialog.result["path"])
    assert out.is_dir() and (out / "config.json").is_file() and dialog.result["format"] == "merged"
    assert dialog.result["bytes"] > 0 and "Exported to" in dialog.status.text()
    est = export_plan.estimate(tiny_model_dir, "merged").bytes
    assert 0.5 < dialog.result["bytes"] / est < 2.0, (dialog.result["bytes"], est)
