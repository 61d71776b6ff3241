"""Keep freed memory in the process (glibc malloc), so large tensors are not page-faulted in anew.

glibc serves every block above a dynamic threshold (128 KiB, rising to at most 32 MiB) with a
fresh ``mmap`` and gives the heap's free top back to the kernel, so each eager PyTorch forward of
MoCE-IR-S pays for its activations in page faults again: about 300 thousand minor faults per
run at 256 px and 3-4 million at 512 px. Keeping the memory took eager from about 1.6 to 1.2 s
at 256 px and from 8.9 to 5.3 s at 512 px on the 2-core CPU (docs/performance.md). How many
faults a run takes also depends on which sizes the process ran before (a 512 px run raises the
dynamic threshold for every later 256 px run), so benchmarks that leave glibc's defaults in
place time the allocator's history, not the model. ONNX Runtime is not affected: its arena keeps its buffers.

This is what jemalloc or tcmalloc give PyTorch deployments (the usual advice for CPU inference);
here it is two ``mallopt`` calls, no extra library. Being process-wide, it is set by the program,
not by a library call: the ``moce`` command line does it at start (so ``moce restore`` runs as fast
as ``moce bench`` measures), and :func:`freed_memory_kept` tells the benchmark which setting it ran under.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

M_TRIM_THRESHOLD = -1  # glibc malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap and are reused
TRIM_THRESHOLD = 1 << 31  # the heap keeps up to 2 GiB of free top instead of returning it
_kept = False


def keep_freed_memory() -> bool:
    """Make malloc reuse freed blocks (process-wide, for the rest of the process).

    Returns whether the setting took effect: False where the C library is not glibc, or where
    ``MOCE_MALLOC_DEFAULTS=1`` asks for glibc's defaults (to time them, say). Resident memory
    no longer shrinks after a large run, and the peak can grow, as freed blocks inside the heap
    are reused rather than returned (eager at 512 px: ~1.1 -> ~1.6 GB); that suits a benchmark,
    not a library or a long-lived service.
    """
    global _kept
    if os.environ.get("MOCE_MALLOC_DEFAULTS") == "1":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    _kept = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    return _kept


def freed_memory_kept() -> bool:
    """Whether :func:`keep_freed_memory` took effect in this process."""
    return _kept
