"""The ``dgno`` command: deblur TIFFs end to end, one-line errors, no partial files, ``dgno models``."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_dgno import registry
from napari_dgno.cli import main
from napari_dgno.io import save_checkpoint
from napari_dgno.model import build_model, preset_config


@pytest.fixture(autouse=True)
def quiet_machine(monkeypatch):
    """One CPU thread (shared 2-core machines) and no user models from the real home folder."""
    monkeypatch.setenv("NAPARI_DGNO_THREADS", "1")


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    folder = tmp_path / "user-models"
    folder.mkdir()
    monkeypatch.setenv("NAPARI_DGNO_MODEL_DIR", str(folder))
    return folder


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    net = build_model("dgno", preset_config("tiny"))
    save_checkpoint(tmp_path / "ckpt" / "tiny", net, {"preset": "tiny"})
    return tmp_path / "ckpt" / "tiny.safetensors"


@pytest.fixture
def bbbc_like(tmp_path):
    """696 x 520, 12-bit content in uint16, LZW-compressed: what BBBC006 ships."""
    rng = np.random.default_rng(0)
    image = (rng.random((520, 696)) * 4095).astype(np.uint16)
    path = tmp_path / "mcf-z_stack_w1.tif"
    tifffile.imwrite(path, image, compression="lzw")
    return path, image


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error_line(err, *words):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dgno: error: "), err
    for word in words:
        assert word.lower() in lines[0].lower(), err


def test_deblur_bbbc_like_tiff(capsys, tmp_path, bbbc_like, checkpoint, user_dir):
    src, image = bbbc_like
    out = tmp_path / "restored.tif"
    code, _, err = run(capsys, "deblur", src, "-o", out, "--model", checkpoint, "--device", "cpu")
    assert code == 0, err
    assert "wrote" in err
    restored = tifffile.imread(out)
    assert restored.dtype == np.float32 and restored.shape == image.shape
    assert np.isfinite(restored).all()
    # in the input's units: a random-init net does not restore, but the scale is the input's
    assert 0.1 < restored.std() / image.std() < 10
    assert list(tmp_path.glob(".*.tmp")) == []


def test_deblur_stack_in_a_subprocess(tmp_path, checkpoint, user_dir):
    """The installed ``dgno`` script on a 3 x 512 x 512 OME-TIFF stack, tiled, with progress."""
    script = Path(sys.executable).with_name("dgno")
    if not script.exists():
        pytest.skip("the dgno console script is not installed in this environment")
    stack = (np.random.default_rng(1).random((3, 512, 512)) * 60000).astype(np.uint16)
    src, out = tmp_path / "stack.ome.tif", tmp_path / "out.ome.tif"
    tifffile.imwrite(src, stack, metadata={"axes": "ZYX"})
    env = dict(os.environ, NAPARI_DGNO_THREADS="1", NAPARI_DGNO_MODEL_DIR=str(user_dir))
    result = subprocess.run(
        [str(script), "deblur", str(src), "-o", str(out), "--model", str(checkpoint), "--tile", "256",
         "--overlap", "32", "--element-size", "16", "--flux", "p0dg"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "deblur" in result.stderr and "E=16, flux=p0dg" in result.stderr
    with tifffile.TiffFile(out) as tif:
        restored = tif.series[0].asarray()
        assert tif.is_ome and tif.series[0].axes == "ZYX"
    assert restored.dtype == np.float32 and restored.shape == (3, 512, 512)


@pytest.mark.parametrize("case", ["text", "truncated", "empty", "rgb", "missing", "folder"])
def test_bad_inputs_exit_2_with_one_line(capsys, tmp_path, bbbc_like, checkpoint, case):
    src, _ = bbbc_like
    bad = tmp_path / f"bad-{case}.tif"
    if case == "text":
        bad.write_text("plate layout, not an image\n")
    elif case == "truncated":
        bad.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    elif case == "empty":
        bad.write_bytes(b"")
    elif case == "rgb":
        tifffile.imwrite(bad, np.zeros((64, 64, 3), np.uint8), photometric="rgb")
    elif case == "folder":
        bad = tmp_path
    out = tmp_path / "out.tif"
    code, _, err = run(capsys, "deblur", bad, "-o", out, "--model", checkpoint, "-q")
    assert code == 2
    assert_one_error_line(err)
    assert not out.exists() and list(tmp_path.glob(".*.tmp")) == []


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--model", "no-such-model"], ["no-such-model"]),
        (["--device", "quantum"], ["device"]),
        (["--element-size", "6"], ["multiple"]),
        (["--tile", "64", "--overlap", "64"], ["overlap"]),
        (["--tile", "huge"], ["tile"]),
        (["--flux", "upwind"], ["flux"]),
    ],
)
def test_bad_options_exit_2(capsys, tmp_path, bbbc_like, checkpoint, user_dir, extra, words):
    src, _ = bbbc_like
    out = tmp_path / "out.tif"
    argv = ["deblur", src, "-o", out, "-q"]
    if "--model" not in extra:
        argv += ["--model", checkpoint]
    code, _, err = run(capsys, *argv, *extra)
    assert code == 2
    assert_one_error_line(err, *words)
    assert not out.exists()


def test_refuses_to_overwrite_the_input(capsys, bbbc_like, checkpoint):
    src, image = bbbc_like
    before = src.read_bytes()
    code, _, err = run(capsys, "deblur", src, "-o", src, "--model", checkpoint)
    assert code == 2
    assert_one_error_line(err, "overwrite")
    code, _, err = run(capsys, "deblur", src, "-o", src.parent / "." / src.name, "--model", checkpoint)
    assert code == 2 and src.read_bytes() == before


def test_output_must_be_a_tiff(capsys, tmp_path, bbbc_like, checkpoint):
    src, _ = bbbc_like
    code, _, err = run(capsys, "deblur", src, "-o", tmp_path / "out.png", "--model", checkpoint)
    assert code == 2
    assert_one_error_line(err, ".tif")
    code, _, err = run(capsys, "deblur", src, "-o", tmp_path / "nope" / "out.tif", "--model", checkpoint)
    assert code == 2
    assert_one_error_line(err, "does not exist")


def test_interrupt_exits_130_and_leaves_nothing(capsys, tmp_path, checkpoint, monkeypatch):
    src, out = tmp_path / "in.tif", tmp_path / "out.tif"
    tifffile.imwrite(src, np.random.default_rng(3).integers(0, 4095, (96, 128)).astype(np.uint16))

    def interrupted(path, data, **kwargs):
        Path(path).write_bytes(b"II*\x00 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(tifffile, "imwrite", interrupted)
    code, _, err = run(capsys, "deblur", src, "-o", out, "--model", checkpoint, "-q")
    assert code == 130 and "interrupted" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "in.tif"]


@pytest.mark.parametrize("where", ["build_parser", "import", "parse_args"])
def test_interrupt_before_the_command_runs_is_one_line_and_130(capsys, monkeypatch, where):
    """Ctrl-C while the commands' modules import or the arguments are parsed: no traceback."""
    from types import SimpleNamespace

    from napari_dgno import cli

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    if where == "build_parser":
        monkeypatch.setattr(cli, "build_parser", interrupt)
    elif where == "import":  # a subcommand's (slow) module import
        monkeypatch.setattr(cli, "importlib", SimpleNamespace(import_module=interrupt))
    else:
        monkeypatch.setattr(cli._Parser, "parse_args", interrupt)
    assert main(["models"]) == 130
    assert capsys.readouterr().err == "dgno: interrupted\n"


def test_real_ctrl_c_while_parsing_exits_130_without_traceback():
    """As the ``dgno`` script runs it (``sys.exit(main())``), with a real SIGINT."""
    script = (
        "import os, signal, sys, time\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"  # a background job ignores it
        "from napari_dgno import cli\n"
        "def slow_parser():\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(30)\n"
        "cli.build_parser = slow_parser\n"
        "sys.exit(cli.main(['models']))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 130, run.stderr
    assert run.stderr == "dgno: interrupted\n"


def test_a_flux_the_default_was_not_trained_with_asks_for_the_model(capsys, tmp_path, monkeypatch, user_dir):
    """`--flux none` used to swap in another model silently; now the user names the model."""
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    torch.manual_seed(0)
    net = build_model("dgno", preset_config("tiny"))
    save_checkpoint(shipped / "tiny-face", net, {"preset": "tiny"})
    save_checkpoint(shipped / "tiny-none", net, {"preset": "tiny", "flux": "none"})
    (shipped / "models.json").write_text(json.dumps({"default": "tiny-face"}))
    monkeypatch.setattr(registry, "shipped_model_dir", lambda: shipped)
    src = tmp_path / "small.tif"
    tifffile.imwrite(src, (np.random.default_rng(2).random((96, 128)) * 4095).astype(np.uint16))
    code, _, err = run(capsys, "deblur", src, "-o", tmp_path / "a.tif", "--flux", "none")
    assert code == 2 and not (tmp_path / "a.tif").exists()
    assert_one_error_line(err, "tiny-face", "trained with flux face", "tiny-none", "--model")
    code, _, err = run(capsys, "deblur", src, "-o", tmp_path / "a.tif", "--flux", "p0dg", "-q")
    assert code == 2
    assert_one_error_line(err, "no installed model was trained with it")
    code, _, err = run(capsys, "deblur", src, "-o", tmp_path / "b.tif", "--flux", "face")
    assert code == 0 and "with model tiny-face" in err  # the default's own flux: fine
    code, _, err = run(
        capsys, "deblur", src, "-o", tmp_path / "c.tif", "--flux", "none", "--model", "tiny-none"
    )
    assert code == 0 and "with model tiny-none" in err
    code, _, err = run(
        capsys, "deblur", src, "-o", tmp_path / "d.tif", "--model", "tiny-face", "--flux", "p0dg"
    )
    assert code == 0 and "with model tiny-face (E=8, flux=p0dg)" in err  # named: any flux runs
    # the Python API follows the same rule when the model is implied
    from napari_dgno import deblur
    from napari_dgno.errors import InputError

    with pytest.raises(InputError, match="tiny-none"):
        deblur(np.zeros((32, 32), np.float32) + 1, flux="none")


def test_self_ensemble_flag_reaches_deblur(capsys, tmp_path, checkpoint, user_dir, monkeypatch, deblur_calls):
    from napari_dgno import batch

    src = tmp_path / "small.tif"
    tifffile.imwrite(src, (np.random.default_rng(4).random((64, 80)) * 4095).astype(np.uint16))
    argv = ["deblur", src, "-o", tmp_path / "a.tif", "--model", checkpoint, "-q"]
    code, _, err = run(capsys, *argv, "--self-ensemble")
    assert code == 0, err
    code, _, err = run(capsys, "deblur", src, "-o", tmp_path / "b.tif", "--model", checkpoint, "-q")
    assert code == 0, err
    assert [k.get("self_ensemble") for k in deblur_calls] == [True, False]
    assert not np.array_equal(tifffile.imread(tmp_path / "a.tif"), tifffile.imread(tmp_path / "b.tif"))

    calls = []  # a batch (a folder) hands it to deblur_files
    monkeypatch.setattr(batch, "deblur_files", lambda *a, **k: calls.append(k) or [])
    code, _, err = run(capsys, "deblur", tmp_path, "-o", tmp_path / "out", "--self-ensemble", "-q")
    assert code == 0, err
    code, _, err = run(capsys, "deblur", tmp_path, "-o", tmp_path / "out", "-q")
    assert code == 0, err
    assert [c["options"].self_ensemble for c in calls] == [True, False]


def test_models_lists_models_and_preset_costs(capsys, user_dir, checkpoint):
    torch.manual_seed(0)
    save_checkpoint(user_dir / "my-scope", build_model("dgno", preset_config("tiny")), {
        "preset": "tiny", "metrics": {"psnr": 31.25},
    })  # fmt: skip
    code, out, err = run(capsys, "models")
    assert code == 0, err
    assert "my-scope" in out and "user" in out and "psnr=31.25" in out
    assert "GMACs (as the paper counts GFLOPs)" in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("paper ", "small "))]
    assert {(r[0], r[1]) for r in rows} == {
        (p, f) for p in ("paper", "small") for f in ("face", "p0dg", "none")
    }
    for row in rows:
        assert int(row[2].replace(",", "")) > 0 and float(row[-1]) > 0


def test_models_show_steps_over_all_stages_and_the_gain_over_input(capsys, user_dir):
    torch.manual_seed(0)
    stage1 = {"steps": 4000, "history": [{"step": 0, "input": {"psnr": 27.0}}]}
    stage2 = {"steps": 16000, "history": [{"step": 0, "input": {"psnr": 21.5}}], "base_training": stage1}
    save_checkpoint(user_dir / "two-stage", build_model("dgno", preset_config("tiny")), {
        "preset": "tiny", "metrics": {"psnr": 25.75}, "training": stage2,
    })  # fmt: skip
    code, out, err = run(capsys, "models")
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.startswith("two-stage"))
    # 20,000 steps in all; the gain is over the last stage's own blurred input, not stage 1's.
    assert "20,000" in row and "25.75 dB (+4.25 over input)" in row


def test_models_json(capsys, user_dir):
    code, out, _ = run(capsys, "models", "--json", "--size", "256")  # costs are cached per size
    assert code == 0
    data = json.loads(out)
    assert len(data["presets"]) == 6 and all(c["size"] == 256 for c in data["presets"])


def test_usage_errors_and_help(capsys):
    code, _, err = run(capsys, "deblur")
    assert code == 2
    assert_one_error_line(err, "required")
    code, _, err = run(capsys, "frobnicate")
    assert code == 2
    assert_one_error_line(err)
    assert main(["--help"]) == 0
    assert main([]) == 2
    capsys.readouterr()


def test_help_needs_no_torch_and_the_flux_choices_match_the_model():
    """Each subcommand imports torch inside its ``run``: `dgno --help` stays quick. The CLI keeps its
    own copy of the flux names for that reason; it must stay the model's."""
    import subprocess
    import sys

    from napari_dgno.cli._args import FLUX_CHOICES
    from napari_dgno.model import FLUX_VARIANTS

    code = (
        "import sys; from napari_dgno.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert FLUX_CHOICES == FLUX_VARIANTS


def test_models_answers_without_torch_in_under_two_seconds():
    """`dgno models` took 1-2 minutes: it built every preset to count it, after importing torch."""
    code = (
        "import sys, time; t = time.perf_counter(); from napari_dgno.cli import main; "
        "assert main(['models']) == 0; print('torch' in sys.modules, time.perf_counter() - t)"
    )
    env = dict(os.environ, NAPARI_DGNO_MODEL_DIR="/nonexistent")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    imported, seconds = out.stdout.strip().splitlines()[-1].split()
    assert imported == "False" and float(seconds) < 2.0, out.stdout


def test_the_cached_preset_costs_are_the_networks_counted():
    """The shipped cache must be for this model code (else `dgno models` counts again, slowly) and
    hold what counting gives. After changing model/, refresh it with
    python -c "from napari_dgno.cli.models import write_cost_cache; write_cost_cache()"."""
    from napari_dgno.cli.models import COST_CACHE, model_code_key, preset_costs
    from napari_dgno.io.catalog import ARCHITECTURE_NAMES
    from napari_dgno.model import ARCHITECTURES
    from napari_dgno.model.complexity import preset_cost

    assert json.loads(COST_CACHE.read_text())["key"] == model_code_key(), "stale: see the docstring"
    for row in preset_costs(256):
        if row["preset"] == "small":  # the paper preset takes ~10 s each to count
            params, gmacs = preset_cost("small", row["flux"], 256)
            assert (row["params"], row["gmacs"]) == (params, pytest.approx(gmacs))
    assert ARCHITECTURE_NAMES == tuple(ARCHITECTURES)
