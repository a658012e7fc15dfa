"""Handing freed memory back to the system, where the C library keeps it.

glibc's malloc keeps freed small and mid-sized blocks in its heap for reuse, and neither pandas,
numpy nor Arrow asks it to give them back (Arrow's ``release_unused`` on its system pool did not,
here). After a step that frees a lot (a table's text columns made categories, a fold's
preprocessing and its row blocks' temporaries) the process then stays at that step's peak, and the
next step's peak lands on top of it: a 1M-row fold's preprocessing left 130 MB that a trim hands
back. Called between such steps, not inside loops (a trim walks the heap: milliseconds).
"""
from __future__ import annotations

import ctypes
import sys


def release_memory() -> None:
    """Return what was freed to the system: Arrow's default pool's unused memory, then glibc's
    malloc_trim. Elsewhere (macOS, musl) there is nothing to call, and it does nothing."""
    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).malloc_trim(0)
        except (OSError, AttributeError):  # a C library without malloc_trim (musl)
            pass
