"""Matrix products for the small operands of the MLP engine, without BLAS call overhead.

An OpenBLAS ``sgemm`` call on a 32 x 64 x 64 product spends more time in its interface (argument
checks, buffer management) than in arithmetic: it reaches about 40 % of the machine's GEMM rate,
and still only 60-75 % at 64 x 128 x 128. :func:`matmul_into` computes such products with a
register-blocked kernel instead: each call of a block kernel keeps an ``MR x NR`` block of the
result in ``2 MR`` SIMD registers (``NR`` = two AVX vectors: 16 float32 or 8 float64 values) and
adds one rank-1 update per step along the shared dimension (a broadcast element of ``a`` times two
vector loads of a row of ``b``, two fused multiply-adds per row). Every element of the result is
the plain sequential sum over ``k`` with one rounding per fused multiply-add, so the numbers
depend neither on threads nor on the library.

Large products, widths that are not a multiple of ``NR`` and machines without AVX2 and FMA go to
BLAS (``np.dot``) unchanged; :func:`uses_block_kernels` says which path a product takes. The size
limit is lower while the BLAS numba calls may use several threads (its thread count is read at
run time): a product that threaded BLAS would split across cores stays with BLAS. The engine's
training loop runs BLAS on one thread, so training always takes the block kernels.
"""

import ctypes
import os

import numpy as np
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import config, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

VECTOR_BYTES = 32  # one AVX register
N_VECTORS = 2  # vectors per row of a result block: NR = 2 * 32 / itemsize columns
MAX_ROWS = 6  # rows of a result block: 2 * 6 accumulators + 2 loads + 1 broadcast registers
# Largest m * k * n computed here; above it BLAS's packing and cache blocking win.
MAX_FLOAT32_VOLUME = 64 * 256 * 256
MAX_FLOAT64_VOLUME = 64 * 128 * 128
# Longest shared dimension of a product whose ``b`` is copied to a stack panel (k x NR values:
# at most 128 KiB of the calling thread's stack).
MAX_PACKED_K = 2048
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


ENABLED = _host_has_fma_vectors()

_THREADS_SYMBOL = "neurosim_blas_get_num_threads"
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
            item = context.get_abi_sizeof(scalar)
            lanes = VECTOR_BYTES // item
            vec = ir.VectorType(scalar, lanes)
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


@intrinsic
def _stack_panel(typingctx, like, rows, cols):
    """A C-contiguous ``(rows, cols)`` array of ``like``'s float type on the caller's stack
    (valid until the calling function returns; nothing is allocated on the heap)."""
    if not isinstance(like, types.Array):
        return None
    array_type = types.Array(like.dtype, 2, "C")

    def codegen(context, builder, signature, args):
        _, rows, cols = args
        element = context.get_value_type(like.dtype)
        item = context.get_constant(types.intp, context.get_abi_sizeof(element))
        data = builder.alloca(element, size=builder.mul(rows, cols))
        array = context.make_array(array_type)(context, builder)
        context.populate_array(array, data=data,
                               shape=cgutils.pack_array(builder, [rows, cols]),
                               strides=cgutils.pack_array(builder, [builder.mul(cols, item),
                                                                    item]),
                               itemsize=item, meminfo=None)
        return array._getvalue()

    return array_type(like, types.intp, types.intp), codegen


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
    m, k = a.shape
    n = b.shape[1]
    if not ENABLED or m == 0 or k == 0 or n % panel_width(a.itemsize) != 0:
        return False
    limit = MAX_FLOAT32_VOLUME if a.itemsize == 4 else MAX_FLOAT64_VOLUME
    if m * k * n > MAX_VOLUME_THREADED_BLAS and _blas_threads() != 1:
        return False
    if m * k * n > limit:
        return False
    item = a.itemsize
    b_rows = b.strides[1] == item
    b_cols = b.strides[0] == item and k <= MAX_PACKED_K
    return (b_rows or b_cols) and c.strides[1] == item


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
    Small products (:func:`uses_block_kernels`) run in the register-blocked kernels; when ``b``
    has contiguous columns (``W.T``), ``NR`` of them at a time are first copied into a
    ``(k, NR)`` panel with contiguous rows on the stack (no heap allocation). Everything else
    calls ``np.dot``.
    """
    if not uses_block_kernels(a, b, c):
        np.dot(a, b, c)
        return
    m, k = a.shape
    n = b.shape[1]
    item = a.itemsize
    a_rs = a.strides[0] // item
    a_ks = a.strides[1] // item
    c_rs = c.strides[0] // item
    nr = panel_width(item)
    if b.strides[1] == item:
        b_rs = b.strides[0] // item
        for j in range(0, n, nr):
            _column_panel(a, a_rs, a_ks, b[:, j:], b_rs, c, j, c_rs, m, k)
    else:
        bt = b.T  # (n, k), rows contiguous
        panel = _stack_panel(a, k, nr)
        for j in range(0, n, nr):
            for jj in range(nr):
                for kk in range(k):
                    panel[kk, jj] = bt[j + jj, kk]
            _column_panel(a, a_rs, a_ks, panel, nr, c, j, c_rs, m, k)
