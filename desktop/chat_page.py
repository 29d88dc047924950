"""Step 4, Chat: talk to the tuned model, beside the base model, and compare both on the run's
validation prompts.

The model runs in the chat worker (``tunedesk chat --serve``, ``desktop.chat_client``), started on
the first message and kept while the base model stays the same: choosing another adapter of the
same base model only switches the adapter in the worker. Replies stream in as they are generated;
Stop ends them after the current token. "Side by side" sends each message to the base model and
the tuned one together (one copy of the base weights in the worker) and shows both as they stream,
each with its own history. "Compare on validation prompts" runs N prompts of the run's validation
split through both and fills a table: prompt, reference answer, base reply, tuned reply.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QCoreApplication, Qt
from PySide6.QtGui import QFont, QKeySequence, QShortcut, QShowEvent, QTextCursor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from backends import paths
from backends.chat.adapters import chat_runs
from backends.config import DEFAULT_MODEL
from backends.forgetting.probes import load_probes, select_probes
from backends.model_store_info import list_models
from desktop.chat_client import ChatClient
from desktop.state import app_settings

COMPARE_COLUMNS = ("Prompt", "Reference answer", "Base reply", "Tuned reply")
BASE, TUNED = "base", "tuned"


def format_stats(event: dict[str, Any]) -> str:
    """One line of a reply's statistics, e.g. '42 tokens - 35.1 tokens/s - first token 0.12 s'."""
    parts = [f"{event.get('tokens', 0)} tokens"]
    if event.get("tokens_per_second") is not None:
        parts.append(f"{event['tokens_per_second']:.1f} tokens/s")
    if event.get("time_to_first_token") is not None:
        parts.append(f"first token {event['time_to_first_token']:.2f} s")
    reason = {"length": "max new tokens reached", "stop": "stopped"}.get(event.get("finish_reason", ""))
    if reason:
        parts.append(reason)
    return " - ".join(parts)


class ConversationView(QTextBrowser):
    """A conversation as text: a bold speaker line per turn, then the turn's text (streamed in)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setOpenLinks(False)
        self.setPlaceholderText("The conversation appears here.")

    def begin_turn(self, speaker: str) -> None:
        """Start a new turn by ``speaker``."""
        cursor = self.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        bold = cursor.charFormat()
        bold.setFontWeight(QFont.Weight.Bold)
        plain = cursor.charFormat()
        plain.setFontWeight(QFont.Weight.Normal)
        if not self.document().isEmpty():
            cursor.insertBlock()
            cursor.insertBlock()
        cursor.insertText(f"{speaker}:", bold)
        cursor.insertBlock()
        cursor.setCharFormat(plain)
        self.setTextCursor(cursor)

    def append_text(self, text: str) -> None:
        """Add streamed text at the end and keep it in view."""
        cursor = self.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        fmt = cursor.charFormat()
        fmt.setFontWeight(QFont.Weight.Normal)
        cursor.insertText(text, fmt)
        self.setTextCursor(cursor)
        self.ensureCursorVisible()


class ChatPane(QWidget):
    """One side of the chat: a title, the conversation, the last reply's statistics, and the
    history (``messages``) this side sends with each request."""

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.title = QLabel(f"<b>{title}</b>")
        self.view = ConversationView()
        self.stats = QLabel("")
        self.stats.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.title)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.stats)
        self.messages: list[dict[str, str]] = []

    def set_title(self, title: str) -> None:
        """The heading above the conversation."""
        self.title.setText(f"<b>{title}</b>")

    def clear(self) -> None:
        """Start a new conversation."""
        self.messages = []
        self.view.clear()
        self.stats.setText("")


class ChatPage(QWidget):
    """The Chat step: adapter picker, conversation (single or side by side), sampling settings,
    system prompt, Stop, and the validation comparison table. Call ``set_runs_dir`` to choose where
    runs are listed from (the app passes its runs folder)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runs_dir: str | None = None
        self.settings = app_settings()
        self.client = ChatClient(self)
        self.client.ready.connect(self._on_ready)
        self.client.token.connect(self._on_token)
        self.client.reply_finished.connect(self._on_reply_finished)
        self.client.chat_error.connect(self._on_chat_error)
        self.client.log.connect(self._on_log)
        self.client.validation_prompts.connect(self._on_validation_prompts)
        self.client.exited.connect(self._on_exited)
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)
        self._worker_model: str | None = None  # the base model the running worker was started for
        self._worker_adapter: str | None = None  # the adapter the worker has current
        self._pending: dict[str, set[str]] = {}  # request id -> streams not finished yet
        self._chat_request: str | None = None
        self._compare: dict[str, int] = {}  # request id -> table row
        self._compare_prompts_request: str | None = None
        self.last_replies: dict[str, dict[str, Any]] = {}  # stream -> its last reply_finished event
        self._build()
        self._load_settings()
        self._update_mode()

    # --- layout ---
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<h2>4. Chat with your model</h2>"))
        top = QHBoxLayout()
        top.addWidget(QLabel("Adapter:"))
        self.adapter_combo = QComboBox()
        self.adapter_combo.setMinimumWidth(280)
        self.adapter_combo.setToolTip("A finished or stopped training run, or the base model alone")
        top.addWidget(self.adapter_combo, 1)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.setToolTip("List the runs again")
        top.addWidget(self.refresh_button)
        top.addWidget(QLabel("Base model:"))
        self.model_combo = QComboBox()
        self.model_combo.setMinimumWidth(200)
        self.model_combo.setToolTip("The model chatted with when no adapter is chosen")
        top.addWidget(self.model_combo)
        self.base_label = QLabel("")
        self.base_label.setToolTip("The base model the chosen run was trained on")
        top.addWidget(self.base_label)
        self.side_by_side = QCheckBox("Side by side: base and tuned")
        self.side_by_side.setToolTip("Send each message to the base model and the tuned one and show both")
        top.addWidget(self.side_by_side)
        layout.addLayout(top)
        self.status = QLabel("The model loads when you send the first message.")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.banner = QLabel("")
        self.banner.setWordWrap(True)
        self.banner.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.banner.hide()
        layout.addWidget(self.banner)

        self.tabs = QTabWidget()
        layout.addWidget(self.tabs, 1)

        # Chat tab: panes | settings, then the prompt row.
        chat = QWidget()
        chat_layout = QVBoxLayout(chat)
        split = QSplitter(Qt.Orientation.Horizontal)
        self.panes = {BASE: ChatPane("Base model"), TUNED: ChatPane("Tuned")}
        split.addWidget(self.panes[BASE])
        split.addWidget(self.panes[TUNED])
        split.addWidget(self._settings_box())
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 3)
        split.setStretchFactor(2, 1)
        chat_layout.addWidget(split, 1)
        row = QHBoxLayout()
        self.prompt = QPlainTextEdit()
        self.prompt.setPlaceholderText("Type a message; Ctrl+Enter sends it")
        self.prompt.setMaximumHeight(90)
        row.addWidget(self.prompt, 1)
        buttons = QVBoxLayout()
        self.send_button = QPushButton("Send")
        self.stop_button = QPushButton("Stop")
        self.new_button = QPushButton("New conversation")
        for b in (self.send_button, self.stop_button, self.new_button):
            buttons.addWidget(b)
        row.addLayout(buttons)
        chat_layout.addLayout(row)
        self.tabs.addTab(chat, "Chat")

        # Compare tab.
        compare = QWidget()
        compare_layout = QVBoxLayout(compare)
        crow = QHBoxLayout()
        crow.addWidget(QLabel("Prompts:"))
        self.compare_n = QSpinBox()
        self.compare_n.setRange(1, 200)
        self.compare_n.setValue(5)
        self.compare_n.setToolTip("How many prompts of the run's validation data to run")
        crow.addWidget(self.compare_n)
        self.compare_button = QPushButton("Compare on validation prompts")
        self.compare_stop_button = QPushButton("Stop")
        self.probes_button = QPushButton("Show general-ability probes")
        self.probes_button.setToolTip(
            "General prompts (knowledge, instructions, arithmetic, code, writing, refusals) answered by "
            "the base and the tuned model: what the tuning changed outside your data (forgetting)"
        )
        crow.addWidget(self.compare_button)
        crow.addWidget(self.probes_button)
        crow.addWidget(self.compare_stop_button)
        crow.addStretch(1)
        compare_layout.addLayout(crow)
        self.compare_note = QLabel(
            "Runs prompts from the chosen run's validation data through the base model and the tuned "
            "one, with the settings of the Chat tab."
        )
        self.compare_note.setWordWrap(True)
        compare_layout.addWidget(self.compare_note)
        self.table = QTableWidget(0, len(COMPARE_COLUMNS))
        self.table.setHorizontalHeaderLabels(COMPARE_COLUMNS)
        self.table.setWordWrap(True)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        compare_layout.addWidget(self.table, 1)
        self.tabs.addTab(compare, "Compare on validation prompts")

        self.adapter_combo.currentIndexChanged.connect(self._on_adapter_changed)
        self.model_combo.currentIndexChanged.connect(self._on_model_changed)
        self.side_by_side.toggled.connect(self._on_side_by_side)
        self.refresh_button.clicked.connect(self.refresh)
        self.send_button.clicked.connect(self.send)
        self.stop_button.clicked.connect(self.stop)
        self.new_button.clicked.connect(self.new_conversation)
        self.compare_button.clicked.connect(self.compare)
        self.probes_button.clicked.connect(self.compare_probes)
        self.compare_stop_button.clicked.connect(self.stop)
        QShortcut(QKeySequence("Ctrl+Return"), self.prompt, activated=self.send)

    def _settings_box(self) -> QWidget:
        box = QGroupBox("Settings")
        form = QFormLayout(box)
        self.system_prompt = QPlainTextEdit()
        self.system_prompt.setPlaceholderText("(none: the chat template's default)")
        self.system_prompt.setMaximumHeight(90)
        self.system_prompt.setToolTip("Sent as the first, system message of every request")
        form.addRow("System prompt", self.system_prompt)
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.0, 2.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setDecimals(2)
        self.temperature.setToolTip("0 = greedy (always the most likely token); higher = more varied")
        form.addRow("Temperature", self.temperature)
        self.top_p = QDoubleSpinBox()
        self.top_p.setRange(0.01, 1.0)
        self.top_p.setSingleStep(0.05)
        self.top_p.setValue(1.0)
        self.top_p.setToolTip(
            "Nucleus sampling: keep the most likely tokens up to this probability (1 = off)"
        )
        form.addRow("Top-p", self.top_p)
        self.max_new_tokens = QSpinBox()
        self.max_new_tokens.setRange(1, 32768)
        self.max_new_tokens.setValue(256)
        self.max_new_tokens.setToolTip("Longest reply, in tokens")
        form.addRow("Max new tokens", self.max_new_tokens)
        self.repetition_penalty = QDoubleSpinBox()
        self.repetition_penalty.setRange(0.5, 3.0)
        self.repetition_penalty.setSingleStep(0.05)
        self.repetition_penalty.setValue(1.0)
        self.repetition_penalty.setToolTip("Penalty on tokens already in the conversation (1 = off)")
        form.addRow("Repetition penalty", self.repetition_penalty)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2_147_483_647)
        self.seed.setToolTip("Seed of the sampler (no effect when greedy)")
        form.addRow("Seed", self.seed)
        return box

    # --- settings (remembered between sessions) ---
    def _load_settings(self) -> None:
        s = self.settings
        self.temperature.setValue(float(s.value("chat/temperature", 0.0)))
        self.top_p.setValue(float(s.value("chat/top_p", 1.0)))
        self.max_new_tokens.setValue(int(s.value("chat/max_new_tokens", 256)))
        self.repetition_penalty.setValue(float(s.value("chat/repetition_penalty", 1.0)))
        self.seed.setValue(int(s.value("chat/seed", 0)))
        self.system_prompt.setPlainText(str(s.value("chat/system_prompt", "")))

    def _save_settings(self) -> None:
        s = self.settings
        for key, value in self.sampling().items():
            s.setValue(f"chat/{key}", value)
        s.setValue("chat/system_prompt", self.system_prompt.toPlainText())

    def sampling(self) -> dict[str, Any]:
        """The sampling settings as the worker's ``generate`` command takes them."""
        return {
            "temperature": round(self.temperature.value(), 4),
            "top_p": round(self.top_p.value(), 4),
            "max_new_tokens": self.max_new_tokens.value(),
            "repetition_penalty": round(self.repetition_penalty.value(), 4),
            "seed": self.seed.value(),
        }

    # --- runs and models ---
    def set_runs_dir(self, path: str | Path) -> None:
        """List adapters from the runs under ``path``."""
        self.runs_dir = str(path)
        self.refresh()

    def refresh(self) -> None:
        """List the models and the finished or stopped runs again (keeps the choices if still there)."""
        current = self.current_adapter()
        self.adapter_combo.blockSignals(True)
        self.adapter_combo.clear()
        self.adapter_combo.addItem("None: the base model alone", None)
        for run in chat_runs(self.runs_dir or paths.runs_dir()):
            label = f"{run['name']}  ({run['status']}, {run['base_model']})"
            data = {
                "adapter": run["path"],
                "base": run.get("base_model_path") or run["base_model"],
                "base_name": Path(str(run["base_model"])).name,
            }
            self.adapter_combo.addItem(label, data)
            if current == run["path"]:
                self.adapter_combo.setCurrentIndex(self.adapter_combo.count() - 1)
        self.adapter_combo.blockSignals(False)
        model = self.model_combo.currentData()
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        models = list_models()
        for m in models:
            self.model_combo.addItem(m["name"], m["path"])
        if not any(m["name"] == DEFAULT_MODEL for m in models):
            self.model_combo.addItem(f"{DEFAULT_MODEL} (imported on first use)", DEFAULT_MODEL)
        index = self.model_combo.findData(model) if model else -1
        if index < 0:
            index = self.model_combo.findText(DEFAULT_MODEL)
        self.model_combo.setCurrentIndex(max(index, 0))
        self.model_combo.blockSignals(False)
        self._update_mode()

    def adapters(self) -> list[str]:
        """Run folders offered in the adapter picker."""
        return [
            self.adapter_combo.itemData(i)["adapter"]
            for i in range(self.adapter_combo.count())
            if self.adapter_combo.itemData(i)
        ]

    def select_adapter(self, run_dir: str | None) -> None:
        """Choose a run's adapter (None: the base model alone)."""
        for i in range(self.adapter_combo.count()):
            data = self.adapter_combo.itemData(i)
            if (data["adapter"] if data else None) == (str(run_dir) if run_dir else None):
                self.adapter_combo.setCurrentIndex(i)
                return
        raise ValueError(f"{run_dir} is not in the adapter list")

    def current_adapter(self) -> str | None:
        """The chosen run folder, or None for the base model alone."""
        data = self.adapter_combo.currentData()
        return data["adapter"] if data else None

    def _wanted_model(self) -> str:
        data = self.adapter_combo.currentData()
        return str(data["base"]) if data else str(self.model_combo.currentData())

    # --- mode ---
    def _update_mode(self) -> None:
        adapter = self.current_adapter()
        both = adapter is not None and self.side_by_side.isChecked()
        self.side_by_side.setEnabled(adapter is not None)
        self.model_combo.setVisible(adapter is None)
        self.base_label.setVisible(adapter is not None)
        data = self.adapter_combo.currentData()
        base_name = data["base_name"] if data else self.model_combo.currentText()
        self.base_label.setText(f"<b>{base_name}</b> (the run's)" if data else "")
        self.panes[BASE].setVisible(adapter is None or both)
        self.panes[TUNED].setVisible(adapter is not None)
        if adapter is not None:
            self.panes[TUNED].set_title(f"Tuned: {Path(adapter).name}")
            self.panes[BASE].set_title(f"Base model: {base_name}")
        else:
            self.panes[BASE].set_title(f"Base model: {self.model_combo.currentText()}")
        self.compare_button.setEnabled(adapter is not None and not self.busy())
        self.probes_button.setEnabled(adapter is not None and not self.busy())
        self.send_button.setEnabled(not self.busy())
        self.stop_button.setEnabled(self.busy())
        self.compare_stop_button.setEnabled(bool(self._compare) and self.busy())
        self.adapter_combo.setEnabled(not self.busy())

    def _on_adapter_changed(self, *_: Any) -> None:
        self.new_conversation()
        self._update_mode()
        adapter = self.current_adapter()
        if (
            self.client.is_running()
            and self._worker_model == self._wanted_model()
            and adapter != self._worker_adapter
        ):
            # Same base model: switch the adapter in the worker, never reload the base.
            self.client.send({"cmd": "set_adapter", "id": self.client.new_id("a"), "adapter": adapter})
            self._worker_adapter = adapter
            self.status.setText("Switching the adapter...")

    def _on_model_changed(self, *_: Any) -> None:
        self.new_conversation()
        self._update_mode()

    def _on_side_by_side(self, *_: Any) -> None:
        self.new_conversation()
        self._update_mode()

    def visible_streams(self) -> list[str]:
        """The panes a message goes to: base, tuned, or both."""
        return [key for key in (BASE, TUNED) if not self.panes[key].isHidden()]

    # --- worker ---
    def ensure_worker(self) -> None:
        """Start the worker for the wanted base model (and adapter) unless it already runs it."""
        wanted = self._wanted_model()
        adapter = self.current_adapter()
        if self.client.is_running() and self._worker_model == wanted:
            return
        self._show_banner("")
        self._worker_model = wanted
        self._worker_adapter = adapter
        if adapter is not None:
            self.client.start(adapter=adapter, runs_dir=self.runs_dir)
        else:
            self.client.start(model=wanted, runs_dir=self.runs_dir)
        self.status.setText(f"Loading {Path(wanted).name}... (the first message waits for it)")

    def shutdown(self) -> None:
        """Stop the worker (when the app quits)."""
        self.client.shutdown()

    def busy(self) -> bool:
        """True while replies are being written."""
        return any(self._pending.values())

    # --- chat ---
    def send(self) -> None:
        """Send the typed message to the visible panes' models."""
        text = self.prompt.toPlainText().strip()
        if not text or self.busy():
            return
        self._save_settings()
        self.ensure_worker()
        adapter = self.current_adapter()
        streams = []
        for key in self.visible_streams():
            pane = self.panes[key]
            pane.messages.append({"role": "user", "content": text})
            pane.view.begin_turn("You")
            pane.view.append_text(text)
            pane.view.begin_turn("Base model" if key == BASE else "Tuned model")
            pane.stats.setText("...")
            streams.append(
                {"id": key, "adapter": None if key == BASE else adapter, "messages": list(pane.messages)}
            )
        request = self.client.new_id("c")
        self._chat_request = request
        self._pending[request] = {s["id"] for s in streams}
        self.client.send(
            {
                "cmd": "generate",
                "id": request,
                "streams": streams,
                "system": self.system_prompt.toPlainText().strip() or None,
                **self.sampling(),
            }
        )
        self.prompt.clear()
        self._update_mode()

    def stop(self) -> None:
        """Stop the replies being written."""
        self.client.stop()

    def new_conversation(self) -> None:
        """Clear both conversations."""
        if self.busy():
            self.stop()
        for pane in self.panes.values():
            pane.clear()

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

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 (Qt override)
        """List the runs again each time the page is shown (a run may have finished meanwhile)."""
        super().showEvent(event)
        if not self.busy():
            self.refresh()
