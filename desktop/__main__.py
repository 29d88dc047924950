"""Entry point of ``tunedesk`` and ``python -m desktop``.

Without a command (or with ``--screenshot DIR``) it opens the desktop app; with a command
(``train``, ``demo``, ``chat``, ...) it runs that command of the CLI in this process. The app
starts its training and chat workers through this same entry point, so a frozen bundle needs no
separate Python interpreter.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

GUI_FLAGS = ("--screenshot",)


def main(argv: Sequence[str] | None = None) -> int:
    """Open the app, or run a CLI command; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in GUI_FLAGS or args[0].startswith("--screenshot="):
        from desktop.app import run_app

        return run_app(args)
    from backends.cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
