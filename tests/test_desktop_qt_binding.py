"""The installed Qt binding keeps None's reference count: PySide6 6.12.0 under Python < 3.12 drops
one reference per call of a void method, and a GUI with live charts then dies with "Fatal Python
error: none_dealloc" after some minutes (pyproject.toml excludes that version)."""

from __future__ import annotations

import sys

import pytest
from PySide6.QtWidgets import QLabel, QProgressBar


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="None is immortal from Python 3.12 (PEP 683)")
def test_void_qt_calls_keep_the_reference_count_of_none(qtbot):
    label, bar = QLabel(), QProgressBar()
    qtbot.addWidget(label)
    qtbot.addWidget(bar)
    before = sys.getrefcount(None)
    for i in range(2000):
        label.setText("x")
        bar.setValue(i % 100)
    assert sys.getrefcount(None) - before > -100  # a leak here is -4000
