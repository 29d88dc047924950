"""The Chat page's "compare on validation prompts" table: the run's own validation prompts sent to
the base and the tuned model, with the reference answers beside their replies; or the forgetting
check's general-ability probes (``compare_probes``). A mixin of ``desktop.chat_page.ChatPage``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtWidgets import QTableWidgetItem

from backends.forgetting.probes import load_probes, select_probes
from desktop.chat_views import BASE, TUNED


class ValidationCompare:
    """Asks the worker for the validation prompts and fills the comparison table."""

    # --- compare ---
    def compare(self) -> None:
        """Ask the worker for the run's validation prompts; the replies follow in the table."""
        adapter = self.current_adapter()
        if adapter is None or self.busy():
            return
        self._save_settings()
        self.ensure_worker()
        self.table.setRowCount(0)
        self._compare = {}
        request = self.client.new_id("v")
        self._compare_prompts_request = request
        self._pending[request] = {"prompts"}
        self.client.send(
            {"cmd": "validation_prompts", "id": request, "run": adapter, "n": self.compare_n.value()}
        )
        self.compare_note.setText("Reading the run's validation data...")
        self._update_mode()

    def compare_probes(self) -> None:
        """Fill the compare table with general-ability probes of the forgetting check (spread over
        its categories), answered by the base and the tuned model side by side."""
        if self.current_adapter() is None or self.busy():
            return
        self._save_settings()
        self.ensure_worker()
        self.table.setRowCount(0)
        self._compare = {}
        probes = select_probes(load_probes(), self.compare_n.value())
        request = self.client.new_id("v")
        self._compare_prompts_request = request
        self.tabs.setCurrentIndex(1)
        self._on_validation_prompts(
            {
                "request": request,
                "prompts": [
                    {"messages": p.messages, "reference": f"(general probe: {p.category})"} for p in probes
                ],
                "source": "general-ability probe",
                "file": "probes.jsonl",
                "note": "`tunedesk forgetting` measures how far the tuned answers moved",
            }
        )

    def _on_validation_prompts(self, event: dict[str, Any]) -> None:
        request = event.get("request")
        if request != self._compare_prompts_request:
            return
        self._pending.pop(request, None)
        prompts = event.get("prompts") or []
        note = f"{len(prompts)} prompts from {event.get('source')} data ({Path(event.get('file', '')).name})"
        if event.get("note"):
            note += f": {event['note']}"
        self.compare_note.setText(note)
        adapter = self.current_adapter()
        system = self.system_prompt.toPlainText().strip() or None
        self.table.setRowCount(len(prompts))
        for row, item in enumerate(prompts):
            user = next((m["content"] for m in reversed(item["messages"]) if m["role"] == "user"), "")
            for col, text in enumerate((user, item["reference"], "", "")):
                self.table.setItem(row, col, QTableWidgetItem(text))
            request = self.client.new_id("cmp")
            self._compare[request] = row
            self._pending[request] = {BASE, TUNED}
            self.client.send(
                {
                    "cmd": "generate",
                    "id": request,
                    "streams": [{"id": BASE, "adapter": None}, {"id": TUNED, "adapter": adapter}],
                    "messages": item["messages"],
                    "system": system,
                    **self.sampling(),
                }
            )
        self._update_mode()
