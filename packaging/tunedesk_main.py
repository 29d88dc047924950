"""Entry script of the PyInstaller bundle (``packaging/tunedesk.spec``).

The bundle's one executable is both the app and its workers: without arguments it opens the
window, with a command (``train``, ``chat --serve``, ``models import``, ``hardware`` ...) it runs
that CLI command in-process (``desktop.__main__.main``). The app starts its workers as
``<bundle>/tunedesk <command>`` (``desktop.worker.worker_command`` checks ``sys.frozen``).
``freeze_support`` makes any ``multiprocessing`` child a library might start run its own code
instead of starting a second copy of the app.
"""

import multiprocessing
import sys

from desktop.__main__ import main

if __name__ == "__main__":
    multiprocessing.freeze_support()
    sys.exit(main())
