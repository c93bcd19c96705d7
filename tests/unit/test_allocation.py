import ctypes
import gc
import os
import platform

import numpy as np
import pyarrow as pa
import pytest

from clinical_mtl.scoring.allocation import release_free_memory, tune_for_streaming

GLIBC = platform.libc_ver()[0] == "glibc"
LINUX_RSS = os.path.exists("/proc/self/statm")
FREED, KEPT = 64 << 20, 8 << 20  # bytes
# Bounds on the pool's counters: what else the process allocates or frees meanwhile (other
# threads, pyarrow's own bookkeeping), small beside the buffers of these tests.
SLACK = 1 << 20


@pytest.fixture
def retaining_pool():
    """pyarrow's mimalloc pool as the default pool while the test runs: it keeps what is freed
    resident until released. No cyclic garbage collection meanwhile, which could free Arrow
    buffers of earlier tests and move the pool's counters."""
    try:
        pool = pa.mimalloc_memory_pool()
    except NotImplementedError:
        pytest.skip("pyarrow is built without mimalloc")
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pool)
    gc.collect()
    gc.disable()
    try:
        yield pool
    finally:
        gc.enable()
        pa.set_memory_pool(previous)


def _resident_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not GLIBC, reason="mallopt settings are glibc's")
def test_streaming_settings_are_taken_by_glibc_and_pyarrow():
    assert tune_for_streaming() is True
    assert pa.default_memory_pool().backend_name == "jemalloc"
    assert pa.array(range(1_000)).sum().as_py() == 499_500  # allocations still work


def _filled(size: int, value: int, pool: pa.MemoryPool) -> pa.Buffer:
    buffer = pa.allocate_buffer(size, memory_pool=pool)
    np.frombuffer(buffer, dtype=np.uint8)[:] = value  # touched: resident
    return buffer


def test_release_leaves_memory_in_use_alone(retaining_pool):
    before = retaining_pool.bytes_allocated()
    freed = _filled(FREED, 1, retaining_pool)
    del freed
    kept = _filled(KEPT, 7, retaining_pool)
    assert release_free_memory() is GLIBC
    assert KEPT - SLACK <= retaining_pool.bytes_allocated() - before <= KEPT + SLACK  # the kept buffer, not the freed
    assert (np.frombuffer(kept, dtype=np.uint8) == 7).all()
    del kept
    assert abs(retaining_pool.bytes_allocated() - before) <= SLACK


@pytest.mark.skipif(not LINUX_RSS, reason="Linux's RSS")
def test_release_hands_back_what_the_arrow_pool_keeps(retaining_pool):
    freed = _filled(FREED, 1, retaining_pool)
    del freed
    kept = _resident_mb()
    release_free_memory()
    assert _resident_mb() < kept - FREED / 2**20 / 2  # most of what was freed goes back


@pytest.mark.skipif(not GLIBC or not LINUX_RSS, reason="glibc's heap, Linux's RSS")
def test_release_hands_back_what_glibc_keeps_after_tuning():
    tune_for_streaming()  # freed heap memory now stays resident, for reuse
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    n_blocks, block = 128, 1 << 20  # below the raised mmap threshold: on the heap
    blocks = [libc.malloc(block) for _ in range(n_blocks)]
    assert all(blocks)
    for address in blocks:
        ctypes.memset(address, 1, block)  # touched: resident
    for address in blocks:
        libc.free(address)
    kept = _resident_mb()
    release_free_memory()
    assert _resident_mb() < kept - n_blocks * block / 2**20 / 2  # most of what was freed goes back
