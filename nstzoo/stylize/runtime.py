"""CPU run-time settings the engine applies before stylizing: allocator and memory layout.

Measured on 2 cores (bench/stylize_speed.py): a batch of 8 images at 256 px was ~40 % *slower* per
image than one image at a time. The cause is glibc's malloc: blocks above its mmap threshold (at
most 32 MiB by default) are mapped fresh for every allocation and unmapped on free, so every large
activation of a batch (8 x 64 x 256 x 256 floats = 128 MiB) page-faults through all its memory
again, layer after layer. One image's activations stay under the threshold and are recycled.
Raising the threshold (and the trim threshold, so freed memory is kept for the next layer) lets
batches reuse memory too; peak memory is unchanged, since the peak is held either way.

Channels-last layout lets oneDNN's convolutions run without reordering (~8 % on the VGG models).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["tune_cpu_allocator", "resident_bytes"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_tuned: bool | None = None


def tune_cpu_allocator(mmap_threshold: int = 1 << 30) -> bool:
    """Keep large freed blocks in the heap for reuse (glibc only; a no-op elsewhere). Idempotent.

    Returns:
        True when glibc accepted the settings.
    """
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _tuned = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, 2 * mmap_threshold))
    return _tuned


def resident_bytes(default: int = 1_000_000_000) -> int:
    """This process's resident set size now (Linux ``/proc/self/statm``), else ``default``.

    What the engine counts as already spent from ``--max-memory``: Python, torch and its libraries
    (~0.9 GB with every plugin loaded, measured) and the loaded weights.
    """
    import os

    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return default
