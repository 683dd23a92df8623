"""glibc's malloc told to reuse the memory it frees, for processes that compute LRP relevance.

PyTorch's CPU tensors come from ``malloc``. With glibc's defaults a freed block larger than the
(dynamic) mmap threshold goes back to the system, the heap's top is trimmed, and the next tensor
of that size faults its pages in again. The relevance pass makes several temporaries per hooked
layer (the stabilised output, the relevance divided by it, its product with the input): on the CPU
it spent about a sixth of its time in page faults (``benchmarks/relevance_cost.py``: 0.49 M minor
faults over the run with the defaults, 0.21 M with this; resnet_small's pass 71–73 → 60–63 ms a
batch, training unchanged). :func:`reuse_freed_memory` raises the mmap threshold to glibc's
maximum (32 MiB) and the trim threshold to 1 GiB, so freed blocks stay in the heap for the next
tensor.

The cost: the process keeps its peak heap until it ends (about +130 MB in that benchmark). So only
processes that end when their work does call it: the simulation's preparation
(:func:`swarm.preparation.prepare_fleet`, a process of its own) and ``python -m swarm.prune``; never
the simulated nodes, whose memory is the fleet's. Tensors above 32 MiB (ResNet-50's activations at
224 px) are mmapped whatever the setting.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

# glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: mallopt refuses more
TRIM_THRESHOLD = 1024 * 1024 * 1024


def reuse_freed_memory() -> bool:
    """Tune this process's malloc as the module says; ``False`` where the C library is not glibc
    (macOS, musl), whose allocators are left as they are."""
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    # Both or neither: either one alone turns off glibc's dynamic threshold, which is slower still.
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(libc.mallopt(M_TRIM_THRESHOLD,
                                                                                         TRIM_THRESHOLD))
