"""The GUI process never imports the ML stack: build the whole window (every page shown once, the
hardware header's in-process probe, the charts drawn) in a fresh interpreter and look at
``sys.modules``. The tests' own process cannot be used: other tests import torch there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = ("torch", "transformers", "peft", "trl", "datasets", "mlx", "mlx_lm", "accelerate")

SCRIPT = r"""
import json, sys
from desktop.app import make_application
from desktop.main_window import MainWindow
from desktop.screenshots import wait_until

app = make_application()
window = MainWindow(probe_hardware=False)
window.build_all_pages()
window.show()
for key in ("model", "data", "train", "chat", "runs"):
    window.show_page(key)
    app.processEvents()
wait_until(lambda: window.header.final, 30)
window.train_page.monitor.refresh_charts()
# The memory plan in the window (Train page panel, Model page badge) on a model folder that holds
# only a config.json: pure arithmetic, no ML library.
import os
plan_model = os.environ["PLAN_MODEL"]
window.state.set_model(plan_model)
window.train_page.refresh_plan()
window.model_page.refresh()
plan_text = window.train_page.plan_panel.label.text()
from desktop.pages.model_page import FIT_COLUMN
badges = [window.model_page.table.item(i, FIT_COLUMN).text() for i in range(window.model_page.table.rowCount())]
forbidden = %r
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(forbidden))
print(json.dumps({"forbidden": loaded, "has_qt": "PySide6.QtWidgets" in sys.modules,
                  "has_pyqtgraph": "pyqtgraph" in sys.modules, "pages": sorted(window._pages),
                  "plan_text": plan_text, "badges": badges}))
window.close()
"""


def test_building_the_whole_window_imports_no_ml_stack(tmp_path):
    model = tmp_path / "shape-only-llama"
    model.mkdir()
    shape = {"model_type": "llama", "hidden_size": 576, "num_hidden_layers": 30, "intermediate_size": 1536}
    shape.update(num_attention_heads=9, num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True)
    (model / "config.json").write_text(json.dumps(shape), encoding="utf-8")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", TUNEDESK_HOME=str(tmp_path / "home"))
    env["PLAN_MODEL"] = str(model)
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT % (FORBIDDEN,)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["has_qt"] and result["has_pyqtgraph"]  # the window really was built
    assert result["pages"] == ["chat", "data", "model", "runs", "train"]
    assert result["forbidden"] == []
    assert "this run needs about" in result["plan_text"]  # the plan really was computed
    assert "✓ fits" in result["badges"]  # the shape-only model's badge (135M parameters fit here)
