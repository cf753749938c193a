"""The fine-tune dock's live plot: training loss and validation PSNR against steps (matplotlib in Qt)."""

from __future__ import annotations

import math

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QLabel,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

PLACEHOLDER = (
    "Training loss and validation PSNR (against the blurred input's) are plotted here once training starts."
)


class TrainingPlot(QWidget):
    """Live training loss (log scale) and validation PSNR, with the input's PSNR as a baseline.

    matplotlib's Qt canvas when matplotlib is installed, otherwise only the numbers in the dock.
    Redraws are throttled: drawing competes with the training thread for the CPU.
    """

    REDRAW_MS = 500

    def __init__(self, colors: dict, parent: QWidget | None = None):
        super().__init__(parent)
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.val_steps: list[int] = []
        self.psnrs: list[float] = []
        self.input_psnr = math.nan
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        # Before the first step: a line of text, not empty axes that look like a broken plot.
        self.placeholder = QLabel(PLACEHOLDER, self)
        self.placeholder.setWordWrap(True)
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.placeholder.setMinimumHeight(60)
        box.addWidget(self.placeholder)
        self.canvas = None
        try:
            from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
            from matplotlib.figure import Figure
            from matplotlib.ticker import FormatStrFormatter
        except ImportError:
            self.placeholder.setText(PLACEHOLDER + " (Install matplotlib for a live plot.)")
            return
        fg, bg = colors["text"], colors["background"]
        figure = Figure(figsize=(3.6, 2.4), dpi=90, facecolor=bg, layout="constrained")
        self.ax = figure.add_subplot(facecolor=bg)
        self.ax2 = self.ax.twinx()
        for ax in (self.ax, self.ax2):
            ax.tick_params(colors=fg, labelsize=8)
            for spine in ax.spines.values():
                spine.set_color(fg)
        self.ax.set_xlabel("step", color=fg, fontsize=8)
        self.ax.set_ylabel("training loss", color="#5ab4ff", fontsize=8)
        self.ax2.set_ylabel("validation PSNR (dB)", color="#ffb347", fontsize=8)
        self.ax.set_yscale("log")
        (self.raw_line,) = self.ax.plot([], [], color="#5ab4ff", lw=0.6, alpha=0.35)
        (self.loss_line,) = self.ax.plot([], [], color="#5ab4ff", lw=1.5, label="loss (smoothed)")
        (self.psnr_line,) = self.ax2.plot([], [], "o-", color="#ffb347", ms=3, lw=1.2, label="val PSNR")
        self.input_line = self.ax2.axhline(math.nan, color="#ffb347", ls=":", lw=1, label="input PSNR")
        self.ax.yaxis.set_major_formatter(FormatStrFormatter("%.2g"))
        self.ax.yaxis.set_minor_formatter(FormatStrFormatter("%.2g"))
        legend = figure.legend(
            [self.loss_line, self.psnr_line, self.input_line],
            ["loss (smoothed)", "validation PSNR", "input PSNR"],
            loc="outside upper center",
            ncols=3,
            fontsize=7,
            frameon=False,
        )
        for text in legend.get_texts():
            text.set_color(fg)
        self.canvas = FigureCanvasQTAgg(figure)
        self.canvas.setMinimumHeight(170)
        self.canvas.hide()
        box.addWidget(self.canvas)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(self.REDRAW_MS)
        self._timer.timeout.connect(self.redraw)

    def clear(self) -> None:
        self.steps, self.losses, self.val_steps, self.psnrs = [], [], [], []
        self.input_psnr = math.nan
        self.redraw()

    def add_step(self, step: int, loss: float) -> None:
        self.steps.append(int(step))
        self.losses.append(float(loss))
        self._schedule()

    def add_validation(self, step: int, psnr: float, input_psnr: float | None = None) -> None:
        self.val_steps.append(int(step))
        self.psnrs.append(float(psnr))
        if input_psnr is not None:
            self.input_psnr = float(input_psnr)
        self._schedule()

    def smoothed(self) -> np.ndarray:
        """Exponential moving average of the loss (per-step losses of small batches are noisy)."""
        out, value = [], None
        for loss in self.losses:
            value = loss if value is None else 0.9 * value + 0.1 * loss
            out.append(value)
        return np.asarray(out)

    def _schedule(self) -> None:
        if not self.placeholder.isHidden():
            self.redraw()  # the first point: swap the placeholder for the plot at once
        elif self.canvas is not None and not self._timer.isActive():
            self._timer.start()

    @property
    def has_data(self) -> bool:
        return bool(self.steps or self.psnrs)

    def redraw(self) -> None:
        self.placeholder.setVisible(not self.has_data)
        if self.canvas is None:
            return
        self.canvas.setVisible(self.has_data)
        self.raw_line.set_data(self.steps, self.losses)
        self.loss_line.set_data(self.steps, self.smoothed())
        self.psnr_line.set_data(self.val_steps, self.psnrs)
        self.input_line.set_ydata([self.input_psnr, self.input_psnr])
        for ax in (self.ax, self.ax2):
            ax.relim()
            ax.autoscale_view()
        if self.steps:
            self.ax.set_xlim(0, max(self.steps[-1], 1) * 1.02)
        if self.psnrs or not math.isnan(self.input_psnr):
            values = [v for v in [*self.psnrs, self.input_psnr] if not math.isnan(v)]
            self.ax2.set_ylim(min(values) - 0.5, max(values) + 0.5)
        self.canvas.draw_idle()


def theme_colors(viewer) -> dict:
    try:
        from napari.utils.theme import get_theme

        theme = get_theme(viewer.theme)
        return {"text": theme.text.as_hex(), "background": theme.background.as_hex()}
    except Exception:  # an unknown or custom theme: napari's dark defaults
        return {"text": "#f0f1f2", "background": "#262930"}
