import platform

import pyarrow as pa
import pytest

from clinical_mtl.allocation import tune_for_streaming


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt settings are glibc's")
def test_streaming_settings_are_taken_by_glibc_and_pyarrow():
    assert tune_for_streaming() is True
    assert pa.default_memory_pool().backend_name == "jemalloc"
    assert pa.array(range(1_000)).sum().as_py() == 499_500  # allocations still work
