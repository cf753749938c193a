"""A corpus of bad input files for `dgno deblur`, and interrupted runs: never a traceback or a partial file.

The corpus is generated here (no committed binaries). Each bad file must give a non-zero exit and
exactly one ``dgno: error: ...`` line on stderr (no warnings, no traceback), and leave nothing
behind. Cases already covered in test_cli.py (plain text, a truncated half, 0 bytes, RGB, a missing
file, a folder) are not repeated.
"""

import hashlib
import json
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_dgno.cli import main
from napari_dgno.errors import CheckpointError
from napari_dgno.io import load_checkpoint, save_checkpoint
from napari_dgno.model import build_model, preset_config

pytestmark = pytest.mark.usefixtures("one_thread_env")


# ---------------------------------------------------------------------------------------------------
# Hand-made TIFFs: a header and one IFD, so the header can lie


def _tiff(width, height, data=b"\0" * 16, bits=16, compression=1, ifd_offset=8):
    """A little-endian classic TIFF with one strip; every field is whatever the caller claims."""
    entries = [
        (256, 4, width), (257, 4, height), (258, 3, bits), (259, 3, compression), (262, 3, 1),
        (273, 4, None), (277, 3, 1), (278, 4, height), (279, 4, len(data)),
    ]  # fmt: skip
    data_offset = 8 + 2 + 12 * len(entries) + 4
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        value = data_offset if value is None else value
        ifd += struct.pack(
            "<HHIHH" if kind == 3 else "<HHII", tag, kind, 1, value, *([0] if kind == 3 else [])
        )
    ifd += struct.pack("<I", 0)  # no next IFD (a self-pointing one is tolerated by tifffile: fine)
    return b"II*\x00" + struct.pack("<I", ifd_offset) + ifd + data


def _write(path: Path, case: str) -> Path:
    """Make the bad input for ``case`` at ``path`` (or a link/fifo there); returns the path to pass."""
    rng = np.random.default_rng(0)
    if case == "absurd header (10^6 x 10^6 px, 16 bytes)":
        path.write_bytes(_tiff(10**6, 10**6))
    elif case == "absurd header, deflate":
        path.write_bytes(_tiff(10**6, 10**6, zlib.compress(bytes(64)), compression=8))
    elif case == "damaged strip in a big (lazy) file":
        # 40000^2 px claimed, 1 MiB of garbage: read lazily, so it fails while normalising
        path.write_bytes(_tiff(40000, 40000, rng.bytes(1 << 20), bits=8, compression=8))
    elif case == "IFD offset past the end":
        path.write_bytes(_tiff(64, 64, bytes(64 * 64 * 2), ifd_offset=10**9))
    elif case == "BigTIFF header only":
        path.write_bytes(b"II+\x00\x08\x00\x00\x00\x10\x00")
    elif case == "unknown compression":
        path.write_bytes(_tiff(64, 64, rng.bytes(500), compression=50123))
    elif case == "samples after X (not RGB)":
        tifffile.imwrite(
            path, np.zeros((32, 32, 2), np.uint16), photometric="minisblack", planarconfig="contig"
        )
    elif case == "a line, not an image (1 x 500)":
        tifffile.imwrite(path, np.zeros((1, 500), np.uint16))
    elif case == "bilevel (1-bit)":
        tifffile.imwrite(path, rng.random((64, 64)) > 0.5)
    elif case == "complex pixels":
        tifffile.imwrite(path, np.zeros((64, 64), np.complex64))
    elif case == "NaN pixels":
        tifffile.imwrite(path, np.where(rng.random((64, 64)) > 0.9, np.nan, 1.0).astype(np.float32))
    elif case == "symlink loop":
        other = path.with_name("other.tif")
        path.symlink_to(other)
        other.symlink_to(path)
    elif case == "dangling symlink":
        path.symlink_to(path.with_name("gone.tif"))
    elif case == "named pipe":
        os.mkfifo(path)  # reading it would block forever
    else:
        raise AssertionError(case)
    return path


CASES = [
    "absurd header (10^6 x 10^6 px, 16 bytes)",
    "absurd header, deflate",
    "damaged strip in a big (lazy) file",
    "IFD offset past the end",
    "BigTIFF header only",
    "unknown compression",
    "samples after X (not RGB)",
    "a line, not an image (1 x 500)",
    "bilevel (1-bit)",
    "complex pixels",
    "NaN pixels",
    "symlink loop",
    "dangling symlink",
    "named pipe",
]


def _assert_nothing_left(folder: Path, expected: set[str]) -> None:
    left = {p.name for p in folder.iterdir()}
    assert left == expected, left - expected


@pytest.mark.parametrize("case", CASES)
def test_bad_file_is_one_line_and_leaves_nothing(tmp_path, capsys, checkpoint, case):
    bad = _write(tmp_path / "bad.tif", case)
    before = {p.name for p in tmp_path.iterdir()}
    out = tmp_path / "out.tif"
    with warnings.catch_warnings(record=True) as caught:  # a warning would be a second line
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", ResourceWarning)  # hidden by Python's default filters
        code = main(["deblur", str(bad), "-o", str(out), "--model", str(checkpoint), "-q"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("dgno: error: "), err
    assert [str(w.message) for w in caught] == []
    _assert_nothing_left(tmp_path, before)


def test_bad_file_in_a_subprocess_prints_exactly_one_line(tmp_path, checkpoint):
    """The real stderr of the real command (tifffile's logging and warnings included)."""
    bad = _write(tmp_path / "bad.tif", "absurd header (10^6 x 10^6 px, 16 bytes)")
    out = tmp_path / "out.tif"
    cmd = [
        sys.executable,
        "-m",
        "napari_dgno.cli",
        "deblur",
        str(bad),
        "-o",
        str(out),
        "--model",
        str(checkpoint),
    ]
    env = dict(os.environ, NAPARI_DGNO_THREADS="1")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("dgno: error: "), result.stderr
    assert "10^6" not in result.stderr and "1000000x1000000" in result.stderr
    _assert_nothing_left(tmp_path, {"bad.tif"})


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged user")
def test_unreadable_file_as_another_user(checkpoint):
    """Root reads everything, so the command runs as 'nobody' on a file only root may read."""
    folder = Path(tempfile.mkdtemp(prefix="dgno-perm-"))  # pytest's own folders are private to root
    try:
        _run_as_nobody(folder, checkpoint)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run_as_nobody(folder: Path, checkpoint: Path) -> None:
    folder.chmod(0o777)
    src = folder / "secret.tif"
    tifffile.imwrite(src, np.zeros((64, 64), np.uint16))
    src.chmod(0o600)
    model = folder / "model"
    model.mkdir(mode=0o755)
    for file in checkpoint.parent.iterdir():
        (model / file.name).write_bytes(file.read_bytes())
        (model / file.name).chmod(0o644)
    for parent in folder.parents:  # nobody must be able to walk down to the folder
        if not os.access(parent, os.X_OK) or parent.stat().st_mode & 0o001 == 0:
            pytest.skip(f"{parent} is not searchable by other users")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "napari_dgno.cli", "deblur", str(src), "-o", str(folder / "out.tif"),
             "--model", str(model / "tiny.json"), "-q"],
            capture_output=True, text=True, timeout=120, user=65534, group=65534, cwd=folder,
            env=dict(os.environ, NAPARI_DGNO_THREADS="1", HOME=str(folder), NAPARI_DGNO_MODEL_DIR=str(model)),
        )  # fmt: skip
    except PermissionError:
        pytest.skip("this Python is not usable by other users")
    if "Error" in result.stderr and "dgno: error" not in result.stderr:
        pytest.skip(f"the Python environment is not readable by other users: {result.stderr[-200:]}")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "permission denied" in lines[0].lower(), result.stderr
    _assert_nothing_left(folder, {"secret.tif", "model"})


# ---------------------------------------------------------------------------------------------------
# Interrupted runs


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_deblur(tmp_path, checkpoint, *options):
    """`dgno deblur` on a stack that takes several seconds; returns (process, stderr text so far)."""
    src = tmp_path / "stack.tif"
    # Long enough (~600 tiles) that a busy machine cannot finish it before the signal arrives.
    stack = (np.random.default_rng(1).random((24, 512, 512)) * 4000).astype(np.uint16)
    tifffile.imwrite(src, stack, metadata={"axes": "ZYX"})
    cmd = [sys.executable, "-m", "napari_dgno.cli", "deblur", str(src), "-o", str(tmp_path / "out.tif"),
           "--model", str(checkpoint), "--tile", "128", "--overlap", "16", *options]  # fmt: skip
    env = dict(os.environ, NAPARI_DGNO_THREADS="1", PYTHONUNBUFFERED="1")
    # A shell's background job (and so this test run, if started with &) inherits SIGINT ignored.
    proc = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, preexec_fn=_default_sigint
    )
    err = bytearray()

    def pump():
        for chunk in iter(lambda: proc.stderr.read1(4096), b""):
            err.extend(chunk)

    threading.Thread(target=pump, daemon=True).start()
    return proc, err


def _wait_for_tiles(proc, err, tiles=3, timeout=120):
    """Until the progress bar shows a few tiles done: the run is inside the network, not starting."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        text = err.decode(errors="replace")
        done = [
            int(m.split("/")[0])
            for m in text.replace("\r", " ").split()
            if m.count("/") == 1 and m.split("/")[0].isdigit()
        ]
        if done and max(done) >= tiles:
            return
        time.sleep(0.05)
    raise AssertionError(f"the run never got going: {err.decode(errors='replace')[-500:]}")


@pytest.mark.parametrize("stream", [False, True], ids=["in-memory", "streamed"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_deblur_leaves_no_output_and_no_temporaries(tmp_path, checkpoint, sig, stream):
    """Streamed results are written while the network runs: even then SIGKILL leaves no file."""
    proc, err = _start_deblur(tmp_path, checkpoint, *(["--stream"] if stream else []))
    _wait_for_tiles(proc, err)
    proc.send_signal(sig)
    code = proc.wait(timeout=60)
    time.sleep(0.1)  # the stderr pump drains
    if sig == signal.SIGINT:
        assert code == 130
        last = err.decode(errors="replace").replace("\r", "\n").strip().splitlines()[-1]
        assert last == "dgno: interrupted" and "Traceback" not in err.decode(errors="replace")
    else:
        assert code == -signal.SIGKILL
    _assert_nothing_left(tmp_path, {"stack.tif"})


@pytest.mark.parametrize("how", ["unnamed file", "named temporary file", "copy where linking fails"])
def test_atomic_file_appears_only_when_complete(tmp_path, monkeypatch, how):
    from napari_dgno.io import atomic as ck

    if how == "named temporary file":  # no O_TMPFILE here (macOS, NFS ...)
        monkeypatch.setattr(ck, "_anonymous_file", lambda folder: None)
    elif how == "copy where linking fails":

        def refuse(*args, **kwargs):
            raise PermissionError("linking refused")

        monkeypatch.setattr(ck.os, "link", refuse)
    dest = tmp_path / "out.bin"
    with pytest.raises(KeyboardInterrupt):
        with ck.atomic_file(dest) as f:
            f.write(b"partial")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    with ck.atomic_file(dest) as f:
        f.write(b"complete")
        assert not dest.exists()
    assert dest.read_bytes() == b"complete" and [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    assert dest.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------------------------------------------
# Malicious checkpoints (pickles by name and content, lying shapes in the JSON, truncated files and
# NaN weights are in test_checkpoint.py). Here the attacker controls both files, so the JSON's
# SHA-256 of the tensor file is made to match: the parsers themselves must refuse.


class _Payload:
    """Unpickling this would create a marker file: proof that nothing is ever unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _safetensors(header: dict | bytes, data: bytes = b"", header_len: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if header_len is None else header_len) + raw + data


def _forge(stem: Path, weights: bytes) -> None:
    """Replace the tensor file and make the JSON's recorded hash agree with it."""
    Path(f"{stem}.safetensors").write_bytes(weights)
    meta_path = Path(f"{stem}.json")
    meta = json.loads(meta_path.read_text())
    meta["weights"]["sha256"] = hashlib.sha256(weights).hexdigest()
    meta_path.write_text(json.dumps(meta))


F32 = {"dtype": "F32", "shape": [8, 1, 3, 3]}
FORGERIES = {
    "offsets past the end": _safetensors({"intro.weight": {**F32, "data_offsets": [0, 10**12]}}, bytes(288)),
    "shape larger than its bytes": _safetensors(
        {"intro.weight": {**F32, "data_offsets": [0, 16]}}, bytes(16)
    ),
    "shape that overflows": _safetensors(
        {"intro.weight": {"dtype": "F32", "shape": [2**40, 2**40, 2**40], "data_offsets": [0, 8]}}, bytes(8)
    ),
    "overlapping tensors": _safetensors(
        {"a": {**F32, "data_offsets": [0, 288]}, "b": {**F32, "data_offsets": [100, 388]}}, bytes(388)
    ),
    "header length 2^63": _safetensors({}, bytes(64), header_len=2**63),
    "header length 2^64 - 1": _safetensors({}, bytes(64), header_len=2**64 - 1),
    "header that is not an object": _safetensors(b"[1, 2, 3]"),
    "header nested too deeply": _safetensors(b"{" + b'"a":{' * 50_000 + b"}" * 50_001),
    "integer weights": None,  # filled in below: the right shapes, int32 instead of float
    "pickle, protocol 0": pickle.dumps(_Payload(Path("/nonexistent")), protocol=0),
}


@pytest.fixture
def tiny_checkpoint(tmp_path):
    torch.manual_seed(0)
    net = build_model("dgno", preset_config("tiny"))
    save_checkpoint(tmp_path / "m", net, {"preset": "tiny"})
    return tmp_path / "m", net


@pytest.mark.parametrize("forgery", list(FORGERIES))
def test_forged_tensor_files_are_refused_in_one_line(tiny_checkpoint, tmp_path, forgery):
    from safetensors.torch import save

    stem, net = tiny_checkpoint
    marker = tmp_path / "pwned"
    if forgery == "integer weights":
        weights = save({k: torch.zeros(v.shape, dtype=torch.int32) for k, v in net.state_dict().items()})
    elif forgery.startswith("pickle"):
        weights = pickle.dumps(_Payload(marker), protocol=0)
    else:
        weights = FORGERIES[forgery]
    _forge(stem, weights)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(stem)
    message = str(err.value)
    assert message and "\n" not in message and "m.safetensors" in message, message
    assert not marker.exists()


def test_json_claiming_a_huge_network_is_refused_before_allocating(tiny_checkpoint):
    """width 4096 would need ~90 GB: refused from the shapes alone, in milliseconds."""
    stem, _ = tiny_checkpoint
    meta = json.loads(Path(f"{stem}.json").read_text())
    for config in ({"width": 4096}, {"width": 10**9}, {"ffn_expand": 1e6}):
        Path(f"{stem}.json").write_text(json.dumps({**meta, "config": {**meta["config"], **config}}))
        started = time.perf_counter()
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(stem)
        assert time.perf_counter() - started < 5 and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "architecture, config, words",
    [
        ("dgno", {"enc_blocks": [10000, 10000, 10000, 10000]}, "enc_blocks[0] must be between 0 and 256"),
        ("dgno", {"dec_layers": [1, 10**9, 1]}, "dec_layers[1] must be between 0 and 256"),
        ("dgno", {"width": 100000}, "width must be between 1 and 4096"),
        ("dgno", {"heads": 0}, "heads must be between 1"),
        ("dgno", {"d_state": 10**7}, "d_state must be between"),
        ("dgno", {"enc_blocks": [1] * 1000, "enc_kinds": ["conv"] * 1000}, "levels must be between 2 and 8"),
        ("dgno", {"ssm_expand": 1e300}, "ssm_expand must be above 0"),
        # within the bounds, but more blocks than the tiny file has tensors (one block has many)
        ("dgno", {"enc_blocks": [200, 1, 1, 1]}, "describes a network of 206 blocks, more than the"),
        ("nafnet", {"middle_blocks": 100000}, "middle_blocks must be between 0 and 256"),
        ("nafnet", {"enc_blocks": [256] * 8, "dec_blocks": [256] * 8}, "blocks, more than the"),
    ],
)
def test_json_claiming_a_huge_network_is_refused_without_building_it(
    tiny_checkpoint, monkeypatch, architecture, config, words
):
    """10000 blocks used to be built (~20 s, on the meta device) before the tensors refused them:
    the sizes are now checked against generous bounds and the file's header first."""
    from napari_dgno.model import DGNO, NAFNet, NAFNetConfig

    stem, _ = tiny_checkpoint
    meta = json.loads(Path(f"{stem}.json").read_text())
    base = meta["config"] if architecture == "dgno" else NAFNetConfig().to_dict()
    meta.update(architecture=architecture, config={**base, **config})
    Path(f"{stem}.json").write_text(json.dumps(meta))

    def built(*args, **kwargs):
        raise AssertionError("the network was built before its size was checked")

    monkeypatch.setattr(DGNO, "__init__", built)
    monkeypatch.setattr(NAFNet, "__init__", built)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(stem)
    message = str(err.value)
    assert words in message and "m.json" in message and "\n" not in message, message


def test_deeply_nested_json_is_one_line(tiny_checkpoint, monkeypatch, tmp_path):
    """Also in the model listing (`dgno models`, the widgets): listed as unreadable, no crash."""
    from napari_dgno.inference.engine import list_models

    stem, _ = tiny_checkpoint
    Path(f"{stem}.json").write_text(
        '{"format": "napari-dgno-checkpoint", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    )
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(stem)
    assert "nested too deeply" in str(err.value)
    monkeypatch.setenv("NAPARI_DGNO_MODEL_DIR", str(tmp_path))
    assert [m["name"] for m in list_models() if m["source"] == "user" and "error" in m] == ["m"]


def test_pickled_training_state_is_skipped_without_unpickling(tmp_path):
    """A run folder's newest state file swapped for a pickle: resume falls back, nothing runs."""
    from napari_dgno.train.engine import Callbacks, Trainer
    from test_train import TinySource, _config

    Trainer(_config(tmp_path, steps=4), source=TinySource()).run()
    marker = tmp_path / "pwned"
    Path(tmp_path / "t" / "step-000004.state.safetensors").write_bytes(pickle.dumps(_Payload(marker)))
    logs = []
    Trainer(_config(tmp_path, steps=6), source=TinySource(), callbacks=Callbacks(on_log=logs.append)).run()
    assert any("skipping damaged checkpoint step-000004" in m for m in logs)
    assert any("resumed from step-000002" in m for m in logs)
    assert not marker.exists()
