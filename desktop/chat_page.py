"""Step 4, Chat: talk to the tuned model, beside the base model, and compare both on the run's
validation prompts.

The model runs in the chat worker (``tunedesk chat --serve``, ``desktop.chat_client``), started on
the first message and kept while the base model stays the same: choosing another adapter of the
same base model only switches the adapter in the worker. Replies stream in as they are generated;
Stop ends them after the current token. "Side by side" sends each message to the base model and
the tuned one together (one copy of the base weights in the worker) and shows both as they stream,
each with its own history. "Compare on validation prompts" runs N prompts of the run's validation
split through both and fills a table: prompt, reference answer, base reply, tuned reply.

What it shows lives beside it: ``chat_views`` (transcripts and panes), ``chat_settings`` (the
settings box), ``chat_compare`` (the validation table), ``chat_events`` (the worker's events).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QCoreApplication, Qt
from PySide6.QtGui import QKeySequence, QShortcut, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from backends import paths
from backends.chat.adapters import chat_runs
from backends.config import DEFAULT_MODEL
from backends.model_store_info import list_models
from desktop.chat_actions import ChatActions
from desktop.chat_client import ChatClient
from desktop.chat_compare import ValidationCompare
from desktop.chat_events import WorkerEvents
from desktop.chat_settings import SamplingSettings
from desktop.chat_views import BASE, COMPARE_COLUMNS, TUNED, ChatPane
from desktop.chat_views import format_stats as format_stats  # re-exported: tests and callers
from desktop.state import app_settings


class ChatPage(ChatActions, SamplingSettings, ValidationCompare, WorkerEvents, QWidget):
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
        layout.addLayout(top)
        # A second row: one row of both pickers and the switch is wider than a 1024-pixel screen.
        top = QHBoxLayout()
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
        top.addStretch(1)
        top.addWidget(self.side_by_side)
        layout.addLayout(top)
        for combo in (self.adapter_combo, self.model_combo):  # long run names elide, not widen
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(20)
        self.status = QLabel("The model loads when you send the first message.")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.banner = QLabel("")
        self.banner.setWordWrap(True)
        self.banner.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.banner.hide()
        layout.addWidget(self.banner)

        self.tabs = QTabWidget()
        self.tabs.tabBar().setAccessibleName("Chat or compare")
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
        chat_layout.addLayout(self._action_row())  # Regenerate, Copy reply, Save as training data
        row = QHBoxLayout()
        self.prompt = QPlainTextEdit()
        self.prompt.setPlaceholderText("Type a message; Ctrl+Enter sends it")
        self.prompt.setMaximumHeight(90)
        self.prompt.setTabChangesFocus(True)  # Tab moves on (keyboard use); a message needs no tab
        self.prompt.setAccessibleName("Your message")
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
        self._update_actions()

    def _on_adapter_changed(self, *_: Any) -> None:
        self.new_conversation()
        self.prefill_system_prompt()
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
        self._update_actions()

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 (Qt override)
        """List the runs again each time the page is shown (a run may have finished meanwhile)."""
        super().showEvent(event)
        if not self.busy():
            self.refresh()
