"""scripts/validation_curves.py: the equal-step runs' validation curves, read from their checkpoints."""

import importlib.util
from pathlib import Path

import pytest

from napari_dgno.train.engine import Callbacks, Trainer
from test_train import TinySource, _config

REPO = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location(
        "validation_curves", REPO / "scripts" / "validation_curves.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_finished_and_a_stopped_run_side_by_side(tmp_path, capsys):
    curves = _script()
    Trainer(_config(tmp_path / "a", name="a"), source=TinySource()).run()
    done = {"step": 0}
    Trainer(
        _config(tmp_path / "b", name="b"),
        source=TinySource(),
        callbacks=Callbacks(
            on_step=lambda info: done.update(step=info.step), should_stop=lambda: done["step"] >= 4
        ),
    ).run()
    name_a, history_a = curves.run_history(tmp_path / "a" / "a")
    name_b, history_b = curves.run_history(tmp_path / "b" / "b")
    assert (name_a, name_b) == ("a", "b")
    assert [h["step"] for h in history_a if h["val"]] == [3, 6]
    assert [h["step"] for h in history_b if h["val"]] == [3]  # stopped at step 4: its newest checkpoint

    curves.main([str(tmp_path / "a" / "a"), str(tmp_path / "b" / "b")])
    table = capsys.readouterr().out.splitlines()
    assert table[0] == "| step | a | b |"
    row3, row6 = table[2].split(" | "), table[3].split(" | ")
    assert row3[0] == "| 3" and float(row3[1]) == pytest.approx(history_a[1]["val"]["psnr"], abs=0.005)
    assert row6[0] == "| 6" and row6[2].startswith("–")  # b never reached step 6
    assert "the blurred input scores" in table[-1]  # same config, so the same validation pairs


def test_a_folder_without_a_run_is_one_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no checkpoint or exported model"):
        _script().run_history(tmp_path)
