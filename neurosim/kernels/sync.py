"""A barrier for the threads that run one compiled kernel together.

Training and the propagation profile run on Python threads that each call the same GIL-free
kernel with their own thread index; the threads meet at :func:`barrier` on a small int64 array
(layout below) that the caller zeroes first. Any thread (or the Python code that runs the team,
when a thread raised) sets ``sync[SYNC_ABORT]`` to make every waiting thread return.
"""

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# Layout of the int64 synchronisation array.
SYNC_ARRIVED = 0
SYNC_GENERATION = 1
SYNC_ABORT = 2
SYNC_SIZE = 3


def _is_int64_vector(arr):
    return isinstance(arr, types.Array) and arr.dtype == types.int64 and arr.ndim == 1


def _element_pointer(context, builder, signature, args):
    """Pointer to ``args[0][args[1]]`` (an int64 vector and an index)."""
    aryty = signature.args[0]
    ary = context.make_array(aryty)(context, builder, args[0])
    return cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]])


@intrinsic
def _atomic_add(typingctx, arr, index, value):
    if not _is_int64_vector(arr):
        return None

    def codegen(context, builder, signature, args):
        ptr = _element_pointer(context, builder, signature, args)
        return builder.atomic_rmw("add", ptr, args[2], "seq_cst")

    return types.int64(arr, types.intp, types.int64), codegen


@intrinsic
def _atomic_load(typingctx, arr, index):
    if not _is_int64_vector(arr):
        return None

    def codegen(context, builder, signature, args):
        return builder.load_atomic(_element_pointer(context, builder, signature, args),
                                   "seq_cst", 8)

    return types.int64(arr, types.intp), codegen


@intrinsic
def _yield_cpu(typingctx):
    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module,
                                            ir.FunctionType(ir.IntType(32), []),
                                            "sched_yield")
        builder.call(fn, [])
        return context.get_dummy_value()

    return types.none(), codegen


_SPINS_BEFORE_YIELD = 1 << 14


@njit(cache=True, nogil=True)
def barrier(sync, n_threads):
    """Wait until ``n_threads`` threads have arrived; False when another thread aborted.

    A sense-reversing barrier on ``sync`` (``SYNC_ARRIVED`` counts arrivals, the last one
    bumps ``SYNC_GENERATION``). Waiters spin briefly, then yield the CPU between checks.
    """
    if n_threads == 1:
        return True
    generation = _atomic_load(sync, SYNC_GENERATION)
    if _atomic_add(sync, SYNC_ARRIVED, 1) == n_threads - 1:
        _atomic_add(sync, SYNC_ARRIVED, -n_threads)
        _atomic_add(sync, SYNC_GENERATION, 1)
        return _atomic_load(sync, SYNC_ABORT) == 0
    spins = 0
    while _atomic_load(sync, SYNC_GENERATION) == generation:
        if _atomic_load(sync, SYNC_ABORT) != 0:
            return False
        spins += 1
        if spins > _SPINS_BEFORE_YIELD:
            _yield_cpu()
    return _atomic_load(sync, SYNC_ABORT) == 0
