"""Notice a changed policy file without a SIGHUP (a Kubernetes ConfigMap edit).

The kubelet updates a mounted ConfigMap by writing a new timestamped
directory and swapping the ``..data`` symlink to it; ``policy.yaml`` is a
symlink through ``..data``. No file is ever modified in place, so an
inotify watch on the file (or its directory) misses the change unless it
follows the symlinks by hand. Polling the resolved path is simpler and
catches every form of update: an edit in place (mtime, size), a file
replaced by rename (inode), a symlink swap (the resolved path and inode).
A stat every few seconds costs nothing next to the daemon's cgroup scans.
"""

from __future__ import annotations

import os

DEFAULT_POLL_S = 3.0


def _signature(path: str) -> tuple | None:
    """What changes when the policy's content can have changed; None while
    the file is missing (mid-swap): that is no change yet."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return None
    return real, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


class PolicyWatch:
    def __init__(self, path: str | None, interval_s: float = DEFAULT_POLL_S):
        self.path = path
        self.interval_s = interval_s
        self._last_check = 0.0
        self._seen = _signature(path) if path else None

    def changed(self, now: float) -> bool:
        """True once for each change of the file (checked at most every interval_s)."""
        if not self.path or self.interval_s <= 0 or now - self._last_check < self.interval_s:
            return False
        self._last_check = now
        sig = _signature(self.path)
        if sig is None or sig == self._seen:
            return False
        self._seen = sig
        return True
