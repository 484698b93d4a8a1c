"""Matrix products for the small operands of the MLP engine, without BLAS call overhead.

An OpenBLAS ``sgemm`` call on a 32 x 64 x 64 product spends more time in its interface (argument
checks, buffer management) than in arithmetic: it reaches about 40 % of the machine's GEMM rate,
and still only 60-75 % at 64 x 128 x 128. :func:`matmul_into` computes such products with a
register-blocked kernel instead: each call of a block kernel keeps an ``MR x NR`` block of the
result in ``2 MR`` SIMD registers (``NR`` = two vectors: with AVX-512 32 float32 or 16 float64
values, with AVX2 16 or 8; :data:`VECTOR_BYTES`) and adds one rank-1 update per step along the
shared dimension (a broadcast element of ``a`` times two vector loads of a row of ``b``, two
fused multiply-adds per row). Every element of the result is the plain sequential sum over
``k`` with one rounding per fused multiply-add, so the numbers depend neither on threads nor on
the library.

The kernels read ``b`` as panels of ``NR`` columns with adjacent rows. A ``b`` whose rows are far
apart in memory (a weight matrix ``W`` of width 128 or more: its rows are 512 bytes or more
apart, and a panel's rows fall into a few cache sets and evict each other) or whose columns are
contiguous (``W.T``) is first copied into such panels on the stack: whole, in one sweep along
the contiguous axis of ``b``, when it takes at most ``MAX_PACKED_BYTES``, else one panel at a
time; rows are copied as vectors, columns as transposed square tiles of one vector's width. The
copy only moves values, so packed and unpacked products give the same bits, and so do the AVX2
and AVX-512 kernels. A transposed ``a`` (``A.T`` of a C-contiguous ``A``, the input of a weight
gradient) would be read one element per row of ``A`` per step; when the product is large enough
(:func:`copies_rows_of_a`) it is first copied into contiguous rows on the heap, by the same
transposed tiles (1.1x-1.6x faster from 64 x 128 x 128 up, ``python benchmarks/bench_gemm.py``).

Large products, widths that are not a multiple of ``NR`` and machines without AVX2 and FMA go to
BLAS (``np.dot``) unchanged; :func:`uses_block_kernels` says which path a product takes. The size
limit is lower while the BLAS numba calls may use several threads (its thread count is read at
run time): a product that threaded BLAS would split across cores stays with BLAS. The engine's
training loop runs BLAS on one thread, so training always takes the block kernels.

The block-kernel product is compiled once per float type, as a C entry point (``cfunc``, cached
on disk) registered with LLVM under a fixed symbol name at import, and every specialisation of
:func:`matmul_into` calls it by that name. Compiled inline instead, its unrolled kernels were
optimised again inside every kernel calling :func:`matmul_into`, which cost about one second of
compilation per caller and specialisation.
"""

import ctypes
import os

import numpy as np
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import carray, cfunc, config, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

N_VECTORS = 2  # vectors per row of a result block: NR = 2 * VECTOR_BYTES / itemsize columns
MAX_ROWS = 6  # rows of a result block: 2 * 6 accumulators + 2 loads + 1 broadcast registers
# Longest shared dimension of a product whose ``b`` is copied one panel at a time to the stack
# (k x NR values: at most 256 KiB of the calling thread's stack).
MAX_PACKED_K = 2048
# Largest ``b`` copied whole to the stack (bytes).
MAX_PACKED_BYTES = 256 * 1024
# Fewest rows of ``a`` for which a ``b`` with contiguous rows is copied to panels: with fewer
# rows the copy costs more than the adjacent rows save.
MIN_ROWS_TO_PACK = 48
# Smallest m * k * n for which a transposed ``a`` is first copied into contiguous rows.
MIN_VOLUME_TO_COPY_A = 256 * 1024  # 32 x 64 x 64 loses 6-8 %, 64 x 128 x 128 gains 7-8 %
# Largest m * k * n when BLAS may use several threads: OpenBLAS runs products below about
# 65536 * 4 multiply-adds on one thread anyway.
MAX_VOLUME_THREADED_BLAS = 65536 * 4


def _host_has_fma_vectors() -> bool:
    """True when numba compiles for this machine's CPU and it has AVX2 and FMA (without them
    ``llvm.fma`` on vectors becomes a libm call per element)."""
    if config.CPU_NAME not in (None, "host"):
        return False
    features = llvm_binding.get_host_cpu_features()
    return bool(features.get("avx2", False) and features.get("fma", False))


def _vector_bytes() -> int:
    """Bytes of the SIMD registers the block kernels use: 64 with AVX-512F (twice the
    multiply-adds per instruction of AVX2), else 32.

    ``NEUROSIM_SIMD_BYTES=32`` selects the AVX2 kernels on an AVX-512 machine (the tests use
    it). numba's on-disk cache does not see this choice, so it needs a cache directory of its
    own (``NUMBA_CACHE_DIR``), or the cache would hand back kernels of the other width.
    """
    avx512 = (config.CPU_NAME in (None, "host")
              and llvm_binding.get_host_cpu_features().get("avx512f", False))
    choice = os.environ.get("NEUROSIM_SIMD_BYTES")
    if choice is None:
        return 64 if avx512 else 32
    allowed = ("32", "64") if avx512 else ("32",)
    if choice not in allowed:
        raise ValueError(f"NEUROSIM_SIMD_BYTES must be one of {allowed} on this machine, got "
                         f"{choice!r}")
    if int(choice) != (64 if avx512 else 32) and not config.CACHE_DIR:
        raise RuntimeError("NEUROSIM_SIMD_BYTES other than the machine's width needs its own "
                           "numba cache: set NUMBA_CACHE_DIR as well")
    return int(choice)


ENABLED = _host_has_fma_vectors()
VECTOR_BYTES = _vector_bytes()
# Largest m * k * n computed here; above it BLAS's packing and cache blocking win. With AVX2
# that happens early; the AVX-512 kernels (twice the multiply-adds per instruction) beat the
# BLAS numba calls (OpenBLAS, which runs AVX2 kernels on AMD Zen 4/5) up to these sizes
# (python benchmarks/bench_gemm.py --large).
if VECTOR_BYTES == 64:
    MAX_FLOAT32_VOLUME = 512 * 1024 * 1024
    MAX_FLOAT64_VOLUME = 256 * 1024 * 1024
else:
    MAX_FLOAT32_VOLUME = 128 * 256 * 256
    MAX_FLOAT64_VOLUME = 64 * 128 * 128

_THREADS_SYMBOL = "neurosim_blas_get_num_threads"
_GEMM_SYMBOLS = {types.float32: "neurosim_gemm_f32", types.float64: "neurosim_gemm_f64"}
_GET_THREADS_NAMES = ("scipy_openblas_get_num_threads", "openblas_get_num_threads",
                      "scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_")


def _scipy_blas_paths():
    """Files of the loaded BLAS libraries, SciPy's own (the one numba's ``np.dot`` calls) first;
    from threadpoolctl when installed, else from ``/proc/self/maps``."""
    import scipy.linalg.cython_blas  # noqa: F401  (loads the library)

    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        paths = set()
        if os.path.exists("/proc/self/maps"):
            with open("/proc/self/maps") as maps:
                for line in maps:
                    path = line.split()[-1]
                    name = os.path.basename(path).lower()
                    if name.startswith("lib") and "blas" in name and ".so" in name:
                        paths.add(path)
    else:
        paths = {lib.filepath for lib in ThreadpoolController().lib_controllers
                 if lib.user_api == "blas"}
    return sorted(paths, key=lambda path: "scipy" not in os.path.dirname(path))


@ctypes.CFUNCTYPE(ctypes.c_int)
def _unknown_blas_threads():
    return -1


def _register_blas_threads_symbol():
    """Point ``_THREADS_SYMBOL`` at the BLAS's ``get_num_threads`` (or at a function returning
    -1 when it cannot be found)."""
    for path in _scipy_blas_paths():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _GET_THREADS_NAMES:
            fn = getattr(lib, name, None)
            if fn is not None:
                llvm_binding.add_symbol(_THREADS_SYMBOL, ctypes.cast(fn, ctypes.c_void_p).value)
                return
    llvm_binding.add_symbol(_THREADS_SYMBOL,
                            ctypes.cast(_unknown_blas_threads, ctypes.c_void_p).value)


_register_blas_threads_symbol()


@intrinsic
def _blas_threads(typingctx):
    """Threads the BLAS may use for the next call, or -1 when unknown."""
    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []),
                                            _THREADS_SYMBOL)
        return builder.sext(builder.call(fn, []), ir.IntType(64))

    return types.int64(), codegen


@njit(cache=True)
def blas_threads():
    """Threads the BLAS numba's ``np.dot`` calls may use now, or -1 when unknown."""
    return _blas_threads()


def _block_kernel(rows):
    """An intrinsic computing one ``rows x NR`` block of ``c = a @ b`` (``rows`` <= MAX_ROWS).

    Arguments (offsets and strides in elements): ``a, a_off, a_row_stride, a_k_stride, b,
    b_row_stride, c, c_off, c_row_stride, k_len``; row ``k`` of ``b`` must hold ``NR`` contiguous
    values from ``k * b_row_stride``; the block is written (not added) to ``c``. ``k_len >= 1``.
    """

    @intrinsic
    def block_kernel(typingctx, a, a_off, a_rs, a_ks, b, b_rs, c, c_off, c_rs, k_len):
        arrays = (a, b, c)
        if not all(isinstance(x, types.Array) for x in arrays):
            return None
        dtype = a.dtype
        if dtype not in (types.float32, types.float64) or b.dtype != dtype or c.dtype != dtype:
            return None
        intp = types.intp
        sig = types.void(a, intp, intp, intp, b, intp, c, intp, intp, intp)

        def codegen(context, builder, signature, args):
            a_val, a_off, a_rs, a_ks, b_val, b_rs, c_val, c_off, c_rs, k_len = args
            a_ptr = context.make_array(signature.args[0])(context, builder, a_val).data
            b_ptr = context.make_array(signature.args[4])(context, builder, b_val).data
            c_ptr = context.make_array(signature.args[6])(context, builder, c_val).data
            scalar = context.get_value_type(dtype)
            vec, item = _vector_type(context, dtype)
            lanes = vec.count
            vec_ptr = vec.as_pointer()
            index = context.get_value_type(intp)
            i32 = ir.IntType(32)
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vec, [vec, vec, vec]),
                f"llvm.fma.v{lanes}{'f32' if dtype == types.float32 else 'f64'}")
            undef = ir.Constant(vec, ir.Undefined)
            splat_mask = ir.Constant(ir.VectorType(i32, lanes), [ir.Constant(i32, 0)] * lanes)
            zero = ir.Constant(vec, [ir.Constant(scalar, 0.0)] * lanes)

            def const(v):
                return ir.Constant(index, v)

            def vector_at(ptr, offset):
                return builder.bitcast(builder.gep(ptr, [offset]), vec_ptr)

            acc = [[cgutils.alloca_once_value(builder, zero) for _ in range(N_VECTORS)]
                   for _ in range(rows)]
            with cgutils.for_range(builder, k_len, intp=index) as loop:
                k = loop.index
                b_row = builder.mul(k, b_rs)
                b_vecs = [builder.load(vector_at(b_ptr, builder.add(b_row, const(v * lanes))),
                                       align=item) for v in range(N_VECTORS)]
                a_col = builder.add(a_off, builder.mul(k, a_ks))
                for r in range(rows):
                    a_at = builder.add(a_col, builder.mul(const(r), a_rs))
                    x = builder.load(builder.gep(a_ptr, [a_at]))
                    splat = builder.shuffle_vector(
                        builder.insert_element(undef, x, ir.Constant(i32, 0)), undef, splat_mask)
                    for v in range(N_VECTORS):
                        builder.store(builder.call(fma, [splat, b_vecs[v],
                                                         builder.load(acc[r][v])]), acc[r][v])
            for r in range(rows):
                c_row = builder.add(c_off, builder.mul(const(r), c_rs))
                for v in range(N_VECTORS):
                    builder.store(builder.load(acc[r][v]),
                                  vector_at(c_ptr, builder.add(c_row, const(v * lanes))),
                                  align=item)
            return context.get_dummy_value()

        return sig, codegen

    return block_kernel


_block1, _block2, _block3, _block4, _block5, _block6 = (_block_kernel(r) for r in range(1, 7))


def _same_float_arrays(src, dst):
    return (isinstance(src, types.Array) and isinstance(dst, types.Array)
            and src.dtype == dst.dtype and src.dtype in (types.float32, types.float64))


def _vector_type(context, dtype):
    scalar = context.get_value_type(dtype)
    item = context.get_abi_sizeof(scalar)
    return ir.VectorType(scalar, VECTOR_BYTES // item), item


@intrinsic
def _copy_vectors(typingctx, src, src_off, dst, dst_off, n_vectors):
    """``dst[dst_off:][:L] = src[src_off:][:L]``, ``L = n_vectors`` SIMD vectors of elements
    (offsets in elements from each array's first element; unaligned loads and stores)."""
    if not _same_float_arrays(src, dst):
        return None
    intp = types.intp

    def codegen(context, builder, signature, args):
        s_val, s_off, d_val, d_off, n_vec = args
        s_ptr = context.make_array(signature.args[0])(context, builder, s_val).data
        d_ptr = context.make_array(signature.args[2])(context, builder, d_val).data
        vec, item = _vector_type(context, src.dtype)
        index = context.get_value_type(intp)
        with cgutils.for_range(builder, n_vec, intp=index) as loop:
            off = builder.mul(loop.index, ir.Constant(index, vec.count))
            value = builder.load(builder.bitcast(builder.gep(s_ptr, [builder.add(s_off, off)]),
                                                 vec.as_pointer()), align=item)
            builder.store(value, builder.bitcast(builder.gep(d_ptr, [builder.add(d_off, off)]),
                                                 vec.as_pointer()), align=item)
        return context.get_dummy_value()

    return types.void(src, intp, dst, intp, intp), codegen


def _transpose_stages(builder, rows, lanes, i32):
    """Shuffles turning ``lanes`` row vectors of a square tile into its column vectors, in
    log2(lanes) stages: at block size ``b`` the pair of rows ``(i, i + b)`` swaps its
    off-diagonal ``b``-element blocks (for 8 lanes: the AVX lane-permute, shuffle and unpack
    network)."""
    def mask(indices):
        return ir.Constant(ir.VectorType(i32, lanes), [ir.Constant(i32, i) for i in indices])

    rows = list(rows)
    b = lanes // 2
    while b >= 1:
        keep = mask([j if (j // b) % 2 == 0 else lanes + j - b for j in range(lanes)])
        swap = mask([j + b if (j // b) % 2 == 0 else lanes + j for j in range(lanes)])
        out = list(rows)
        for i in range(lanes):
            if (i // b) % 2 == 0:
                out[i] = builder.shuffle_vector(rows[i], rows[i + b], keep)
                out[i + b] = builder.shuffle_vector(rows[i], rows[i + b], swap)
        rows = out
        b //= 2
    return rows


@intrinsic
def _transpose_tile(typingctx, src, src_off, src_row_stride, dst, dst_off, dst_row_stride):
    """Transpose one square tile of ``L x L`` elements (``L`` values per SIMD vector: with AVX2
    8 float32 or 4 float64, with AVX-512 16 or 8):
    ``dst[dst_off + c * dst_rs + r] = src[src_off + r * src_rs + c]``."""
    if not _same_float_arrays(src, dst):
        return None
    intp = types.intp

    def codegen(context, builder, signature, args):
        s_val, s_off, s_rs, d_val, d_off, d_rs = args
        s_ptr = context.make_array(signature.args[0])(context, builder, s_val).data
        d_ptr = context.make_array(signature.args[3])(context, builder, d_val).data
        vec, item = _vector_type(context, src.dtype)
        index = context.get_value_type(intp)
        lanes = vec.count

        def at(ptr, offset):
            return builder.bitcast(builder.gep(ptr, [offset]), vec.as_pointer())

        rows = [builder.load(at(s_ptr, builder.add(s_off, builder.mul(ir.Constant(index, r),
                                                                       s_rs))), align=item)
                for r in range(lanes)]
        cols = _transpose_stages(builder, rows, lanes, ir.IntType(32))
        for c, column in enumerate(cols):
            builder.store(column, at(d_ptr, builder.add(d_off, builder.mul(ir.Constant(index, c),
                                                                           d_rs))), align=item)
        return context.get_dummy_value()

    return types.void(src, intp, intp, dst, intp, intp), codegen


@intrinsic
def _stack_buffer(typingctx, like, size):
    """A 1-D array of ``size`` elements of ``like``'s float type on the caller's stack (valid
    until the calling function returns; nothing is allocated on the heap)."""
    if not isinstance(like, types.Array):
        return None
    array_type = types.Array(like.dtype, 1, "C")

    def codegen(context, builder, signature, args):
        _, size = args
        element = context.get_value_type(like.dtype)
        item = context.get_constant(types.intp, context.get_abi_sizeof(element))
        data = builder.alloca(element, size=size)
        array = context.make_array(array_type)(context, builder)
        context.populate_array(array, data=data, shape=cgutils.pack_array(builder, [size]),
                               strides=cgutils.pack_array(builder, [item]), itemsize=item,
                               meminfo=None)
        return array._getvalue()

    return array_type(like, types.intp), codegen


@njit(cache=True, inline="always")
def _column_panel(a, a_rs, a_ks, b, b_rs, c, c_off, c_rs, m, k):
    """``c[:, cols] = a @ b[:, :NR]`` for one panel of ``NR`` columns starting at ``c_off``,
    ``MAX_ROWS`` rows at a time (the last block has ``m % MAX_ROWS`` rows)."""
    i = 0
    while i + MAX_ROWS <= m:
        _block6(a, i * a_rs, a_rs, a_ks, b, b_rs, c, c_off + i * c_rs, c_rs, k)
        i += MAX_ROWS
    rest = m - i
    ao = i * a_rs
    co = c_off + i * c_rs
    if rest == 1:
        _block1(a, ao, a_rs, a_ks, b, b_rs, c, co, c_rs, k)
    elif rest == 2:
        _block2(a, ao, a_rs, a_ks, b, b_rs, c, co, c_rs, k)
    elif rest == 3:
        _block3(a, ao, a_rs, a_ks, b, b_rs, c, co, c_rs, k)
    elif rest == 4:
        _block4(a, ao, a_rs, a_ks, b, b_rs, c, co, c_rs, k)
    elif rest == 5:
        _block5(a, ao, a_rs, a_ks, b, b_rs, c, co, c_rs, k)


@njit(cache=True)
def panel_width(dtype_size):
    """``NR``: columns of a result block for elements of ``dtype_size`` bytes."""
    return N_VECTORS * VECTOR_BYTES // dtype_size


@njit(cache=True)
def uses_block_kernels(a, b, c):
    """True when :func:`matmul_into` computes ``a @ b`` with the block kernels (else BLAS)."""
    if not fits_block_kernels(a, b, c):
        return False
    volume = a.shape[0] * a.shape[1] * b.shape[1]
    if volume > MAX_VOLUME_THREADED_BLAS and _blas_threads() != 1:
        return False
    return volume <= (MAX_FLOAT32_VOLUME if a.itemsize == 4 else MAX_FLOAT64_VOLUME)


@njit(cache=True)
def fits_block_kernels(a, b, c):
    """True when the block kernels can compute ``a @ b`` into ``c`` whatever its size: AVX2
    and FMA, no empty dimension, ``n`` a multiple of ``NR``, ``b``'s rows or (for
    ``k <= MAX_PACKED_K``) columns contiguous and ``c``'s rows contiguous."""
    m, k = a.shape
    n = b.shape[1]
    if not ENABLED or m == 0 or k == 0 or n % panel_width(a.itemsize) != 0:
        return False
    item = a.itemsize
    b_rows = b.strides[1] == item
    b_cols = b.strides[0] == item and k <= MAX_PACKED_K
    return (b_rows or b_cols) and c.strides[1] == item


@intrinsic
def _call_gemm(typingctx, a, a_len, a_rs, a_ks, b, b_len, b_rs, b_cs, c, c_len, c_rs, m, k, n,
               rows, rows_len):
    """Call the compiled :func:`_gemm_entry` of ``a``'s float type through its registered
    symbol (compiled code refers to the name, so it stays cacheable and does not carry its own
    copy of the block kernels)."""
    if not all(isinstance(x, types.Array) for x in (a, b, c, rows)):
        return None
    dtype = a.dtype
    if dtype not in _GEMM_SYMBOLS or any(x.dtype != dtype for x in (b, c, rows)):
        return None
    intp = types.intp
    sig = types.void(a, intp, intp, intp, b, intp, intp, intp, c, intp, intp, intp, intp, intp,
                     rows, intp)

    def codegen(context, builder, signature, args):
        ptr = context.get_value_type(dtype).as_pointer()
        index = context.get_value_type(intp)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [ptr, index, index, index] * 2
                                            + [ptr] + [index] * 5 + [ptr, index]),
            _GEMM_SYMBOLS[dtype])
        values = list(args)
        for i in (0, 4, 8, 14):
            values[i] = context.make_array(signature.args[i])(context, builder, args[i]).data
        builder.call(fn, values)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, error_model="numpy")
def matmul_into(a, b, c):
    """``c = a @ b`` in place.

    Parameters
    ----------
    a : ndarray, shape (m, k)
        Any strides (a transposed view is read in place).
    b : ndarray, shape (k, n)
        Rows or columns contiguous (for instance ``W`` or ``W.T`` of a C-contiguous ``W``).
    c : ndarray, shape (m, n)
        Output, rows contiguous, same float type; must not overlap ``a`` or ``b``.

    Notes
    -----
    Small products (:func:`uses_block_kernels`) run in the register-blocked kernels, after
    ``b`` is copied into panels of ``NR`` columns on the stack when its columns are contiguous
    (``W.T``) or, for ``m >= MIN_ROWS_TO_PACK``, its rows are not adjacent, and a large
    transposed ``a`` into rows on the heap (module docstring). Everything else calls
    ``np.dot``.
    """
    if not uses_block_kernels(a, b, c):
        np.dot(a, b, c)
        return
    _block_product(a, b, c)


@njit(cache=True, error_model="numpy")
def matmul_part_into(a, b, c, blas=False):
    """``c = a @ b`` in place, for one part of a product that the caller has split (by
    columns, between threads): the block kernels whatever the size, else BLAS.

    Parameters
    ----------
    a : ndarray, shape (m, k)
        Any strides.
    b : ndarray, shape (k, n)
        Any strides; column slices of ``W`` or ``W.T`` take the block kernels.
    c : ndarray, shape (m, n)
        Output, any strides (a column slice of a larger result), same float type; must not
        overlap ``a`` or ``b``.
    blas : bool, optional
        Take BLAS even where the block kernels could run (for the parts of a product that
        :func:`matmul_into` would give to BLAS whole).

    Notes
    -----
    Large parts take the block kernels too: BLAS would block and thread the part for a
    whole product. Where the block kernels cannot run (:func:`fits_block_kernels`) or
    ``blas`` is set, ``b`` and the result go through contiguous copies to ``np.dot``, which
    takes only contiguous operands.
    """
    if not blas and fits_block_kernels(a, b, c):
        _block_product(a, b, c)
        return
    out = np.empty(c.shape, c.dtype)
    np.dot(np.ascontiguousarray(a), np.ascontiguousarray(b), out)
    c[:, :] = out


@njit(cache=True, inline="always")
def _block_product(a, b, c):
    m, k = a.shape
    n = b.shape[1]
    item = a.itemsize
    a_rs, a_ks = a.strides[0] // item, a.strides[1] // item
    b_rs, b_cs = b.strides[0] // item, b.strides[1] // item
    c_rs = c.strides[0] // item
    a_len = (m - 1) * abs(a_rs) + (k - 1) * abs(a_ks) + 1
    b_len = (k - 1) * b_rs + max(n - 1, 0) * b_cs + 1
    c_len = (m - 1) * c_rs + n
    if copies_rows_of_a(m, k, n, a_rs, a_ks, panel_width(item)):
        rows = np.empty(m * k, a.dtype)
        _call_gemm(a, a_len, a_rs, a_ks, b, b_len, b_rs, b_cs, c, c_len, c_rs, m, k, n,
                   rows, m * k)
    else:
        _call_gemm(a, a_len, a_rs, a_ks, b, b_len, b_rs, b_cs, c, c_len, c_rs, m, k, n, c, 0)


@njit(cache=True)
def copies_rows_of_a(m, k, n, a_rs, a_ks, nr):
    """True when the block kernels first copy ``a`` (``m x k``, strides ``a_rs, a_ks`` in
    elements) into contiguous rows: ``a`` is a transposed view (``A^T`` of a C-contiguous
    ``A``, as in a weight gradient) whose strided reads, repeated for every panel of ``b``,
    cost more than one copy (``m >= MIN_ROWS_TO_PACK``, ``n`` at least two panels of ``nr``
    columns, ``m k n >= MIN_VOLUME_TO_COPY_A``)."""
    return (a_rs == 1 and a_ks != 1 and m >= MIN_ROWS_TO_PACK and n >= 2 * nr
            and m * k * n >= MIN_VOLUME_TO_COPY_A)


def _gemm_entry(a_ptr, a_len, a_rs, a_ks, b_ptr, b_len, b_rs, b_cs, c_ptr, c_len, c_rs, m, k, n,
                rows_ptr, rows_len):
    """C entry point of the block-kernel product (compiled once per float type, below):
    ``c = a @ b`` for flat buffers of ``a_len``, ``b_len``, ``c_len`` elements and strides in
    elements (``b_rs == 1`` or ``b_cs == 1``; ``c``'s rows contiguous). ``rows_len`` is 0, or
    ``m * k`` for a buffer that first receives ``a`` as contiguous rows (``a_rs`` must be 1)."""
    a = carray(a_ptr, (a_len,))
    if rows_len > 0:
        rows = carray(rows_ptr, (rows_len,))
        _copy_rows(a, a_ks, m, k, rows)
        _gemm_core(rows, k, 1, carray(b_ptr, (b_len,)), b_rs, b_cs, carray(c_ptr, (c_len,)),
                   c_rs, m, k, n)
        return
    _gemm_core(a, a_rs, a_ks, carray(b_ptr, (b_len,)), b_rs, b_cs, carray(c_ptr, (c_len,)),
               c_rs, m, k, n)


@njit(cache=True, error_model="numpy")
def _copy_rows(a, a_ks, m, k, rows):
    """``rows[i * k + kk] = a[i + kk * a_ks]``: the ``m x k`` matrix ``a`` stored by columns
    (column stride ``a_ks``) copied into contiguous rows, by transposed square tiles."""
    lanes = VECTOR_BYTES // a.itemsize
    m_tiles = m - m % lanes
    k_tiles = k - k % lanes
    for kk in range(0, k_tiles, lanes):
        for i in range(0, m_tiles, lanes):
            _transpose_tile(a, kk * a_ks + i, a_ks, rows, i * k + kk, k)
        for i in range(m_tiles, m):
            for r in range(lanes):
                rows[i * k + kk + r] = a[i + (kk + r) * a_ks]
    for kk in range(k_tiles, k):
        for i in range(m):
            rows[i * k + kk] = a[i + kk * a_ks]


@njit(cache=True, error_model="numpy")
def _gemm_core(a, a_rs, a_ks, b, b_rs, b_cs, c, c_rs, m, k, n):
    nr = panel_width(a.itemsize)
    in_place = b_cs == 1 and (b_rs == nr or m < MIN_ROWS_TO_PACK or k > MAX_PACKED_K)
    whole = not in_place and k * n * a.itemsize <= MAX_PACKED_BYTES
    buf = _stack_buffer(a, 1 if in_place else (n * k if whole else k * nr))
    if whole:
        _pack_all_panels(b, b_rs, b_cs, k, n, nr, buf)
    for j in range(0, n, nr):
        # one call site: the block kernels are compiled once
        if in_place:
            panel, panel_rs = b[j:], b_rs
        elif whole:
            panel, panel_rs = buf[j * k:], nr
        else:
            _pack_panel(b, b_rs, b_cs, j, k, nr, buf)
            panel, panel_rs = buf, nr
        _column_panel(a, a_rs, a_ks, panel, panel_rs, c, j, c_rs, m, k)


@njit(cache=True, inline="always")
def _pack_panel(b, b_rs, b_cs, j, k, nr, panel):
    """``panel[kk * nr + jj] = b[kk, j + jj]`` (flat ``b`` with strides ``b_rs, b_cs``) with
    vector copies (``b_cs == 1``) or transposed tiles (``b_rs == 1``)."""
    if b_cs == 1:
        for kk in range(k):
            _copy_vectors(b, kk * b_rs + j, panel, kk * nr, N_VECTORS)
        return
    lanes = nr // N_VECTORS
    whole = k - k % lanes
    for kk in range(0, whole, lanes):
        for v in range(N_VECTORS):
            _transpose_tile(b, (j + v * lanes) * b_cs + kk, b_cs, panel, kk * nr + v * lanes,
                            nr)
    for kk in range(whole, k):
        for jj in range(nr):
            panel[kk * nr + jj] = b[kk + (j + jj) * b_cs]


@njit(cache=True, inline="always")
def _pack_all_panels(b, b_rs, b_cs, k, n, nr, panels):
    """Every panel of ``b`` (as :func:`_pack_panel`; panel ``p`` from ``panels[p * k * nr]``);
    rows of ``b`` are read each in one sweep."""
    if b_cs == 1:
        for kk in range(k):
            for j in range(0, n, nr):
                _copy_vectors(b, kk * b_rs + j, panels, j * k + kk * nr, N_VECTORS)
        return
    for j in range(0, n, nr):
        _pack_panel(b, b_rs, b_cs, j, k, nr, panels[j * k:])


def _compile_gemm_entries():
    """Compile (or load from the cache) :func:`_gemm_entry` for float32 and float64 and
    register the entry points under the names :func:`_call_gemm` calls."""
    intp = types.intp
    for dtype, symbol in _GEMM_SYMBOLS.items():
        ptr = types.CPointer(dtype)
        signature = types.void(ptr, intp, intp, intp, ptr, intp, intp, intp, ptr, intp, intp,
                               intp, intp, intp, ptr, intp)
        entry = cfunc(signature, cache=True, error_model="numpy")(_gemm_entry)
        _GEMM_ENTRIES.append(entry)  # keeps the compiled code alive
        llvm_binding.add_symbol(symbol, entry.address)


_GEMM_ENTRIES = []
_compile_gemm_entries()
