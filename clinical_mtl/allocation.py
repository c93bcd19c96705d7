"""Memory allocator settings for streaming runs; the command line applies them.

Scoring allocates arrays of the same few sizes for every chunk (tens of MB
each). With glibc's defaults each of them is a fresh ``mmap`` that the kernel
zero-fills page by page and unmaps when freed: on these machines the page
faults cost about as much as the network's forward pass. Raising the mmap
threshold and not trimming the heap lets freed chunks be reused, and so does
pyarrow's jemalloc pool without decay. Memory stays bounded by the chunk
size, since the same sizes recur.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def tune_for_streaming() -> bool:
    """Keep freed chunk buffers for reuse (glibc ``mallopt``, pyarrow's jemalloc pool).

    Returns
    -------
    bool
        Whether glibc took the settings (False on other C libraries, where
        nothing changes).
    """
    import pyarrow as pa

    try:
        pa.jemalloc_set_decay_ms(-1)
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:  # a pyarrow built without jemalloc: its default pool stays
        pass
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
    if not hasattr(libc, "mallopt"):
        return False
    settings = ((_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 64 << 20))
    return all(libc.mallopt(option, value) == 1 for option, value in settings)
