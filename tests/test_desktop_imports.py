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
forbidden = %r
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(forbidden))
print(json.dumps({"forbidden": loaded, "has_qt": "PySide6.QtWidgets" in sys.modules,
                  "has_pyqtgraph": "pyqtgraph" in sys.modules, "pages": sorted(window._pages)}))
window.close()
"""


def test_building_the_whole_window_imports_no_ml_stack(tmp_path):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", TUNEDESK_HOME=str(tmp_path / "home"))
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
