"""Shared test fixture: one BLAS thread for the module's tests.

Tiny matrix products crawl when BLAS threads are oversubscribed on a busy 2-core machine.
Import ``one_blas_thread`` into a test module to apply it there (it is autouse).
"""

import pytest

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """Limit BLAS pools to one thread for the whole module (no-op without threadpoolctl)."""
    if threadpool_limits is None:
        yield
        return
    with threadpool_limits(1):
        yield
