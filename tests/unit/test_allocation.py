import ctypes
import os
import platform

import numpy as np
import pyarrow as pa
import pytest

from clinical_mtl.allocation import release_free_memory, tune_for_streaming

GLIBC = platform.libc_ver()[0] == "glibc"


def _resident_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not GLIBC, reason="mallopt settings are glibc's")
def test_streaming_settings_are_taken_by_glibc_and_pyarrow():
    assert tune_for_streaming() is True
    assert pa.default_memory_pool().backend_name == "jemalloc"
    assert pa.array(range(1_000)).sum().as_py() == 499_500  # allocations still work


def test_release_leaves_memory_in_use_alone():
    pool = pa.default_memory_pool()
    before = pool.bytes_allocated()
    freed = pa.allocate_buffer(64 << 20, memory_pool=pool)
    np.frombuffer(freed, dtype=np.uint8)[:] = 1
    del freed
    kept = pa.allocate_buffer(8 << 20, memory_pool=pool)
    np.frombuffer(kept, dtype=np.uint8)[:] = 7
    assert release_free_memory() is GLIBC
    assert pool.bytes_allocated() == before + kept.size
    assert (np.frombuffer(kept, dtype=np.uint8) == 7).all()
    del kept
    assert pool.bytes_allocated() == before


@pytest.mark.skipif(not GLIBC or not os.path.exists("/proc/self/statm"), reason="glibc's heap, Linux's RSS")
def test_release_hands_back_what_glibc_keeps_after_tuning():
    tune_for_streaming()  # freed heap memory now stays resident, for reuse
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(1 << 20) for _ in range(128)]  # below the raised mmap threshold: on the heap
    assert all(blocks)
    for block in blocks:
        ctypes.memset(block, 1, 1 << 20)  # touched: resident
    for block in blocks:
        libc.free(block)
    kept = _resident_mb()
    release_free_memory()
    assert _resident_mb() < kept - 64  # most of the 128 MB freed goes back
