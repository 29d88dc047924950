"""How the Chat page shows what the chat worker reports: readiness, streamed tokens, finished
replies with their statistics, errors and warnings (the banner), the worker ending. A mixin of
``desktop.chat_page.ChatPage``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from desktop.chat_views import BASE, format_stats


class WorkerEvents:
    """The chat worker's events, shown in the panes, the comparison table and the banner."""

    # --- events ---
    def _on_ready(self, event: dict[str, Any]) -> None:
        adapter = event.get("adapter")
        self._worker_adapter = adapter
        self.status.setText(
            f"Ready: {Path(str(event.get('model'))).name} on {event.get('backend')} ({event.get('device')})"
            + (f", adapter {Path(adapter).name}" if adapter else ", no adapter")
        )

    def _on_token(self, request: str, stream: str, text: str) -> None:
        if request == self._chat_request and stream in self.panes:
            self.panes[stream].view.append_text(text)
        elif request in self._compare:
            col = 2 if stream == BASE else 3
            item = self.table.item(self._compare[request], col)
            if item is not None:
                item.setText(item.text() + text)

    def _on_reply_finished(self, event: dict[str, Any]) -> None:
        request, stream = event.get("request"), event.get("stream")
        if request == self._chat_request and stream in self.panes:
            pane = self.panes[stream]
            pane.messages.append({"role": "assistant", "content": event.get("text", "")})
            pane.stats.setText(format_stats(event))
            self.last_replies[stream] = event
        elif request in self._compare:
            col = 2 if stream == BASE else 3
            item = self.table.item(self._compare[request], col)
            if item is not None:
                item.setText(event.get("text", ""))
                item.setToolTip(format_stats(event))
        if request in self._pending:
            self._pending[request].discard(str(stream))
            if not self._pending[request]:
                del self._pending[request]
        if request in self._compare and not any(r in self._pending for r in self._compare):
            self.compare_note.setText(self.compare_note.text().split(" - done")[0] + " - done")
        self._update_mode()

    def _on_chat_error(self, event: dict[str, Any]) -> None:
        request = event.get("request")
        text = str(event.get("message", ""))
        if event.get("hint"):
            text += f"\nWhat to try: {event['hint']}"
        self._show_banner(text, error=True)
        if request is not None:
            self._pending.pop(str(request), None)
            if request == self._chat_request:
                for key in self.visible_streams():
                    self.panes[key].stats.setText("(failed)")
        self._update_mode()

    def _on_log(self, event: dict[str, Any]) -> None:
        if event.get("level") == "warning":
            self._show_banner(str(event.get("message", "")), error=False)
        else:
            self.status.setText(str(event.get("message", "")))

    def _on_exited(self, error: str) -> None:
        self._pending.clear()
        self._worker_model = None
        self._worker_adapter = None
        if error and self.banner.isHidden():
            self._show_banner(error, error=True)
        self.status.setText("The chat process ended; the next message starts it again.")
        self._update_mode()

    def _show_banner(self, text: str, *, error: bool = False) -> None:
        if not text:
            self.banner.hide()
            self.banner.setText("")
            return
        color = "#c0392b" if error else "#b9770e"
        self.banner.setStyleSheet(f"QLabel {{ color: {color}; border: 1px solid {color}; padding: 6px; }}")
        self.banner.setText(text)
        self.banner.show()

    def banner_text(self) -> str:
        """The error or warning shown above the conversation ("" when none)."""
        return "" if self.banner.isHidden() else self.banner.text()
