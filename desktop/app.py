"""The desktop app's entry (the window itself is built by the "Desktop app" issue)."""

from __future__ import annotations

import sys


def run_app(argv: list[str]) -> int:
    """Open the main window; returns the Qt event loop's exit code."""
    print("The desktop window is not built yet; use the CLI (tunedesk --help).", file=sys.stderr)
    return 2
