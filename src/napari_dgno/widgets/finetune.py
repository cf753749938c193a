"""The Fine-tune dock: teach a model the user's own microscope, watch it learn, save it for Deblur.

The dock only gathers choices: :mod:`napari_dgno.train.user_data` turns layers or folders into a
training source with a held-out validation part, and :class:`~napari_dgno.train.engine.Trainer`
trains in a worker (the same engine as ``dgno train``). Stop keeps the last good weights (the Trainer
saves a checkpoint and exports the EMA weights when stopped); Resume continues that checkpoint
exactly; Save copies the exported model into the user model folder and every open model list
refreshes at once.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from .. import registry
from ..errors import DGNOError, InputError
from ..train import user_data as ls
from ..train.engine import Callbacks, Trainer
from ..train.state import checkpoints
from .jobs import JobHandle, start_job
from .messages import notify
from .pickers import DeviceCombo, ModelPicker, ThreadsSpin, models_changed
from .run_panel import TrainPanel, narrow, report_failure, scrolled
from .training_data import TrainingDataBox
from .training_plot import TrainingPlot, theme_colors

if TYPE_CHECKING:
    import napari

FINETUNE_LR, FRESH_LR = 2e-4, 1e-3  # a trained network needs gentler steps than a fresh one


@dataclass
class RunState:
    """The last run: enough to Resume it (same config, same source) and to Save its model."""

    config: Any  # TrainConfig
    source: Any = None
    steps_done: int = 0
    stopped: bool = False
    checkpointed: bool = False  # a numbered checkpoint exists to resume from

    @property
    def stem(self) -> Path:
        return self.config.run_dir / self.config.name

    @property
    def resumable(self) -> bool:
        return (
            self.stopped
            and self.checkpointed
            and self.source is not None
            and self.steps_done < self.config.steps
        )


class FinetuneWidget(QWidget):
    """Dock: choose training data, a base model and a few settings; Train, watch, Stop/Resume, Save."""

    def __init__(self, napari_viewer: napari.Viewer):
        super().__init__()

        self.viewer = napari_viewer
        self.fresh_preset = ls.FRESH_PRESET
        self.config_overrides: dict = {}  # extra TrainConfig fields (scripts, tests)
        self._run: RunState | None = None
        self._last_step = None  # the newest StepInfo, for the speed and time-left estimate
        self._t0 = time.monotonic()
        self._resumed_at = 0  # the step a resumed run continued from (0: a new run)

        # -- training data
        self.data = TrainingDataBox(napari_viewer, self)

        # -- model and settings
        self.model_picker = ModelPicker(self)
        self.fresh = QCheckBox(f"a fresh {self.fresh_preset} network instead", self)
        self.steps = QSpinBox(self)
        self.steps.setRange(1, 1_000_000)
        self.steps.setValue(500)
        self.patch = QSpinBox(self)
        self.patch.setRange(16, 1024)
        self.patch.setSingleStep(16)
        self.patch.setValue(128)
        self.patch.setSuffix(" px")
        self.batch = QSpinBox(self)
        self.batch.setRange(1, 256)
        self.batch.setValue(4)
        self.lr = QDoubleSpinBox(self)
        self.lr.setDecimals(6)
        self.lr.setRange(1e-6, 1e-1)
        self.lr.setSingleStep(1e-4)
        self.lr.setValue(FINETUNE_LR)
        self.seed = QSpinBox(self)
        self.seed.setRange(0, 2**31 - 1)
        self.device = DeviceCombo(self)
        self.threads = ThreadsSpin(self)
        self.run_name = QLineEdit(self)
        self.run_name.setToolTip("Name of the run folder (checkpoints) and of the model it exports")

        # -- running and saving
        self.panel = TrainPanel("Train", self)
        self.resume_button = QPushButton("Resume", self)
        self.resume_button.setToolTip("Continue the stopped run from its last checkpoint")
        self.save_name = QLineEdit(self)
        self.save_name.setToolTip("Name under which Deblur will list the model")
        self.save_button = QPushButton("Save model", self)
        self.save_button.setToolTip("Add the trained model to your models (Deblur lists it at once)")
        self.stats = QLabel("", self)
        self.stats.setWordWrap(True)
        narrow(self.stats)
        self.plot = TrainingPlot(theme_colors(napari_viewer), self)

        self.settings_box = QWidget(self)
        form = QFormLayout(self.settings_box)
        form.addRow("base model", self.model_picker)
        form.addRow("", self.fresh)
        form.addRow("steps", self.steps)
        form.addRow("patch size", self.patch)
        form.addRow("batch size", self.batch)
        form.addRow("learning rate", self.lr)
        form.addRow("seed", self.seed)
        form.addRow("device", self.device)
        form.addRow("CPU threads", self.threads)
        form.addRow("run name", self.run_name)
        # Data and settings as tabs: stacked, they pushed Save off a 1000-px screen.
        self.tabs = QTabWidget(self)
        self.tabs.addTab(self.data, "Training data")
        self.tabs.addTab(self.settings_box, "Model and settings")
        save_row = QHBoxLayout()
        save_row.addWidget(self.save_name, 1)
        save_row.addWidget(self.save_button)
        run_row = QHBoxLayout()
        run_row.addWidget(self.panel, 1)
        run_row.addWidget(self.resume_button, 0, Qt.AlignmentFlag.AlignTop)
        content = QWidget(self)
        box = QVBoxLayout(content)
        box.addWidget(self.tabs)
        box.addLayout(run_row)
        box.addWidget(self.stats)
        box.addWidget(self.plot, 1)
        box.addLayout(save_row)
        scrolled(self, content)
        self.data.detect_button.clicked.connect(self.detect_focus)
        self.fresh.toggled.connect(self._fresh_toggled)
        self.model_picker.changed.connect(self._update_run_name)
        self.panel.run_requested.connect(self.run)
        self.resume_button.clicked.connect(self.resume)
        self.save_button.clicked.connect(self.save)
        if self.model_picker.value() is None:  # nothing to fine-tune from: train a fresh network
            self.fresh.setChecked(True)
        self._update_run_name()
        self._update_buttons()

    # -- small reactions
    def set_mode(self, key: str) -> None:
        self.data.set_mode(key)

    def _fresh_toggled(self, fresh: bool) -> None:
        self.model_picker.setEnabled(not fresh)
        self.lr.setValue(FRESH_LR if fresh else FINETUNE_LR)
        self._update_run_name()

    def base_name(self) -> str | None:
        return None if self.fresh.isChecked() else (self.model_picker.name() or None)

    def _update_run_name(self) -> None:
        self.run_name.setPlaceholderText(ls.default_run_name(self.base_name()))

    def _update_buttons(self) -> None:
        busy = self.busy
        run = self._run
        self.resume_button.setEnabled(not busy and run is not None and run.resumable)
        self.save_button.setEnabled(not busy and run is not None and run.steps_done > 0)
        self.data.setEnabled(not busy)
        self.settings_box.setEnabled(not busy)

    def detect_focus(self) -> int | None:
        """Find the in-focus plane of the chosen stack and show it in the spin box."""
        try:
            index, name = self.data.detect_focus()
        except DGNOError as err:
            report_failure(self.panel, err)
            return None
        self.panel.show_message(f"in-focus plane of '{name}': {index} (the sharpest)")
        return index

    # -- choices -> what the worker does
    def source_builder(self):
        """Check the data choice now (shapes only) and return the worker's ``build() -> source``."""
        return self.data.source_builder(int(self.patch.value()), int(self.seed.value()))

    def config(self):
        """The :class:`TrainConfig` of a new run from the dock's settings (a unique run name)."""
        base = None
        if not self.fresh.isChecked():
            base = self.model_picker.value()
            if base is None:
                raise InputError("choose a base model, or tick 'a fresh network instead'")
            if not isinstance(base, (str, Path)):
                raise InputError("the base model must be a checkpoint on disk (save it first)")
        typed = self.run_name.text().strip()
        folder = ls.runs_dir()
        name = registry.check_model_name(typed or ls.default_run_name(self.base_name()))
        if typed and (folder / name).exists():
            raise InputError(f"a run named {name!r} already exists in {folder}; choose another run name")
        name = ls.unique_run_name(name, folder)
        return ls.finetune_config(
            name,
            base_checkpoint=base,
            steps=self.steps.value(),
            patch=self.patch.value(),
            batch_size=self.batch.value(),
            lr=self.lr.value(),
            seed=self.seed.value(),
            device=self.device.value(),
            output_dir=folder,
            preset=self.fresh_preset,
            data={"source": self.data.mode.currentData()},
            **{"threads": self.threads.value_or_none(), **self.config_overrides},
        )

    # -- running
    @property
    def busy(self) -> bool:
        return self.panel.busy

    def run(self) -> JobHandle | None:
        """Start a new run; returns the job (None when a choice is bad)."""
        if self.busy:
            return None
        try:
            build = self.source_builder()
            cfg = self.config()
        except DGNOError as err:
            report_failure(self.panel, err)
            return None
        self.plot.clear()
        self.stats.setText("")
        self._last_step = None
        return self._start(RunState(cfg), build, resume=False)

    def resume(self) -> JobHandle | None:
        """Continue the stopped run from its last checkpoint (same config, same data)."""
        run = self._run
        if self.busy or run is None or not run.resumable:
            return None
        source = run.source
        return self._start(run, lambda: source, resume=True)

    def stop(self) -> None:
        self.panel.cancel()

    def _start(self, run: RunState, build, resume: bool) -> JobHandle:
        cfg = run.config

        def job(progress, cancel, emit):
            run.source = build()
            emit(("log", f"data: {_describe_data(run.source.describe())}"))
            trainer: Trainer

            def on_step(info):
                emit(("step", info))
                progress(info.step, info.total)

            def on_validation(step, metrics):
                inputs = next((h["input"] for h in trainer.history if "input" in h), {})
                emit(("validation", step, metrics, inputs.get("psnr")))
                progress(step, cfg.steps)

            callbacks = Callbacks(on_step, on_validation, cancel, lambda m: emit(("log", m)))
            trainer = Trainer(cfg, run.source, callbacks)
            return trainer.run(resume=resume)

        verb = "resuming" if resume else "fine-tuning"
        handle = start_job(job, f"{verb} {cfg.name}", events=True)
        self.panel.attach(handle, unit="step")
        outcome: dict = {}
        handle.event.connect(self._on_event)
        handle.succeeded.connect(lambda _: outcome.setdefault("status", "done"))
        handle.cancelled.connect(lambda: outcome.setdefault("status", "stopped"))
        handle.failed.connect(lambda exc: outcome.update(status="failed", error=exc))
        handle.finished.connect(lambda: self._finished(run, outcome))
        self._run = run
        self._t0 = time.monotonic()
        self._resumed_at = run.steps_done if resume else 0
        self.save_name.setPlaceholderText(cfg.name)
        self._update_buttons()
        return handle

    def _on_event(self, event: tuple) -> None:
        """A training step, a validation or a log line from the job: to the plot and the numbers."""
        kind = event[0]
        if kind == "step":
            info = event[1]
            self.plot.add_step(info.step, info.loss)
            self._last_step = info
        elif kind == "validation":
            _, step, metrics, input_psnr = event
            self.plot.add_validation(step, metrics["psnr"], input_psnr)
        else:  # the engine's log: data used, resumed from which checkpoint
            self.panel.show_message(str(event[1]))
        self._show_stats()

    def _show_stats(self) -> None:
        parts = []
        if self.plot.steps:
            info = self._last_step
            parts.append(f"step {self.plot.steps[-1]}/{self._run.config.steps if self._run else '?'}")
            parts.append(f"loss {self.plot.smoothed()[-1]:.4f}")
            if info is not None and info.step > 0:
                per_step = info.seconds / info.step
                left = per_step * (info.total - info.step)
                parts.append(f"{per_step:.2f} s/step" + (f", ~{_duration(left)} left" if left > 0 else ""))
        if self.plot.psnrs:
            text = f"val PSNR {self.plot.psnrs[-1]:.2f} dB"
            if not math.isnan(self.plot.input_psnr):
                text += f" (input {self.plot.input_psnr:.2f} dB)"
            parts.append(text)
        self.stats.setText(" · ".join(parts))

    def _finished(self, run: RunState, outcome: dict) -> None:
        self.plot.redraw()
        run.steps_done = ls.exported_steps(run.stem) or 0
        run.checkpointed = bool(checkpoints(run.config.run_dir))
        status = outcome.get("status")
        run.stopped = status != "done"
        if status == "failed":
            report_failure(self.panel, outcome["error"])
        elif status == "stopped" and run.steps_done == 0:
            self.panel.show_message("stopped before the first step; nothing was trained", "warning")
        elif status == "stopped":
            self.panel.show_message(
                f"stopped at step {run.steps_done}/{run.config.steps}; the weights so far are kept. "
                "Resume continues from the last checkpoint, Save keeps this model.",
                "warning",
            )
        else:
            psnr = f", val PSNR {self.plot.psnrs[-1]:.2f} dB" if self.plot.psnrs else ""
            # Wall time of the whole run, earlier parts before a Stop included (the engine counts it).
            info = self._last_step
            seconds = info.seconds if info is not None else time.monotonic() - self._t0
            resumed = f", resumed at step {self._resumed_at}" if self._resumed_at else ""
            self.panel.show_message(
                f"trained {run.steps_done} steps in {_duration(seconds)}{resumed}{psnr}. "
                "Save the model to use it in Deblur."
            )
        self._update_buttons()

    # -- saving
    def save(self) -> Path | None:
        """Save the last run's model under the chosen name; every model list shows it at once."""
        run = self._run
        if self.busy or run is None or run.steps_done <= 0:
            report_failure(self.panel, InputError("train (or resume) a run first, then save its model"))
            return None
        name = self.save_name.text().strip() or run.config.name
        try:
            name = registry.check_model_name(name)
            overwrite = registry.user_model_exists(name)
            if overwrite and not self._confirm_overwrite(name):
                return None
            path = registry.save_user_model(run.stem, name, overwrite=overwrite)
        except DGNOError as err:
            report_failure(self.panel, err)
            return None
        models_changed()
        message = f"saved model '{name}' ({run.steps_done} steps) to {path.parent}; Deblur lists it now"
        self.panel.show_message(message)
        notify(message, "info")
        return path

    def _confirm_overwrite(self, name: str) -> bool:
        answer = QMessageBox.question(
            self, "Replace model?", f"A model named '{name}' exists. Replace it with this one?"
        )
        return answer == QMessageBox.StandardButton.Yes

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        self.stop()
        super().closeEvent(event)


def _duration(seconds: float) -> str:
    seconds = max(float(seconds), 0.0)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _describe_data(info: dict) -> str:
    val = info.get("validation", {})
    held = f"planes {val['planes']}" if "planes" in val else val.get("rows", "")
    parts = [str(info.get("source", "?"))]
    if "focus_index" in info:
        parts.append(f"in-focus plane {info['focus_index']} ({info.get('focus', 'chosen')})")
    if "units" in info:
        parts.append(str(info["units"]))
    return ", ".join(parts) + f"; validation on {held}"


__all__ = ["FinetuneWidget"]
