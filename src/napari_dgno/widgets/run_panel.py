"""The Run / Cancel button, progress bar and status line every dock has, wired to one job at a time."""

from __future__ import annotations

import logging
from collections.abc import Callable

from qtpy.QtCore import QSize, Qt, Signal
from qtpy.QtWidgets import (
    QFrame,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ..errors import DGNOError
from .jobs import JobHandle, start_job
from .messages import describe_error, notify

log = logging.getLogger(__name__)


class RunPanel(QWidget):
    """One Run button that becomes Cancel while working, progress bars and a status line.

    The dock connects ``run_requested`` to a method that starts a job and passes the handle to
    :meth:`attach`. With ``planes > 1`` the job's ``progress(done, total)`` (total = tiles per plane
    × planes, as the engine counts) drives two bars: tiles of the current plane, and planes.
    """

    run_requested = Signal()

    def __init__(self, run_text: str = "Run", parent: QWidget | None = None):
        super().__init__(parent)
        self.run_text = run_text
        self.button = QPushButton(run_text, self)
        self.bar = QProgressBar(self)
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        self.bar.setFormat("%v / %m")
        self.plane_bar = QProgressBar(self)
        self.plane_bar.setFormat("plane %v / %m")
        self.plane_bar.hide()
        self.detail = QLabel("", self)  # "plane 2/5 · tile 3/4"
        self.status = QLabel("", self)
        self.status.setWordWrap(True)
        narrow(self.status)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(self.button)
        box.addWidget(self.bar)
        box.addWidget(self.plane_bar)
        box.addWidget(self.detail)
        box.addWidget(self.status)
        self.handle: JobHandle | None = None
        self.planes = 1
        self.unit = "step"
        self.button.clicked.connect(self._clicked)

    @property
    def busy(self) -> bool:
        return self.handle is not None

    def _clicked(self) -> None:
        if self.handle is not None:
            self.cancel()
        else:
            self.run_requested.emit()

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.button.setEnabled(False)
            self.button.setText("Cancelling…")

    def start(
        self,
        job: Callable,
        description: str,
        on_success: Callable,
        planes: int = 1,
        unit: str | None = "tile",
    ) -> JobHandle:
        """Run ``job`` in a worker shown by this panel: a result goes to ``on_success``, a failure is
        reported here and as a notification, and a cancelled run adds nothing."""
        handle = start_job(job, description)
        self.attach(handle, planes=planes, unit=unit)
        handle.succeeded.connect(on_success)
        handle.failed.connect(lambda exc: report_failure(self, exc))
        handle.cancelled.connect(lambda: self.show_message("cancelled; nothing was added", "warning"))
        return handle

    def attach(self, handle: JobHandle, planes: int = 1, unit: str | None = "tile") -> None:
        """Show ``handle``'s progress; ``unit`` names what ``progress`` counts (None: a percentage)."""
        self.handle = handle
        self.planes = max(int(planes), 1)
        self.unit = unit
        self.button.setText("Cancel")
        self.button.setEnabled(True)
        self.bar.setRange(0, 0)  # busy until the first progress report
        self.bar.setFormat("%p%" if unit is None else "%v / %m")
        self.plane_bar.setVisible(self.planes > 1)
        self.plane_bar.setRange(0, self.planes)
        self.plane_bar.setValue(0)
        self.detail.setText("")
        self.show_message(f"{handle.description}…")
        handle.progressed.connect(self._progress)
        handle.finished.connect(self._finished)

    def _progress(self, done: int, total: int) -> None:
        if self.planes > 1 and total >= self.planes:
            per_plane = max(total // self.planes, 1)
            plane = min((max(done, 1) - 1) // per_plane + 1, self.planes)
            within = done - (plane - 1) * per_plane
            self.bar.setRange(0, per_plane)
            self.bar.setValue(within)
            self.plane_bar.setValue(plane if within == per_plane else plane - 1)
            self.detail.setText(f"plane {plane}/{self.planes} · {self.unit} {within}/{per_plane}")
        else:
            self.bar.setRange(0, max(total, 1))
            self.bar.setValue(done)
            self.detail.setText("" if self.unit is None else f"{self.unit} {done}/{total}")

    def _finished(self) -> None:
        self.handle = None
        self.button.setText(self.run_text)
        self.button.setEnabled(True)
        if self.bar.maximum() == 0:
            self.bar.setRange(0, 1)
            self.bar.setValue(0)

    def show_message(self, text: str, level: str = "info") -> None:
        color = {"info": "", "warning": "color: #e0a040;", "error": "color: #e05050;"}[level]
        self.status.setStyleSheet(color)
        self.status.setText(text)


def report_failure(panel: RunPanel | None, exc: BaseException) -> str:
    """Show a failure in the dock and as a napari notification; our own errors are warnings."""
    message = describe_error(exc)
    level = "warning" if isinstance(exc, DGNOError) else "error"
    if panel is not None:
        panel.show_message(message, level)
    notify(message, level)
    return message


def narrow(label: QLabel) -> None:
    """A wrapped label that never widens its dock (a long path or layer name would)."""
    label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    label.setMinimumWidth(50)


class _VerticalScrollArea(QScrollArea):
    """Scrolls vertically only, and asks for the width its content needs (plus the scroll bar), so
    that napari never makes the dock narrower than its content and cuts it off at the right."""

    def minimumSizeHint(self):  # noqa: N802 (Qt API)
        hint = super().minimumSizeHint()
        content = self.widget()
        if content is None:
            return hint
        width = content.minimumSizeHint().width() + self.verticalScrollBar().sizeHint().width()
        return QSize(max(hint.width(), width + 2 * self.frameWidth()), hint.height())


def scrolled(dock: QWidget, content: QWidget) -> QScrollArea:
    """Put ``content`` in a scroll area filling ``dock``: docks stacked on a small screen (1280x1000)
    shrink and scroll instead of pushing their buttons off-screen; they never get narrower than
    their content."""
    area = _VerticalScrollArea(dock)
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    area.setWidget(content)
    box = QVBoxLayout(dock)
    box.setContentsMargins(0, 0, 0, 0)
    box.addWidget(area)
    return area


class TrainPanel(RunPanel):
    """The Run panel with training words: Train becomes Stop, and Stop keeps what was learnt."""

    def attach(self, handle: JobHandle, planes: int = 1, unit: str | None = "step") -> None:
        super().attach(handle, planes, unit)
        self.button.setText("Stop")
        self.button.setToolTip(
            "Stop now: the step in progress is dropped, the weights of the last complete step are kept "
            "(Resume continues)"
        )

    def cancel(self) -> None:
        super().cancel()
        if self.handle is not None:
            self.button.setText("Stopping…")

    def _finished(self) -> None:
        super()._finished()
        self.button.setToolTip("")
