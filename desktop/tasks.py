"""Run a light Python function off the GUI thread and get its result back on the GUI thread.

Only for work that needs no ML stack and may block for a moment (hardware probes through NVML,
reading many run folders). Anything heavy runs in a child process (``desktop.worker``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot


class _Bridge(QObject):
    """Lives on the GUI thread; its slot receives the pool thread's result through a queued signal."""

    done = Signal(object, object)  # result, exception

    def __init__(self, callback: Callable[[Any, BaseException | None], None], parent: QObject) -> None:
        super().__init__(parent)
        self._callback = callback
        self.done.connect(self._deliver)

    @Slot(object, object)
    def _deliver(self, result: Any, error: BaseException | None) -> None:
        self._callback(result, error)
        self.deleteLater()


class _Task(QRunnable):
    def __init__(self, fn: Callable[[], Any], bridge: _Bridge) -> None:
        super().__init__()
        self.fn = fn
        self.bridge = bridge

    def run(self) -> None:
        try:
            result, error = self.fn(), None
        except Exception as exc:  # handed to the GUI thread, shown there
            result, error = None, exc
        try:
            self.bridge.done.emit(result, error)
        except RuntimeError:  # the bridge's owner was deleted meanwhile: nobody waits for this
            pass


def run_in_thread(
    fn: Callable[[], Any], on_done: Callable[[Any, BaseException | None], None], parent: QObject
) -> _Bridge:
    """Call ``fn()`` in Qt's thread pool; ``on_done(result, error)`` runs on the GUI thread.

    ``parent`` owns the connection: if it is deleted first, ``on_done`` is not called.
    """
    bridge = _Bridge(on_done, parent)
    QThreadPool.globalInstance().start(_Task(fn, bridge))
    return bridge
