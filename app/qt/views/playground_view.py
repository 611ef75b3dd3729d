"""The Playground: try prompts against a deployed model and see how it answers, and how fast.

Left, the request: node and model, system prompt, sampling parameters (temperature, top-p,
top-k, penalties, seed, max tokens, stop sequences) and presets. Right, the conversation:
streamed text, and under each answer its prompt and completion tokens, TTFT, tokens/s and
finish reason. Stop cancels the Generate RPC (the daemon frees the request's KV blocks).
Compare mode sends one prompt to 2 to 4 node/model targets side by side. "Copy as code"
puts the current request on the clipboard as a runnable grpc script.
"""

from __future__ import annotations

from typing import Any, Callable

from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QGuiApplication, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QFrame, QGridLayout, QGroupBox, QHBoxLayout,
    QInputDialog, QLabel, QMenu, QPlainTextEdit, QPushButton, QScrollArea, QSizePolicy, QSpinBox, QSplitter,
    QStackedWidget, QVBoxLayout, QWidget,
)

from musaops.app.core import ChatMessage, GenerateSpec, GenerationDone, Sampling, TokenChunk
from musaops.app.core.sampling import PARAMS_BY_NAME, SAMPLING_PARAMS, SamplingParam
from musaops.app.qt.bridge import GuiInvoker
from musaops.app.qt.fleet_state import FleetState
from musaops.app.qt.views.banner import Banner, never_widens
from musaops.app.qt.views.playground_parts import (  # noqa: F401 (parse/format_stops re-exported)
    ComparePane, ResizedWidget, TargetPicker, Transcript, format_stops, parse_stops, stats_text,
)
from musaops.app.services.snippet import SNIPPETS, SnippetRequest

MAX_COMPARE = 4
PANE_MIN_WIDTH = 260   # narrower, a compare pane's text wraps every few words: two a row instead
PRESET_KIND = "playground"

class PlaygroundView(QWidget):
    """Chat and compare playground over the NodeHub's Generate streams."""

    def __init__(self, hub: Any, bridge: Any, parent: QWidget | None = None,
                 directory: FleetState | None = None, store: Any = None) -> None:
        super().__init__(parent)
        self.setObjectName("playgroundView")
        self.hub = hub
        self.store = store
        self.directory = directory or FleetState(bridge, parent=self)
        self.history: list[ChatMessage] = []        # completed turns (user, assistant, ...)
        self.streams: dict[str, Any] = {}           # stream_id -> "chat" or a ComparePane
        self._answer = ""                           # the chat answer being streamed
        self._pending_user = ""
        self.last_done: dict[str, GenerationDone] = {}
        self.presets: dict[str, dict] = {}
        self._invoke = GuiInvoker(self)   # store answers come back on the GUI thread

        # ---- left: the request --------------------------------------------------------------
        self.picker = TargetPicker(self.directory)
        self.system_edit = QPlainTextEdit()
        self.system_edit.setPlaceholderText("You are a helpful assistant.")
        self.system_edit.setFixedHeight(72)
        self.raw_check = QCheckBox("Raw completion")
        self.raw_check.setToolTip("Send the prompt as it is: no chat template, no history")

        sampling = QGroupBox("Sampling")
        form = QFormLayout(sampling)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        for param in SAMPLING_PARAMS:  # one control per row of app/core/sampling.py
            form.addRow(*self._sampling_control(param))

        self.preset_box = QComboBox()
        self.preset_box.setPlaceholderText("Presets")
        self.preset_box.setMinimumWidth(120)
        self.save_preset_button = QPushButton("Save…")
        self.delete_preset_button = QPushButton("Delete")
        presets = QGroupBox("Presets")
        prow = QHBoxLayout(presets)
        prow.addWidget(self.preset_box, 1)
        prow.addWidget(self.save_preset_button)
        prow.addWidget(self.delete_preset_button)

        target = self.target_group = QGroupBox("Target")
        tl = QVBoxLayout(target)
        tl.addWidget(self.picker)
        system = QGroupBox("System prompt")
        sl = QVBoxLayout(system)
        sl.addWidget(self.system_edit)
        sl.addWidget(self.raw_check)

        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 8, 0)
        ll.addWidget(target)
        ll.addWidget(system)
        ll.addWidget(sampling)
        ll.addWidget(presets)
        ll.addStretch(1)
        left_scroll = QScrollArea()
        left_scroll.setWidgetResizable(True)
        left_scroll.setFrameShape(QFrame.Shape.NoFrame)
        left_scroll.setWidget(left)
        left_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        left_scroll.setMinimumWidth(left.minimumSizeHint().width() + left_scroll.verticalScrollBar().sizeHint().width())
        left_scroll.setMaximumWidth(460)

        # ---- right: the conversation -----------------------------------------------------------
        title = self.title = QLabel("Playground")
        title.setStyleSheet("font-size: 18px; font-weight: 600;")
        self.compare_check = QCheckBox("Compare")
        self.compare_check.setToolTip("Send one prompt to several node/model targets side by side")
        self.compare_count = QSpinBox()
        self.compare_count.setRange(2, MAX_COMPARE)
        self.compare_count.setSuffix(" targets")
        self.compare_count.setEnabled(False)
        self.compare_count.setVisible(False)   # shown in compare mode: the bar fits 1024 px
        self.clear_button = QPushButton("Clear")
        self.copy_button = QPushButton("Copy as code")
        self.copy_button.setToolTip("Copy this request as runnable code: Python over gRPC, Python with the "
                                    "OpenAI client or curl against the node's HTTP address")
        copy_menu = QMenu(self.copy_button)
        for kind, (label, _write) in SNIPPETS.items():
            copy_menu.addAction(label, lambda k=kind: self.copy_snippet(k))
        self.copy_button.setMenu(copy_menu)
        bar = QHBoxLayout()
        bar.addWidget(title)
        bar.addStretch(1)
        bar.addWidget(self.compare_check)
        bar.addWidget(self.compare_count)
        bar.addWidget(self.clear_button)
        bar.addWidget(self.copy_button)

        self.banner = Banner(self)
        self.notice_banner = Banner(self)   # what a target's node says of its model (random weights)
        self.notice_banner.setObjectName("noticeBanner")
        self.transcript = Transcript()
        self.transcript.setPlaceholderText("Pick a target, type a prompt, press Ctrl+Enter.")
        self.stats_label = never_widens(QLabel(""))   # a long stats line wraps, never widens the view
        self.stats_label.setStyleSheet("color: #6b7a90;")
        chat_page = QWidget()
        cl = QVBoxLayout(chat_page)
        cl.setContentsMargins(0, 0, 0, 0)
        cl.addWidget(self.transcript, 1)
        cl.addWidget(self.stats_label)

        self.panes: list[ComparePane] = [ComparePane(self.directory, i, self) for i in range(MAX_COMPARE)]
        compare_page = self.compare_page = ResizedWidget()
        # Its width is what the window gives (panes reflow to it), never the sum of the panes.
        compare_page.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        compare_page.resized.connect(self._reflow_panes)
        self._compare_layout = QGridLayout(compare_page)
        self._compare_layout.setContentsMargins(0, 0, 0, 0)
        self.pages = QStackedWidget()
        self.pages.addWidget(chat_page)
        self.pages.addWidget(compare_page)

        self.input = QPlainTextEdit()
        self.input.setPlaceholderText("Message…  (Ctrl+Enter to send)")
        self.input.setFixedHeight(84)
        self.send_button = QPushButton("Send")
        self.send_button.setDefault(True)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.setToolTip("Cancel the request on the node (Esc)")
        buttons = QVBoxLayout()
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.stop_button)
        buttons.addStretch(1)
        input_row = QHBoxLayout()
        input_row.addWidget(self.input, 1)
        input_row.addLayout(buttons)

        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(8, 0, 0, 0)
        rl.addLayout(bar)
        rl.addWidget(self.notice_banner)
        rl.addWidget(self.banner)
        rl.addWidget(self.pages, 1)
        rl.addLayout(input_row)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left_scroll)
        splitter.addWidget(right)
        splitter.setStretchFactor(1, 1)
        splitter.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 12, 16, 12)
        layout.addWidget(splitter)

        # ---- wiring -------------------------------------------------------------------------------
        self.picker.changed.connect(self._apply_limits)
        self.picker.changed.connect(self._show_notice)
        for pane in self.panes:
            pane.picker.changed.connect(self._show_notice)
        self.send_button.clicked.connect(self.send)
        self.stop_button.clicked.connect(self.stop)
        self.clear_button.clicked.connect(self.clear)
        self.compare_check.toggled.connect(self.set_compare)
        self.compare_count.valueChanged.connect(lambda _n: self._show_panes())
        self.save_preset_button.clicked.connect(self._ask_preset_name)
        self.delete_preset_button.clicked.connect(self._delete_current_preset)
        self.preset_box.activated.connect(lambda _i: self.load_preset(self.preset_box.currentText()))
        self.input.installEventFilter(self)  # Ctrl+Enter sends from the message box
        QShortcut(QKeySequence(Qt.Key.Key_Escape), self, activated=self.stop)
        bridge.tokens.connect(self._on_tokens)
        bridge.generation_done.connect(self._on_done)
        self._show_panes()
        self._show_notice()
        self._load_presets()

    def eventFilter(self, watched: Any, event: Any) -> bool:  # noqa: N802 (Qt name)
        if (watched is self.input and event.type() == QEvent.Type.KeyPress
                and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
                and event.modifiers() & Qt.KeyboardModifier.ControlModifier):
            self.send()
            return True
        return super().eventFilter(watched, event)

    def _sampling_control(self, p: SamplingParam) -> tuple:
        """Builds the control of one sampling parameter (an attribute named like it) and
        returns its form row: (label, widget or layout), or (widget,) for a whole row."""
        if p.kind == "bool":
            box = QCheckBox(p.label)
            box.setToolTip(p.tooltip)
            setattr(self, p.name, box)
            return (box,)   # the whole row: not pushed right of the widest label
        if p.kind == "stops":
            self.stop_edit = QPlainTextEdit()
            self.stop_edit.setPlaceholderText("one per line; \\n for a newline")
            self.stop_edit.setFixedHeight(52)
            return p.label, self.stop_edit
        spin: QSpinBox | QDoubleSpinBox
        if p.kind == "float":
            spin = QDoubleSpinBox()
            spin.setDecimals(2)
        else:
            spin = QSpinBox()
        spin.setRange(p.lo, p.hi)
        spin.setMinimumWidth(80)   # not the width of the widest value: the form fits 1024 px
        spin.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)   # may shrink to it
        spin.setSingleStep(p.step)
        spin.setValue(p.lo if p.default is None else p.default)
        if p.special:
            spin.setSpecialValueText(p.special)
        setattr(self, p.name, spin)
        if p.kind != "seed":
            return p.label, spin
        check = QCheckBox("fixed")            # an optional value: off = unset
        spin.setEnabled(False)
        check.toggled.connect(spin.setEnabled)
        setattr(self, f"{p.name}_check", check)
        row = QHBoxLayout()
        row.addWidget(check)
        row.addWidget(spin, 1)
        return p.label, row

    def _control_value(self, p: SamplingParam) -> Any:
        """What the control of `p` holds (None: unset)."""
        if p.kind == "stops":
            return parse_stops(self.stop_edit.toPlainText())
        w = getattr(self, p.name)
        if p.kind == "bool":
            return w.isChecked()
        if p.kind == "seed":
            return w.value() if getattr(self, f"{p.name}_check").isChecked() else None
        if p.special and w.value() == w.minimum():
            return None
        return round(w.value(), 4) if p.kind == "float" else w.value()

    def _set_control(self, p: SamplingParam, value: Any) -> None:
        if p.kind == "stops":
            self.stop_edit.setPlainText(format_stops(tuple(value or ())))
        elif p.kind == "bool":
            getattr(self, p.name).setChecked(bool(value))
        elif p.kind == "seed":
            getattr(self, f"{p.name}_check").setChecked(value is not None)
            if value is not None:
                getattr(self, p.name).setValue(int(value))
        else:
            w = getattr(self, p.name)
            w.setValue(w.minimum() if value is None else (float(value) if p.kind == "float" else int(value)))

    def _apply_limits(self) -> None:
        """Bounds max tokens by what the chosen node allows (EngineLimits from GetInfo)."""
        status = self.directory.status(self.picker.node_id())
        limit = status.info.limits.max_tokens if status and status.info else 0
        self.max_tokens.setMaximum(limit or 32768)
        self.max_tokens.setToolTip(f"This node allows at most {limit} new tokens." if limit else "")

    def targets(self) -> list[TargetPicker]:
        """The pickers in use: the chat target, or the compare panes shown."""
        if self.compare_check.isChecked():
            return [p.picker for p in self.panes[: self.compare_count.value()]]
        return [self.picker]

    def _show_notice(self) -> None:
        """A banner while a target's model carries a notice (the random demo model says it
        answers with noise): its output is never taken for a real model's."""
        pickers = self.targets()
        seen: dict[str, list[str]] = {}
        for i, picker in enumerate(pickers):
            notice = picker.notice()
            if notice:
                name = picker.model() if len(pickers) == 1 else f"target {i + 1} ({picker.model()})"
                seen.setdefault(notice, []).append(name)
        if not seen:
            self.notice_banner.clear()
            return
        text = " ".join(f"{', '.join(names)}: {notice[0].upper()}{notice[1:]}." for notice, names in seen.items())
        if self.notice_banner.text() != text:
            self.notice_banner.show_message(text, "warning")

    # -- request --------------------------------------------------------------------------------
    def sampling(self) -> Sampling:
        """The controls' values; one equal to the daemon's default is left unset."""
        values = {p.name: self._control_value(p) for p in SAMPLING_PARAMS}
        return Sampling(**{n: v for n, v in values.items() if v != PARAMS_BY_NAME[n].default})

    def build_spec(self, model: str, prompt: str, with_history: bool = True) -> GenerateSpec:
        """The GenerateSpec for a prompt: chat messages (system, history, prompt) or raw text."""
        if self.raw_check.isChecked():
            return GenerateSpec(model=model, prompt=prompt, sampling=self.sampling())
        messages: list[ChatMessage] = []
        system = self.system_edit.toPlainText().strip()
        if system:
            messages.append(ChatMessage("system", system))
        if with_history:
            messages += self.history
        messages.append(ChatMessage("user", prompt))
        return GenerateSpec(model=model, messages=tuple(messages), sampling=self.sampling())

    def busy(self) -> bool:
        return bool(self.streams)

    def send(self) -> list[str]:
        """Sends the input to the chat target, or to every compare target; returns stream ids."""
        prompt = self.input.toPlainText().strip()
        if self.busy():
            return []
        if not prompt:
            self.banner.show_message("Type a prompt first.", "info")
            return []
        if self.compare_check.isChecked():
            return self._send_compare(prompt)
        node_id, model = self.picker.node_id(), self.picker.model()
        problem = self._target_problem(node_id, model)
        if problem:
            self.banner.show_message(problem, "warning")
            return []
        self.banner.clear()
        spec = self.build_spec(model, prompt)
        stream_id = self.hub.generate(node_id, spec)
        self.streams[stream_id] = "chat"
        self._pending_user, self._answer = prompt, ""
        self.transcript.add_heading("user")
        self.transcript.append_text(prompt)
        notice = self.picker.notice()
        self.transcript.add_heading("assistant", f"{model} · {self.directory.label(node_id)}"
                                    + (f"  ⚠ {notice}" if notice else ""))
        self.stats_label.setText("Waiting for the first token…")
        self.input.clear()
        self._set_running(True)
        return [stream_id]

    def _send_compare(self, prompt: str) -> list[str]:
        panes = self.panes[: self.compare_count.value()]
        problems = [f"Target {i + 1}: {p}" for i, pane in enumerate(panes)
                    if (p := self._target_problem(pane.picker.node_id(), pane.picker.model()))]
        if problems:
            self.banner.show_message(" ".join(problems), "warning")
            return []
        self.banner.clear()
        ids = []
        for pane in panes:
            spec = self.build_spec(pane.picker.model(), prompt, with_history=False)
            stream_id = self.hub.generate(pane.picker.node_id(), spec)
            self.streams[stream_id] = pane
            pane.begin()
            ids.append(stream_id)
        self._set_running(True)
        return ids

    def _target_problem(self, node_id: str, model: str) -> str:
        if not node_id:
            return "Connect a node first."
        if not self.directory.online(node_id):
            return f"{self.directory.label(node_id)} is not online."
        if not model:
            return f"No model is deployed on {self.directory.label(node_id)}: deploy one in Models."
        return ""

    def stop(self) -> None:
        """Cancels every running Generate RPC; each ends with finish reason cancelled."""
        for stream_id in list(self.streams):
            try:
                self.hub.cancel(stream_id)
            except RuntimeError:  # the hub has stopped: its streams are gone with it
                self.streams.pop(stream_id, None)
        if self.streams:
            self.stop_button.setEnabled(False)
            self.stats_label.setText("Stopping…")

    def clear(self) -> None:
        if self.busy():
            self.stop()
        self.history.clear()
        self.transcript.clear()
        self.stats_label.clear()
        for pane in self.panes:
            pane.output.clear()
            pane.stats.clear()
        self.banner.clear()

    def _set_running(self, running: bool) -> None:
        self.send_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        self.compare_check.setEnabled(not running)
        self.compare_count.setEnabled(not running and self.compare_check.isChecked())

    def set_compare(self, on: bool) -> None:
        self.compare_check.setChecked(on)
        self.compare_count.setEnabled(on and not self.busy())
        self.compare_count.setVisible(on)
        self.pages.setCurrentIndex(1 if on else 0)
        self.target_group.setVisible(not on)  # each compare pane has its own target
        self.title.setVisible(not on)   # room for the targets box: the bar fits 1024 px
        if on:  # start the first target where the chat is pointed
            self.panes[0].picker.set_target(self.picker.node_id(), self.picker.model())
        self._show_notice()

    def _reflow_panes(self) -> None:
        if self.compare_columns() != self._columns_shown():
            self._show_panes()

    def _columns_shown(self) -> int:
        return max((self._compare_layout.getItemPosition(i)[1] + 1
                    for i in range(self._compare_layout.count())), default=0)

    def compare_columns(self) -> int:
        """Panes side by side: all of them while each gets PANE_MIN_WIDTH, else two a row."""
        n = self.compare_count.value()
        width = self.compare_page.width()
        return n if width >= n * PANE_MIN_WIDTH + (n - 1) * self._compare_layout.horizontalSpacing() \
            else min(n, 2)

    def _show_panes(self) -> None:
        """Only the panes in use sit in the grid (hidden ones would still claim width), in
        one row when the page is wide enough, else two a row (4 targets: 2x2 at 1024 px)."""
        n, cols = self.compare_count.value(), self.compare_columns()
        placed = [self._compare_layout.getItemPosition(self._compare_layout.indexOf(p))[:2]
                  if self._compare_layout.indexOf(p) >= 0 else None for p in self.panes]
        for i, pane in enumerate(self.panes):
            want = divmod(i, cols) if i < n else None
            if placed[i] == want:
                pane.setVisible(want is not None)
                continue
            if placed[i] is not None:
                self._compare_layout.removeWidget(pane)
            if want is None:
                pane.hide()
            else:
                self._compare_layout.addWidget(pane, *want)
                pane.show()
        for c in range(MAX_COMPARE):
            self._compare_layout.setColumnStretch(c, 1 if c < cols else 0)
        for r in range(MAX_COMPARE):
            self._compare_layout.setRowStretch(r, 1 if r * cols < n else 0)
        self._show_notice()

    # -- stream results ---------------------------------------------------------------------------
    def _on_tokens(self, chunk: TokenChunk) -> None:
        owner = self.streams.get(chunk.stream_id)
        if owner is None:
            return
        if owner == "chat":
            self._answer += chunk.text
            self.transcript.append_text(chunk.text)
            self.stats_label.setText("Streaming…")
        else:
            owner.text += chunk.text
            owner.output.append_text(chunk.text)
            owner.stats.setText("Streaming…")

    def _on_done(self, done: GenerationDone) -> None:
        owner = self.streams.pop(done.stream_id, None)
        if owner is None:
            return
        self.last_done[done.stream_id] = done
        failed = done.finish_reason == "error"
        line = f"Error: {done.error}" if failed else stats_text(done)
        colour = "#d64545" if failed else "#b7791f" if done.finish_reason == "cancelled" else "#6b7a90"
        # A failure is said once: the chat's in the banner (the transcript and the line under
        # it only say that it failed), a compare target's in its own pane.
        if owner == "chat":
            if failed:
                self.transcript.append_text("(no answer)", "#8a94a6")
                self.banner.show_message(f"Generate failed: {done.error}")
                line = "Failed (the reason is in the message above)."
            elif self._answer or done.finish_reason != "cancelled":
                self.history += [ChatMessage("user", self._pending_user), ChatMessage("assistant", self._answer)]
            self.transcript.add_stats(line, colour)
            self.stats_label.setText(line)
        else:
            owner.stats.setText(line)
            owner.stats.setStyleSheet(f"color: {colour};")
        if not self.streams:
            self._set_running(False)

    # -- snippet ----------------------------------------------------------------------------------
    def snippet(self, kind: str = "grpc") -> str:
        """The current request (the chat target, or compare target 1) as code: `kind` is a
        key of snippet.SNIPPETS (grpc, openai, curl)."""
        if self.compare_check.isChecked():
            node_id, model = self.panes[0].picker.node_id(), self.panes[0].picker.model()
        else:
            node_id, model = self.picker.node_id(), self.picker.model()
        status = self.directory.status(node_id)
        if status is None:
            raise ValueError("Connect a node first.")
        prompt = self.input.toPlainText().strip() or self._pending_user or "Hello!"
        spec = self.build_spec(model, prompt, with_history=not self.compare_check.isChecked())
        addr = status.address
        tls = addr.tls
        return SNIPPETS[kind][1](SnippetRequest(
            host=addr.host, port=addr.port, model=model, prompt=spec.prompt,
            messages=tuple((m.role, m.content) for m in spec.messages),
            sampling=dict(spec.sampling),
            tls=tls is not None, tls_ca=(tls.ca or None) if tls else None,
            tls_cert=(tls.cert or None) if tls else None, tls_key=(tls.key or None) if tls else None,
            auth=bool(addr.token) or bool(status.info and status.info.auth_required),
            http_address=status.info.http_address if status.info else "",
        ))

    def copy_snippet(self, kind: str = "grpc") -> str:
        try:
            text = self.snippet(kind)
        except ValueError as e:
            self.banner.show_message(f"Cannot write the request: {e}", "warning")
            return ""
        QGuiApplication.clipboard().setText(text)
        self.banner.show_message(f"Request copied as {SNIPPETS[kind][0]} (the token is read from $MUSA_OPS_TOKEN).",
                                 "ok")
        return text

    # -- presets ------------------------------------------------------------------------------------
    def preset(self) -> dict:
        """The request settings worth keeping (not the node, model or conversation)."""
        return {
            "system": self.system_edit.toPlainText(),
            "raw": self.raw_check.isChecked(),
            **{p.name: self._control_value(p) for p in SAMPLING_PARAMS},
        }

    def apply_preset(self, values: dict) -> None:
        self.system_edit.setPlainText(str(values.get("system", "")))
        self.raw_check.setChecked(bool(values.get("raw", False)))
        for p in SAMPLING_PARAMS:
            if p.name in values or p.kind in ("seed", "bool", "stops"):
                self._set_control(p, values.get(p.name, p.default))

    def _store_submit(self, method: str, *args: Any, then: Callable[[Any], None] | None = None) -> None:
        """Runs a Store call on the store's worker thread; `then(result)` runs on the GUI thread."""
        if self.store is None:
            return

        def done(result: Any, error: str) -> None:  # worker thread
            self._invoke(self._store_answer, method, result, error, then)

        self.store.submit(method, *args, done=done)

    def _store_answer(self, method: str, result: Any, error: str,
                      then: Callable[[Any], None] | None) -> None:
        if error:
            self.banner.show_message(f"Presets: {error}", "warning")
        elif then is not None:
            then(result)

    def _load_presets(self) -> None:
        self._store_submit("list_presets", PRESET_KIND,
                           then=lambda rows: self._on_presets({p.name: p.value for p in rows}))

    def _on_presets(self, presets: dict) -> None:
        self.presets = {str(k): dict(v) for k, v in presets.items()}
        current = self.preset_box.currentText()
        self.preset_box.blockSignals(True)
        self.preset_box.clear()
        self.preset_box.addItems(sorted(self.presets))
        i = self.preset_box.findText(current)
        self.preset_box.setCurrentIndex(i)
        self.preset_box.blockSignals(False)
        self.delete_preset_button.setEnabled(bool(self.presets))

    def save_preset(self, name: str) -> None:
        name = name.strip()
        if not name:
            return
        self.presets[name] = self.preset()
        self._on_presets(dict(self.presets))
        self.preset_box.setCurrentText(name)
        self._store_submit("save_preset", PRESET_KIND, name, self.presets[name])

    def load_preset(self, name: str) -> bool:
        values = self.presets.get(name)
        if values is None:
            return False
        self.apply_preset(values)
        self.banner.show_message(f"Preset {name!r} loaded.", "ok")
        return True

    def delete_preset(self, name: str) -> None:
        if self.presets.pop(name, None) is not None:
            self._on_presets(dict(self.presets))
            self._store_submit("delete_preset", PRESET_KIND, name)

    def _ask_preset_name(self) -> QInputDialog:
        """Asks for a name without blocking (the dialog is window-modal and answers by signal)."""
        dialog = QInputDialog(self)
        dialog.setWindowTitle("Save preset")
        dialog.setLabelText("Preset name:")
        dialog.setTextValue(self.preset_box.currentText())
        dialog.textValueSelected.connect(self.save_preset)
        dialog.finished.connect(dialog.deleteLater)
        dialog.open()
        self.preset_dialog = dialog
        return dialog

    def _delete_current_preset(self) -> None:
        self.delete_preset(self.preset_box.currentText())
