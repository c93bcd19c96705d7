"""Memory allocator settings for streaming runs; the command line applies them.

Scoring allocates arrays of the same few sizes for every chunk (tens of MB
each). With glibc's defaults each of them is a fresh ``mmap`` that the kernel
zero-fills page by page and unmaps when freed: on these machines the page
faults cost about as much as the network's forward pass. Raising the mmap
threshold and not trimming the heap lets freed chunks be reused, and so does
pyarrow's jemalloc pool without decay. What the allocators keep still creeps
up over a long run (freed blocks are not all reused), so scoring also hands
free memory back every few chunks with :func:`release_free_memory`.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_LIBC = None


def _libc() -> ctypes.CDLL:
    """The C library, loaded once (``release_free_memory`` runs every few chunks)."""
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None)
    return _LIBC


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
    libc = _libc()
    if not hasattr(libc, "mallopt"):
        return False
    settings = ((_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 64 << 20))
    return all(libc.mallopt(option, value) == 1 for option, value in settings)


def release_free_memory() -> bool:
    """Hand the memory that the allocators hold free back to the operating system.

    :func:`tune_for_streaming` makes glibc and pyarrow's pool keep what is
    freed, which saves the page faults of fresh allocations, but what they keep
    only grows: freed blocks are not always reused for the next chunk's
    allocations (fragmentation), so over a long run the heaps come to hold
    several times the memory in use and the peak memory (RSS) creeps up with the
    input's length instead of staying at what a chunk needs. Calling this every
    few chunks (as :func:`clinical_mtl.scoring.score_files` does) bounds that:
    glibc's ``malloc_trim(0)`` returns the free pages of every arena, and
    pyarrow's default memory pool purges its unused pages. Memory in use is
    untouched, and so are the settings. A call takes a few milliseconds while
    scoring; the pages handed back are faulted in again when next needed.

    Returns
    -------
    bool
        Whether glibc was asked to trim (False on other C libraries, where only
        pyarrow's pool is released).
    """
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    libc = _libc()
    if not hasattr(libc, "malloc_trim"):
        return False
    libc.malloc_trim(0)
    return True

