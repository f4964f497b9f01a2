"""Keep a streaming process's RSS flat: large message buffers must go back to the OS once freed.

glibc raises its mmap threshold each time a large mmapped block is freed (up to 32 MiB), after which
FLARE's 1 MiB frames and our slices come from the heap arenas; with FLARE's hundreds of messaging threads
those arenas fragment and RSS creeps up with every message. Pinning the threshold (``mallopt``) keeps
every buffer of ``threshold`` bytes or more in its own mapping, returned to the OS on free. No-op off glibc.
"""

import ctypes
import ctypes.util
import gc
import threading
import time

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
_done = False


def pin_mmap_threshold(threshold: int = 1 << 20) -> bool:
    """Idempotent; returns whether glibc accepted it."""
    global _done
    if _done:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = bool(libc.mallopt(M_MMAP_THRESHOLD, threshold)) and bool(libc.mallopt(M_TRIM_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False
    _done = ok
    return ok


class GcThrottle:
    """``gc.collect()`` at most every ``period`` seconds.

    FLARE's messaging leaves reference cycles that hold message buffers until a full collection, which
    under steady streaming comes rarely: RSS then saw-tooths by hundreds of MB. Collecting about once a
    second keeps it flat for a few ms of CPU.
    """

    def __init__(self, period: float = 1.0):
        self.period = period
        self._last = 0.0
        self._lock = threading.Lock()

    def __call__(self):
        now = time.monotonic()
        with self._lock:
            if now - self._last < self.period:
                return
            self._last = now
        gc.collect()
