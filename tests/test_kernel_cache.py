"""The on-disk kernel cache is stamped with every kernel source, not only the function's own."""

import os

import pytest
from numba import config

from neurosim.kernels import _cache, dense, smallgemm


def test_fingerprint_follows_every_source_file(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.py").write_text("y = 2\n")
    (tmp_path / "notes.txt").write_text("not a source\n")
    first = _cache.sources_fingerprint(str(tmp_path))
    assert _cache.sources_fingerprint(str(tmp_path)) == first
    (tmp_path / "notes.txt").write_text("still not a source\n")
    assert _cache.sources_fingerprint(str(tmp_path)) == first
    os.utime(tmp_path / "sub" / "b.py", ns=(10**9, 10**9))
    touched = _cache.sources_fingerprint(str(tmp_path))
    assert touched != first
    (tmp_path / "a.py").write_text("x = 10\n")  # a size change alone counts too
    os.utime(tmp_path / "a.py", ns=(10**9, 10**9))
    os.utime(tmp_path / "sub" / "b.py", ns=(10**9, 10**9))
    assert _cache.sources_fingerprint(str(tmp_path)) not in (first, touched)


def test_kernels_are_cached_under_the_fingerprint_of_all_sources():
    if not _cache.REGISTERED:
        pytest.skip("this numba has no list of cache locators to extend")
    if config.CACHE_DIR or not os.access(_cache.KERNELS_DIR, os.W_OK):
        pytest.skip("kernels cached elsewhere (NUMBA_CACHE_DIR or a read-only install)")
    for cached in (dense.mlp_forward._cache, smallgemm._GEMM_ENTRIES[0]._cache):
        locator = cached._impl._locator
        assert isinstance(locator, _cache.KernelSourcesLocator)
        assert locator.get_source_stamp() == _cache.FINGERPRINT
