"""The Chat page's settings box: system prompt and sampling (temperature, top-p, max new tokens,
repetition penalty, seed), remembered between sessions. A mixin of ``desktop.chat_page.ChatPage``
(it reads and sets the page's widgets and ``settings``)."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QPlainTextEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)


class SamplingSettings:
    """The settings box and the sampling dict the worker's ``generate`` takes."""

    def _settings_box(self) -> QWidget:
        box = QGroupBox("Settings")
        box.setMaximumWidth(420)  # on a wide screen the conversation gets the room
        column = QVBoxLayout(box)
        form = QFormLayout()
        column.addLayout(form)
        column.addStretch(1)  # the rows stay together at the top of a tall box
        self.system_prompt = QPlainTextEdit()
        self.system_prompt.setPlaceholderText("(none: the chat template's default)")
        self.system_prompt.setMaximumHeight(90)
        self.system_prompt.setTabChangesFocus(True)  # Tab moves on instead of typing a tab
        self.system_prompt.setAccessibleName("System prompt")
        self.system_prompt.setToolTip("Sent as the first, system message of every request")
        form.addRow("Standing instruction\n(system prompt)", self.system_prompt)
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.0, 2.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setDecimals(2)
        self.temperature.setToolTip("0 = greedy (always the most likely token); higher = more varied")
        form.addRow("Variety (temperature)", self.temperature)
        self.top_p = QDoubleSpinBox()
        self.top_p.setRange(0.01, 1.0)
        self.top_p.setSingleStep(0.05)
        self.top_p.setValue(1.0)
        self.top_p.setToolTip(
            "Nucleus sampling: keep the most likely tokens up to this probability (1 = off)"
        )
        form.addRow("Word choice (top-p)", self.top_p)
        self.max_new_tokens = QSpinBox()
        self.max_new_tokens.setRange(1, 32768)
        self.max_new_tokens.setValue(256)
        self.max_new_tokens.setToolTip("Longest reply, in text pieces (tokens: about ¾ of a word each)")
        form.addRow("Longest reply (tokens)", self.max_new_tokens)
        self.repetition_penalty = QDoubleSpinBox()
        self.repetition_penalty.setRange(0.5, 3.0)
        self.repetition_penalty.setSingleStep(0.05)
        self.repetition_penalty.setValue(1.0)
        self.repetition_penalty.setToolTip(
            "Repetition penalty: makes words already in the conversation less likely (1 = off)"
        )
        form.addRow("Avoid repeats", self.repetition_penalty)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2_147_483_647)
        self.seed.setToolTip("Seed of the sampler (no effect when greedy)")
        form.addRow("Random seed", self.seed)
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
