"""Invalidate every cached kernel when any kernel source changes.

numba's on-disk cache stamps each function with its own source file only, but a compiled
kernel carries the code of the kernels it calls from other files: after an edit of
``dense.py``, ``mlp_train.train_epoch`` was loaded from the cache with the old ``dense`` code
inside. :class:`KernelSourcesLocator` keeps numba's in-tree cache (``__pycache__`` beside the
source) for the files of this package but stamps every entry with a fingerprint of all of
them (paths, modification times and sizes), so any edit recompiles every kernel once.
Installed releases are not affected (an install rewrites every file); a source checkout or an
editable install is. With ``NUMBA_CACHE_DIR`` set, numba's own locator takes precedence.
"""

import hashlib
import os

from numba.core import caching

KERNELS_DIR = os.path.dirname(os.path.abspath(__file__))


def sources_fingerprint(directory: str) -> str:
    """Hex digest of the relative path, modification time (ns) and size of every ``.py`` file
    under ``directory``."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(root, name)
                st = os.stat(path)
                rel = os.path.relpath(path, directory)
                digest.update(f"{rel}:{st.st_mtime_ns}:{st.st_size};".encode())
    return digest.hexdigest()


FINGERPRINT = sources_fingerprint(KERNELS_DIR)


class KernelSourcesLocator(caching.InTreeCacheLocator):
    """numba's in-tree cache locator for this package's files, stamped with
    :data:`FINGERPRINT` instead of the function's own file."""

    @classmethod
    def from_function(cls, py_func, py_file):
        if not os.path.abspath(py_file).startswith(KERNELS_DIR + os.sep):
            return None
        return super().from_function(py_func, py_file)

    def get_source_stamp(self):
        return FINGERPRINT


def register() -> bool:
    """Put :class:`KernelSourcesLocator` before numba's in-tree locator (after a user-provided
    cache directory); False where this numba has no such list (its own locators then apply)."""
    locators = getattr(caching.CacheImpl, "_locator_classes", None)
    if not isinstance(locators, list) or caching.InTreeCacheLocator not in locators:
        return False
    if KernelSourcesLocator not in locators:
        locators.insert(locators.index(caching.InTreeCacheLocator), KernelSourcesLocator)
    return True


REGISTERED = register()
