"""The register-blocked small matrix products against float64 NumPy products."""

import os
import subprocess
import sys

import numpy as np
import pytest
from numba import njit

from neurosim.kernels.smallgemm import (
    ENABLED,
    MAX_FLOAT32_VOLUME,
    MAX_FLOAT64_VOLUME,
    MAX_PACKED_BYTES,
    MAX_PACKED_K,
    MIN_ROWS_TO_PACK,
    VECTOR_BYTES,
    _scipy_blas_paths,
    blas_threads,
    copies_rows_of_a,
    matmul_into,
    matmul_part_into,
    panel_width,
    uses_block_kernels,
)


@njit(cache=True)
def _takes_block_path(a, b, c):
    return uses_block_kernels(a, b, c)


def _operands(rng, m, k, n, dtype, a_transposed, b_transposed):
    a = rng.standard_normal((k, m) if a_transposed else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if b_transposed else (k, n)).astype(dtype)
    return (a.T if a_transposed else a), (b.T if b_transposed else b)


def _check(a, b, c):
    """Within the worst-case bound of a length-k sum with one rounding per step."""
    exact = a.astype(np.float64) @ b.astype(np.float64)
    eps = np.finfo(a.dtype).eps
    k = a.shape[1]
    bound = (k + 1) * eps * (np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64))
    assert c.dtype == a.dtype
    assert np.all(np.abs(c - exact) <= bound + np.finfo(a.dtype).tiny)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("a_transposed", [False, True])
@pytest.mark.parametrize("b_transposed", [False, True])
def test_every_layout_and_block_edge(dtype, a_transposed, b_transposed):
    rng = np.random.default_rng(0)
    nr = panel_width(np.dtype(dtype).itemsize)
    for m in (1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 32):
        for k in (1, 2, 7, 64):
            for n in (nr, 2 * nr, 3 * nr, 10):
                a, b = _operands(rng, m, k, n, dtype, a_transposed, b_transposed)
                c = np.full((m, n), np.nan, dtype)
                matmul_into(a, b, c)
                _check(a, b, c)
                assert _takes_block_path(a, b, c) == (ENABLED and n % nr == 0)


def test_views_into_flat_buffers_like_the_engine():
    """Operands that are reshaped slices of flat buffers (the engine's weights and workspaces)."""
    rng = np.random.default_rng(1)
    flat = rng.standard_normal(10_000).astype(np.float32)
    w = flat[37:37 + 48 * 32].reshape(48, 32)  # an unaligned start
    x = flat[3000:3000 + 9 * 48].reshape(9, 48)
    out = np.zeros(5000, np.float32)
    c = out[11:11 + 9 * 32].reshape(9, 32)
    matmul_into(x, w, c)
    _check(x, w, c)
    assert np.all(out[:11] == 0) and np.all(out[11 + 9 * 32:] == 0)  # nothing outside c
    g = np.empty((9, 48), np.float32)
    matmul_into(c, w.T, g)
    _check(c, w.T, g)


def test_large_products_use_blas_and_agree():
    rng = np.random.default_rng(2)
    k = n = 512
    m = MAX_FLOAT32_VOLUME // (k * n) + 1  # just above the limit (AVX2: 129, AVX-512: 2049)
    a, b = _operands(rng, m, k, n, np.float32, False, False)
    assert a.shape[0] * a.shape[1] * b.shape[1] > MAX_FLOAT32_VOLUME
    c = np.empty((m, n), np.float32)
    assert not _takes_block_path(a, b, c)
    matmul_into(a, b, c)
    np.testing.assert_allclose(c, a @ b, rtol=1e-4, atol=1e-4)
    below = np.empty((m - 1, n), np.float32)  # at the limit: block kernels on one BLAS thread
    assert _takes_block_path(a[1:], b, below) == (ENABLED and blas_threads() == 1)
    matmul_into(a[1:], b, below)
    _check(a[1:], b, below)


def test_long_transposed_operands_use_blas():
    """A ``b`` with contiguous columns is copied to a stack panel only up to MAX_PACKED_K rows."""
    rng = np.random.default_rng(5)
    nr = panel_width(4)
    for k in (MAX_PACKED_K, MAX_PACKED_K + 1):
        a, b = _operands(rng, 2, k, nr, np.float32, False, True)
        c = np.empty((2, nr), np.float32)
        matmul_into(a, b, c)
        _check(a, b, c)
        assert _takes_block_path(a, b, c) == (ENABLED and k <= MAX_PACKED_K)


def test_result_does_not_depend_on_the_row_split():
    """Every element is the same sequential sum whether computed in a full block or an edge one:
    the first rows of a product equal the product of the first rows, bit for bit."""
    if not ENABLED:
        pytest.skip("block kernels disabled on this CPU")
    rng = np.random.default_rng(3)
    a, b = _operands(rng, 13, 64, 32, np.float32, False, False)
    full = np.empty((13, 32), np.float32)
    matmul_into(a, b, full)
    for rows in (1, 5, 7):
        part = np.empty((rows, 32), np.float32)
        matmul_into(a[:rows], b, part)
        assert np.array_equal(part, full[:rows])
    bt = np.ascontiguousarray(b.T).T  # the same values with contiguous columns (packed path)
    packed = np.empty((13, 32), np.float32)
    matmul_into(a, bt, packed)
    assert np.array_equal(packed, full)


@njit(cache=True)
def _column_part(a, b, c, lo, hi):
    matmul_part_into(a, b[:, lo:hi], c[:, lo:hi])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("b_transposed", [False, True])
def test_column_parts_of_a_product(dtype, b_transposed):
    """Column slices of ``W`` or ``W.T`` into column slices of the result, as threads split a
    product: the block kernels at any size (the bits of the whole block-kernel product),
    BLAS through copies for widths off the panel grid, and the other columns untouched."""
    rng = np.random.default_rng(5)
    m, k, n = 64, 256, 256  # above the float64 size limit of matmul_into
    a, b = _operands(rng, m, k, n, dtype, False, b_transposed)
    nr = panel_width(np.dtype(dtype).itemsize)
    for lo, hi in ((0, 128), (128, 256), (2 * nr, 5 * nr), (96, 96 + nr + 3)):
        c = np.full((m, n), 7.0, dtype)
        _column_part(a, b, c, lo, hi)
        _check(a, b[:, lo:hi], c[:, lo:hi])
        assert np.all(c[:, :lo] == 7.0) and np.all(c[:, hi:] == 7.0)
        if ENABLED and (hi - lo) % nr == 0:
            whole = np.empty((m, hi - lo), dtype)
            matmul_part_into(a, np.ascontiguousarray(b[:, lo:hi]), whole)
            assert np.array_equal(c[:, lo:hi], whole)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("b_transposed", [False, True])
@pytest.mark.parametrize("whole", [True, False])
def test_copied_panels_whole_and_one_at_a_time(dtype, b_transposed, whole):
    """``b`` copied to panels (rows far apart or columns contiguous): whole when it fits in
    MAX_PACKED_BYTES, else panel by panel, with a ragged last tile along ``k``; the bits equal
    those of the unpacked kernels (the first rows of ``a`` with a ``b`` of contiguous rows:
    fewer than MIN_ROWS_TO_PACK rows read ``b`` in place)."""
    if not ENABLED:
        pytest.skip("block kernels disabled on this CPU")
    item = np.dtype(dtype).itemsize
    nr = panel_width(item)
    if whole:
        m, k, n = MIN_ROWS_TO_PACK, 37, 4 * nr
    else:
        k, n = MAX_PACKED_BYTES // (item * 3 * nr) + 3, 3 * nr
        m = MIN_ROWS_TO_PACK
        if m * k * n > (MAX_FLOAT32_VOLUME if dtype == np.float32 else MAX_FLOAT64_VOLUME):
            if not b_transposed:  # rows are copied only for MIN_ROWS_TO_PACK rows or more
                pytest.skip("a b with contiguous rows too large to copy whole exceeds the "
                            "size limit at MIN_ROWS_TO_PACK rows (AVX2 float64)")
            m = 8
    assert (k * n * item <= MAX_PACKED_BYTES) == whole
    threadpoolctl = pytest.importorskip("threadpoolctl")
    rng = np.random.default_rng(6)
    a, b = _operands(rng, m, k, n, dtype, False, b_transposed)
    c = np.full((m, n), np.nan, dtype)
    head = np.empty((5, n), dtype)
    with threadpoolctl.threadpool_limits(1):  # as in training: products beside BLAS threads
        assert _takes_block_path(a, b, c)
        matmul_into(a, b, c)
        matmul_into(a[:5], np.ascontiguousarray(b), head)
    _check(a, b, c)
    assert np.array_equal(head, c[:5])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("b_transposed", [False, True])
def test_transposed_a_copied_to_rows(dtype, b_transposed):
    """A transposed ``a`` (``A.T``, as in a weight gradient) large enough is first copied into
    contiguous rows, by tiles with ragged edges along both axes; the bits equal those of the
    kernels reading a contiguous copy of it in place, and small products read it in place."""
    if not ENABLED:
        pytest.skip("block kernels disabled on this CPU")
    item = np.dtype(dtype).itemsize
    nr = panel_width(item)
    lanes = VECTOR_BYTES // item
    m, k, n = 2 * MIN_ROWS_TO_PACK + 5, 5 * lanes + 3, max(4 * nr, 128)  # ragged tiles
    assert copies_rows_of_a(m, k, n, 1, m, nr)
    assert not copies_rows_of_a(m, k, n, k, 1, nr)  # rows already contiguous
    assert not copies_rows_of_a(m, k, nr, 1, m, nr)  # one panel: a is read once anyway
    assert not copies_rows_of_a(32, 64, 64, 1, 32, nr)  # too small to pay for the copy
    rng = np.random.default_rng(8)
    a, b = _operands(rng, m, k, n, dtype, True, b_transposed)
    c = np.full((m, n), np.nan, dtype)
    in_place = np.full((m, n), np.nan, dtype)
    matmul_part_into(a, b, c)
    matmul_part_into(np.ascontiguousarray(a), b, in_place)
    _check(a, b, c)
    assert np.array_equal(c, in_place)


def test_non_finite_values_propagate():
    a = np.ones((4, 8), np.float64)
    b = np.ones((8, 8), np.float64)
    a[1, 3] = np.nan
    b[2, 5] = np.inf
    c = np.empty((4, 8), np.float64)
    matmul_into(a, b, c)
    assert np.all(np.isnan(c[1]))
    assert np.isinf(c[0, 5]) and np.isinf(c[2, 5])
    assert np.isfinite(c[0, :5]).all()


def test_blas_thread_count_is_read_at_run_time():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    rng = np.random.default_rng(4)
    a, b = _operands(rng, 64, 128, 128, np.float32, False, False)
    c = np.empty((64, 128), np.float32)
    with threadpoolctl.threadpool_limits(1):
        assert blas_threads() == 1
        assert _takes_block_path(a, b, c) == ENABLED
    with threadpoolctl.threadpool_limits(2):
        assert blas_threads() == 2
        # threaded BLAS splits this product across cores; the block kernels would not
        assert not _takes_block_path(a, b, c)
        small_a, small_b = a[:32, :64], b[:64, :64]
        assert _takes_block_path(small_a, small_b, c[:32, :64]) == ENABLED


def test_blas_library_found_without_threadpoolctl(monkeypatch):
    import sys

    with_tpc = _scipy_blas_paths()
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)
    without = _scipy_blas_paths()
    assert without and with_tpc
    assert os.path.realpath(without[0]) == os.path.realpath(with_tpc[0])


@pytest.mark.skipif(not (ENABLED and VECTOR_BYTES == 64), reason="needs AVX-512 kernels to compare")
def test_avx2_kernels_give_the_bits_of_the_avx512_ones(tmp_path):
    """On an AVX-512 machine the AVX2 kernels (``NEUROSIM_SIMD_BYTES=32``, with a numba cache
    of their own) are tested too: the same bits for every layout, both float types, packed and
    in place, full and edge blocks."""
    script = tmp_path / "products.py"
    script.write_text(
        "import sys\n"
        "import numpy as np\n"
        "from neurosim.kernels.smallgemm import VECTOR_BYTES, matmul_into, matmul_part_into\n"
        "rng = np.random.default_rng(4)\n"
        "out = {'width': np.array(VECTOR_BYTES)}\n"
        "for dt in (np.float32, np.float64):\n"
        "    for m, k, n in ((13, 70, 64), (48, 128, 64), (5, 33, 32)):\n"
        "        a = rng.standard_normal((m, k)).astype(dt)\n"
        "        w = rng.standard_normal((k, n)).astype(dt)\n"
        "        for name, b in (('rows', w), ('cols', np.ascontiguousarray(w.T).T)):\n"
        "            c = np.empty((m, n), dt)\n"
        "            matmul_into(a, b, c)\n"
        "            out[f'{dt.__name__}-{m}-{name}'] = c\n"
        "            p = np.empty((m, n), dt)\n"
        "            matmul_part_into(a, b, p)\n"
        "            out[f'{dt.__name__}-{m}-{name}-part'] = p\n"
        "np.savez(sys.argv[1], **out)\n")
    results = []
    for width in ("32", "64"):
        env = {**os.environ, "NEUROSIM_SIMD_BYTES": width, "OPENBLAS_NUM_THREADS": "1",
               "NUMBA_CACHE_DIR": str(tmp_path / f"cache{width}")}  # block kernels throughout
        target = tmp_path / f"out{width}.npz"
        subprocess.run([sys.executable, str(script), str(target)], env=env, check=True,
                       timeout=600)
        results.append(np.load(target))
    assert int(results[0]["width"]) == 32 and int(results[1]["width"]) == 64
    for key in results[0].files:
        if key != "width":
            assert np.array_equal(results[0][key], results[1][key]), key
    env = {**os.environ, "NEUROSIM_SIMD_BYTES": "32"}
    env.pop("NUMBA_CACHE_DIR", None)
    run = subprocess.run([sys.executable, "-c", "import neurosim.kernels.smallgemm"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode != 0 and "NUMBA_CACHE_DIR" in run.stderr

