"""Large tensors reuse freed memory (napari_dgno.memory): what made 2048² inference 3x faster."""

import os
import subprocess
import sys
import types

import pytest

from napari_dgno import memory

glibc = pytest.mark.skipif(memory._glibc() is None, reason="glibc's allocator only")

# Hold a 256 MB buffer, free it, then release: resident memory (MB) at each point.
PROBE = """
import numpy as np
from napari_dgno import memory

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

kept = memory.keep_freed_memory()
base = rss_mb()
a = np.ones(64 * 2**20, dtype=np.float32)
held = rss_mb() - base
del a
freed = rss_mb() - base
memory.release_freed_memory()
print(kept, round(held), round(freed), round(rss_mb() - base))
"""


def probe(**env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != memory.MALLOC_ENV}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", *(int(v) for v in out[1:])


@glibc
def test_a_freed_large_buffer_stays_for_reuse_until_released():
    kept, held, freed, released = probe()
    assert kept and held >= 250
    assert freed >= 250  # kept for the next tensor: no fresh pages for the kernel to zero
    assert released < 50  # and given back when a job ends


@glibc
@pytest.mark.parametrize("env", [{memory.MALLOC_ENV: "system"}, {"MALLOC_MMAP_THRESHOLD_": "131072"}])
def test_the_users_allocator_choice_is_left_alone(env):
    kept, held, freed, _ = probe(**env)
    assert not kept and held >= 250
    assert freed < 50  # glibc's default: a large buffer is unmapped as soon as it is freed


def test_a_preloaded_allocator_and_a_napari_session_are_left_alone(monkeypatch):
    monkeypatch.delitem(sys.modules, "napari", raising=False)
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    assert memory._leave_allocator_alone()
    monkeypatch.setenv("LD_PRELOAD", "")
    monkeypatch.delenv(memory.MALLOC_ENV, raising=False)
    for name in memory._GLIBC_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert not memory._leave_allocator_alone()
    monkeypatch.setitem(sys.modules, "napari", types.ModuleType("napari"))  # the plugin's host
    assert memory._leave_allocator_alone()


def test_release_is_safe_to_call_anywhere():
    memory.release_freed_memory()
    memory.release_freed_memory()
