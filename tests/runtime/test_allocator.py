"""Keeping freed memory removes the page faults a repeated large allocation pays with glibc's defaults."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# Allocates and frees 64 blocks of 1 MiB (the sizes of activations) three times; prints the minor
# page faults of the last time. glibc maps such blocks anew or trims them off the heap every time.
_REPEATED_ALLOCATION_FAULTS = """
import resource, sys
import numpy as np
from moce.runtime.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def touch():
    blocks = [np.ones(1 << 18, np.float32) for _ in range(64)]
    del blocks
touch()
touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
touch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def keeps_freed_memory_here() -> bool:
    """Whether :func:`moce.runtime.allocator.keep_freed_memory` can take effect on this machine."""
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def _repeated_allocation_faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _REPEATED_ALLOCATION_FAULTS, mode], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip())


@pytest.mark.skipif(not keeps_freed_memory_here(), reason="mallopt settings are glibc's")
def test_a_freed_buffer_is_reused_instead_of_faulted_in_again():
    pages = (64 << 20) // 4096
    assert _repeated_allocation_faults("default") > pages // 2  # every page faulted in again
    assert _repeated_allocation_faults("keep") < pages // 100


def test_the_setting_says_when_it_cannot_apply(monkeypatch):
    from moce.runtime import allocator

    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    assert allocator.keep_freed_memory() is False


def test_the_environment_can_ask_for_glibc_defaults(monkeypatch):
    from moce.runtime import allocator

    monkeypatch.setenv("MOCE_MALLOC_DEFAULTS", "1")
    assert allocator.keep_freed_memory() is False
